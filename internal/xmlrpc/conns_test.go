package xmlrpc

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// connsServer serves h and counts the connections it accepted.
func connsServer(t *testing.T, h http.Handler) (*Client, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	hs := httptest.NewUnstartedServer(h)
	hs.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			n.Add(1)
		}
	}
	hs.Start()
	t.Cleanup(hs.Close)
	c := NewClient(hs.URL+"/", nil)
	c.Conns = NewConns(strings.TrimPrefix(hs.URL, "http://"), ConnsOptions{})
	return c, &n
}

func pingServer() *Server {
	s := NewServer()
	s.Register("ping", "", func(context.Context, []any) (any, error) { return "pong", nil })
	s.Register("sleep", "", func(ctx context.Context, _ []any) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	return s
}

func TestConnsChunkedAndClose(t *testing.T) {
	s := pingServer()
	var closeIt atomic.Bool
	c, conns := connsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if closeIt.Load() {
			w.Header().Set("Connection", "close")
			s.ServeHTTP(w, r)
			return
		}
		// Two flushed writes and no length: a chunked answer.
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		w.Header().Set("Content-Type", "text/xml")
		_, _ = w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		_, _ = w.Write(b[len(b)/2:])
	}))
	ctx := context.Background()
	for range 5 {
		var got any
		if err := c.Call(ctx, "ping", nil, &got); err != nil || got != "pong" {
			t.Fatalf("chunked: %v, %v", got, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 chunked calls, want 1", n)
	}
	closeIt.Store(true)
	for range 3 {
		if err := c.Call(ctx, "ping", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The first of the three closes the kept connection; the next two dial.
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3: an answer with Connection: close is not reused", n)
	}
}

func TestConnsCancelDropsConnection(t *testing.T) {
	c, conns := connsServer(t, pingServer())
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(30 * time.Millisecond)
		cancel()
	}()
	err := c.Call(ctx, "sleep", nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want Canceled", err)
	}
	if err := c.Call(context.Background(), "ping", nil, nil); err != nil {
		t.Fatalf("call after a cancelled one: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: an interrupted connection is never reused", n)
	}
}

// A server that closes a kept-alive connection without saying so: the next
// call, after a pause, must not be sent on it.
func TestConnsServerClosedIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := pingServer()
	var accepted atomic.Int32
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer nc.Close()
				req, err := http.ReadRequest(bufio.NewReader(nc))
				if err != nil {
					return
				}
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				resp := rec.Result()
				resp.ContentLength = int64(rec.Body.Len())
				_ = resp.Write(nc) // keep-alive by default, then close
			}()
		}
	}()
	c := NewClient("http://"+ln.Addr().String()+"/", nil)
	c.Conns = NewConns(ln.Addr().String(), ConnsOptions{})
	ctx := context.Background()
	for i := range 3 {
		if err := c.Call(ctx, "ping", nil, nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		time.Sleep(liveCheckAfter + 50*time.Millisecond)
	}
	if n := accepted.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestPeerOpen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if !peerOpen(c) {
		t.Error("peerOpen false on an open connection")
	}
	sc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for peerOpen(c) {
		if time.Now().After(deadline) {
			t.Fatal("peerOpen still true 5s after the server closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConnsCloseIdle(t *testing.T) {
	c, conns := connsServer(t, pingServer())
	ctx := context.Background()
	if err := c.Call(ctx, "ping", nil, nil); err != nil {
		t.Fatal(err)
	}
	c.Conns.CloseIdleConnections()
	if err := c.Call(ctx, "ping", nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: CloseIdleConnections drops the idle one", n)
	}
}

func TestConnsBadAnswers(t *testing.T) {
	for _, tt := range []struct {
		name, answer, want string
	}{
		{"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"},
		{"not http", "SSH-2.0-x\r\n\r\n", "malformed HTTP status line"},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "bad Content-Length"},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n<?xml", "connection closed after 5 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				defer nc.Close()
				if _, err := http.ReadRequest(bufio.NewReader(nc)); err == nil {
					_, _ = nc.Write([]byte(tt.answer))
				}
			}()
			c := NewClient("http://"+ln.Addr().String()+"/", nil)
			c.Conns = NewConns(ln.Addr().String(), ConnsOptions{})
			err = c.Call(context.Background(), "ping", nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// Close interrupts a call in flight and refuses later ones.
func TestConnsCloseInterrupts(t *testing.T) {
	c, _ := connsServer(t, pingServer())
	errc := make(chan error, 1)
	go func() { errc <- c.Call(context.Background(), "sleep", nil, nil) }()
	time.Sleep(50 * time.Millisecond) // let the call reach the server
	start := time.Now()
	c.Conns.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("interrupted call succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not interrupt the call in flight")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("interruption took %v", d)
	}
	if err := c.Call(context.Background(), "ping", nil, nil); !errors.Is(err, ErrConnsClosed) {
		t.Errorf("call after Close: %v, want ErrConnsClosed", err)
	}
}

// A server that refuses a body over its limit answers before it has read
// the request and closes: the call gets that answer (a fault), not a
// transport error, even though the write of the body fails.
func TestConnsEarlyAnswer(t *testing.T) {
	s := pingServer()
	s.MaxBodyBytes = 1024
	c, _ := connsServer(t, s)
	big := strings.Repeat("x", 16<<20)
	err := c.Call(context.Background(), "ping", []any{big}, nil)
	var f *Fault
	if !errors.As(err, &f) || f.Code != spillway.FaultPayloadTooLarge {
		t.Fatalf("err %v, want the payload-too-large fault", err)
	}
	if err := c.Call(context.Background(), "ping", nil, nil); err != nil {
		t.Fatalf("call after the refusal: %v", err)
	}
}
