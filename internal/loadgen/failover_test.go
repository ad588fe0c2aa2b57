package loadgen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

func TestTargets(t *testing.T) {
	tests := []struct {
		flag     string
		fallback string // the client's configuration: LB_URL, else lb's port on loopback
		want     string
		err      bool
	}{
		{"", "http://127.0.0.1:8000/,http://127.0.0.1:8001", "http://127.0.0.1:8000/ http://127.0.0.1:8001/", false},
		{"http://a:1, http://b:2/ ,", "", "http://a:1/ http://b:2/", false},
		{"http://a:1", "http://x:9,http://y:9", "http://a:1/", false},
		{"", "http://127.0.0.1:8100/", "http://127.0.0.1:8100/", false},
		{"http://a:1,ftp://b", "", "", true},
		{",", "", "", true},
	}
	for _, tt := range tests {
		got, err := Targets(tt.flag, tt.fallback)
		if (err != nil) != tt.err || strings.Join(got, " ") != tt.want {
			t.Errorf("Targets(%q, %q) = %q, %v; want %q, error %v", tt.flag, tt.fallback, got, err, tt.want, tt.err)
		}
	}
}

// refusedURL is a loopback port nothing listens on.
func refusedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/"
}

// countingLB is an XML-RPC server that counts the calls it received.
func countingLB(t *testing.T, name string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := xmlrpc.NewServer()
	s.Register("call_faas", "", func(ctx context.Context, params []any) (any, error) {
		n.Add(1)
		return name, nil
	})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, &n
}

// dyingLB reads each request and then drops the connection without an
// answer: an lb that received the call and died.
func dyingLB(t *testing.T) (string, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		hj, ok := w.(http.Hijacker)
		if !ok {
			t.Error("no hijacker")
			return
		}
		c, _, err := hj.Hijack()
		if err == nil {
			c.Close()
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/", &n
}

func callThrough(rt http.RoundTripper, first string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var v any
	err := xmlrpc.NewClient(first, &http.Client{Transport: rt}).Call(ctx, "call_faas", []any{"1"}, &v)
	return v, err
}

func TestFailoverMovesOnlyPastRefusedConnections(t *testing.T) {
	b, bCalls := countingLB(t, "b")
	c, cCalls := countingLB(t, "c")
	f, err := NewFailover([]string{refusedURL(t), b.URL + "/", c.URL + "/"}, xmlrpc.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if v, err := callThrough(f, f.targets[0].String()); err != nil || v != "b" {
			t.Fatalf("call = %v, %v; want b's answer", v, err)
		}
	}
	if bCalls.Load() != 3 || cCalls.Load() != 0 || f.Moves() != 1 {
		t.Errorf("b %d calls, c %d, moves %d; want 3, 0, 1", bCalls.Load(), cCalls.Load(), f.Moves())
	}
	// b goes away: calls move to c and stay there. The client's idle
	// connection to b may be taken for one more call before the client
	// sees b closed it; that call fails (b might have received it) and is
	// not resent.
	b.Close()
	fails := 0
	for range 3 {
		before := cCalls.Load()
		v, err := callThrough(f, f.targets[0].String())
		if err != nil {
			fails++
			if cCalls.Load() != before {
				t.Fatalf("a failed call reached c: %v", err)
			}
			continue
		}
		if v != "c" {
			t.Fatalf("call after b closed = %v; want c's answer", v)
		}
	}
	if fails > 1 {
		t.Errorf("%d calls failed after b closed, want at most the one on its stale connection", fails)
	}
	// Every replica refusing is an error that says so.
	// (A call on a stale idle connection to c may fail first, as above.)
	c.Close()
	var last error
	for range 2 {
		_, last = callThrough(f, f.targets[0].String())
	}
	if last == nil || !strings.Contains(last.Error(), "every lb replica refused") {
		t.Errorf("call with all replicas down = %v", last)
	}
}

// naiveFailover moves on after any error: the protection off.
type naiveFailover struct{ f *Failover }

func (n naiveFailover) RoundTrip(req *http.Request) (*http.Response, error) {
	var last error
	for i, u := range n.f.targets {
		r, err := n.f.retarget(req, u, i > 0)
		if err != nil {
			return nil, err
		}
		resp, err := n.f.next.RoundTrip(r)
		if err == nil {
			return resp, nil
		}
		last = err
	}
	return nil, last
}

func TestFailoverNeverResendsAReceivedCall(t *testing.T) {
	dying, dyingCalls := dyingLB(t)
	next, nextCalls := countingLB(t, "next")
	f, err := NewFailover([]string{dying, next.URL + "/"}, xmlrpc.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	_, err = callThrough(f, dying)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call to an lb that died with it = %v, want the transport error", err)
	}
	if dyingCalls.Load() != 1 || nextCalls.Load() != 0 {
		t.Fatalf("dying lb got %d, next got %d; want 1 and 0 (never sent twice)", dyingCalls.Load(), nextCalls.Load())
	}

	// The same with the protection off: the call runs twice.
	f2, err := NewFailover([]string{dying, next.URL + "/"}, xmlrpc.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := callThrough(naiveFailover{f2}, dying); err != nil || v != "next" {
		t.Fatalf("naive failover call = %v, %v", v, err)
	}
	if dyingCalls.Load() != 2 || nextCalls.Load() != 1 {
		t.Fatalf("naive failover: dying lb got %d, next got %d; want 2 and 1 (the call sent twice)", dyingCalls.Load(), nextCalls.Load())
	}
}

// resettingLB accepts connections and resets them without reading a byte:
// a killed lb's connection still in its listen queue.
func resettingLB(t *testing.T) (string, *atomic.Int64) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			// Let the request arrive, unread, then reset.
			time.Sleep(50 * time.Millisecond)
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return "http://" + l.Addr().String() + "/", &accepted
}

func TestFailoverMovesPastAResetBeforeAnyAnswer(t *testing.T) {
	reset, accepted := resettingLB(t)
	next, nextCalls := countingLB(t, "next")
	f, err := NewFailover([]string{reset, next.URL + "/"}, xmlrpc.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := callThrough(f, reset); err != nil || v != "next" {
		t.Fatalf("call = %v, %v; want next's answer", v, err)
	}
	if accepted.Load() != 1 || nextCalls.Load() != 1 || f.Moves() != 1 {
		t.Errorf("reset lb accepted %d, next ran %d, moves %d; want 1, 1, 1", accepted.Load(), nextCalls.Load(), f.Moves())
	}
}
