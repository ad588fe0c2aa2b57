package leanhttp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// start serves h on a loopback port and returns the server and its address.
func start(t *testing.T, h http.Handler, tune func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second, MaxHeaderBytes: 8 << 10,
		ErrorLog: log.New(io.Discard, "", 0)}
	if tune != nil {
		tune(s)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// which answers with how the request came: the path the server took is
// told by the writer's type.
func which(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	path := "net/http"
	if _, ok := w.(*responseWriter); ok {
		path = "lean"
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s %s %s body=%q", path, r.Method, r.URL.Path, r.Header.Get("X-Tag"), body)
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readAnswer(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	for err == nil && resp.StatusCode == http.StatusContinue {
		resp, err = http.ReadResponse(br, nil)
	}
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer body: %v", err)
	}
	return resp, string(b)
}

func post(path, body string, extra ...string) string {
	h := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
}

// Every request reaches the same handler with the same meaning; only
// plain POSTs take the short path, everything else net/http serves.
func TestRequestsTakeTheRightPath(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(which), nil)
	cases := []struct {
		name    string
		request string
		status  int
		want    string
	}{
		{"a POST", post("/RPC2", "<x/>", "X-Tag: a"), 200, `lean POST /RPC2 a body="<x/>"`},
		{"a POST with a query", post("/RPC2?x=1", "b"), 200, `lean POST /RPC2  body="b"`},
		{"an empty POST", post("/", ""), 200, `lean POST /  body=""`},
		{"a GET", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Tag: g\r\n\r\n", 200, `net/http GET /healthz g body=""`},
		{"a chunked POST", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, `net/http POST /  body="abc"`},
		{"Expect: 100-continue", post("/", "e", "Expect: 100-continue"), 200, `net/http POST /  body="e"`},
		{"HTTP/1.0", "POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\nz", 200, `net/http POST /  body="z"`},
		{"no Host", "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nz", 400, ""},
		{"two Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nzz", 400, ""},
		{"a folded header", "POST / HTTP/1.1\r\nHost: x\r\nX-Tag: a\r\n b\r\nContent-Length: 1\r\n\r\nz", 200, `net/http POST / a b body="z"`},
		{"a bare LF", "POST / HTTP/1.1\nHost: x\nContent-Length: 1\n\nz", 200, `net/http POST /  body="z"`},
		{"a control byte in a value", "POST / HTTP/1.1\r\nHost: x\r\nX-Tag: a\x01b\r\nContent-Length: 1\r\n\r\nz", 400, ""},
		{"a head over MaxHeaderBytes", "POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\nContent-Length: 1\r\n\r\nz", 431, ""},
		{"garbage", "HELLO\r\n\r\n", 400, ""},
		{"a bad escape in the target", post("/%zz", ""), 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr)
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			resp, body := readAnswer(t, br)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if tc.want != "" && body != tc.want {
				t.Fatalf("answer %q, want %q", body, tc.want)
			}
		})
	}
}

// A keep-alive connection carries calls one after another, and pipelined
// ones in order; a body larger than one read arrives whole; an unread body
// is skipped.
func TestKeepAliveAndBodies(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ignore" {
			fmt.Fprint(w, "ignored")
			return
		}
		which(w, r)
	}), nil)
	c, br := dial(t, addr)
	big := strings.Repeat("0123456789", 30<<10) // 300 KB: many reads
	steps := []struct {
		write string
		want  []string
	}{
		{post("/a", "1"), []string{`lean POST /a  body="1"`}},
		{post("/b", big), []string{fmt.Sprintf("lean POST /b  body=%q", big)}},
		{post("/ignore", strings.Repeat("x", 100<<10)), []string{"ignored"}},
		{post("/c", "2") + post("/d", "3") + "GET /e HTTP/1.1\r\nHost: x\r\n\r\n", []string{
			`lean POST /c  body="2"`, `lean POST /d  body="3"`, `net/http GET /e  body=""`}},
	}
	for i, st := range steps {
		if _, err := io.WriteString(c, st.write); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for _, want := range st.want {
			resp, body := readAnswer(t, br)
			if resp.StatusCode != 200 || body != want {
				t.Fatalf("step %d: %d %.80q, want %.80q", i, resp.StatusCode, body, want)
			}
			if resp.Close {
				t.Fatalf("step %d: the server closes a keep-alive connection", i)
			}
		}
	}
}

// The answer is well-formed HTTP: a status line, the handler's headers with
// no line breaks smuggled in, a Content-Length, a Date, and
// "Connection: close" (then EOF) when the handler or the client asks.
func TestAnswers(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/inject":
			w.Header().Set("X-Evil", "a\r\nSet-Cookie: x=1")
			fmt.Fprint(w, "ok")
		case "/close":
			w.Header().Set("Connection", "close")
			fmt.Fprint(w, "bye")
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
			fmt.Fprint(w, "<html>short and stout</html>")
		case "/nobody":
			w.WriteHeader(http.StatusNoContent)
		}
	}), nil)
	t.Run("header values cannot add headers", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, post("/inject", ""))
		resp, _ := readAnswer(t, br)
		if resp.Header.Get("Set-Cookie") != "" || !strings.Contains(resp.Header.Get("X-Evil"), "Set-Cookie") {
			t.Fatalf("headers %v", resp.Header)
		}
		if resp.Header.Get("Date") == "" || resp.ContentLength != 2 {
			t.Fatalf("no Date or a wrong Content-Length: %v %d", resp.Header, resp.ContentLength)
		}
	})
	t.Run("status and sniffed type", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, post("/teapot", ""))
		resp, body := readAnswer(t, br)
		if resp.StatusCode != http.StatusTeapot || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || body == "" {
			t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
		}
		io.WriteString(c, post("/nobody", ""))
		resp, body = readAnswer(t, br)
		if resp.StatusCode != http.StatusNoContent || body != "" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
	for _, tc := range []struct{ name, request string }{
		{"the handler closes", post("/close", "")},
		{"the client closes", post("/teapot", "", "Connection: close")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr)
			io.WriteString(c, tc.request)
			resp, _ := readAnswer(t, br)
			if !resp.Close {
				t.Fatal("no Connection: close")
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("the connection stays open: %v", err)
			}
		})
	}
}

// A body far larger than the handler reads: the answer still arrives
// (no reset from unread bytes), then the connection closes.
func TestLargeUnreadBodyStillGetsItsAnswer(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1024))
		fmt.Fprintf(w, "refused: %v", err != nil)
	}), nil)
	c, br := dial(t, addr)
	body := strings.Repeat("x", 8<<20)
	go io.WriteString(c, post("/", body))
	resp, got := readAnswer(t, br)
	if resp.StatusCode != 200 || got != "refused: true" || !resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, got, resp.Close)
	}
}

// A call's context ends when its client goes away; one whose client waits
// runs to its end. Without the second case the first would pass for a
// context that always ends.
func TestClientGoneEndsTheCall(t *testing.T) {
	ended := make(chan error, 4)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(400 * time.Millisecond):
			ended <- nil
			fmt.Fprint(w, "done")
		}
	}), func(s *Server) { s.DisconnectGrace = 20 * time.Millisecond })
	for _, tc := range []struct {
		name  string
		leave bool
		want  error
	}{
		{"the client leaves", true, context.Canceled},
		{"the client waits", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr)
			io.WriteString(c, post("/", ""))
			began := time.Now()
			if tc.leave {
				time.Sleep(50 * time.Millisecond)
				c.Close()
			} else {
				if _, body := readAnswer(t, br); body != "done" {
					t.Fatalf("answer %q", body)
				}
			}
			select {
			case err := <-ended:
				if !errors.Is(err, tc.want) {
					t.Fatalf("the call ended with %v, want %v", err, tc.want)
				}
				if tc.leave && time.Since(began) > 300*time.Millisecond {
					t.Fatalf("the call ended %v after its client left", time.Since(began))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the call never ended")
			}
		})
	}
}

// A client that sends a head slowly, or stays idle, is cut off at the
// timeouts; without them (the variant) the dribbling client keeps its
// connection.
func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		timeout    time.Duration
		cutBy      time.Duration // 0: never cut within the test
		dribbleFor time.Duration
	}{
		{"a slow head is cut at ReadHeaderTimeout", 200 * time.Millisecond, 2 * time.Second, 5 * time.Second},
		{"variant: no timeouts, the slow head stays", 0, 0, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := start(t, http.HandlerFunc(which), func(s *Server) {
				s.ReadHeaderTimeout, s.ReadTimeout = tc.timeout, tc.timeout
			})
			d := testutil.HeaderDribble(t, addr, tc.dribbleFor)
			if tc.cutBy > 0 && d > tc.cutBy {
				t.Fatalf("a dribbling client kept its connection %v", d)
			}
			if tc.cutBy == 0 && d < tc.dribbleFor {
				t.Fatalf("the connection was cut after %v with no timeout", d)
			}
		})
	}
	_, addr := start(t, http.HandlerFunc(which), func(s *Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = 300 * time.Millisecond
	})
	t.Run("an idle connection", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, post("/", "1"))
		readAnswer(t, br)
		began := time.Now()
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("read on an idle connection: %v", err)
		}
		if d := time.Since(began); d < 250*time.Millisecond || d > 3*time.Second {
			t.Fatalf("closed after %v idle, want about 300ms", d)
		}
	})
}

// A handler's panic closes its connection and leaves the server serving.
func TestPanicClosesOnlyItsConnection(t *testing.T) {
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		which(w, r)
	}), nil)
	c, br := dial(t, addr)
	io.WriteString(c, post("/panic", ""))
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatal("an answer after a panic")
	}
	c2, br2 := dial(t, addr)
	io.WriteString(c2, post("/after", ""))
	if _, body := readAnswer(t, br2); !strings.HasPrefix(body, "lean POST /after") {
		t.Fatalf("after a panic: %q", body)
	}
}

// Shutdown lets a running call answer, closes idle connections, and
// reports the states as net/http does.
func TestShutdownAndConnState(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var states []string
	s, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		fmt.Fprint(w, "ok")
	}), func(s *Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			mu.Lock()
			states = append(states, st.String())
			mu.Unlock()
		}
	})
	idle, ibr := dial(t, addr)
	io.WriteString(idle, post("/", ""))
	readAnswer(t, ibr)
	busy, bbr := dial(t, addr)
	io.WriteString(busy, post("/slow", ""))
	time.Sleep(100 * time.Millisecond)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Fatalf("the idle connection stays open during Shutdown: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a call running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	resp, body := readAnswer(t, bbr)
	if body != "ok" || !resp.Close {
		t.Fatalf("the running call: %q close=%v", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("a connection accepted after Shutdown")
	}
	mu.Lock()
	defer mu.Unlock()
	count := map[string]int{}
	for _, st := range states {
		count[st]++
	}
	if count["new"] != 2 || count["active"] != 2 || count["idle"] != 1 || count["closed"] != 2 {
		t.Fatalf("states %v", states)
	}
}

// A connection handed to net/http is counted there: it leaves the short
// path's count as hijacked, as lb's hand-over counter expects.
func TestHandOffIsCountedOnce(t *testing.T) {
	var mu sync.Mutex
	open := 0
	_, addr := start(t, http.HandlerFunc(which), func(s *Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			switch st {
			case http.StateNew:
				open++
			case http.StateClosed, http.StateHijacked:
				open--
			}
		}
	})
	c, br := dial(t, addr)
	io.WriteString(c, post("/", "a")+"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswer(t, br)
	readAnswer(t, br)
	mu.Lock()
	if open != 1 {
		t.Errorf("%d connections counted open, want 1", open)
	}
	mu.Unlock()
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := open
		mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections counted open after the client left", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Python's xmlrpc.client, the reference client, over keep-alive
// connections to an XML-RPC server behind the short path.
func TestPythonXMLRPCClient(t *testing.T) {
	py := testutil.Python(t)
	rpc := xmlrpc.NewServer()
	rpc.Register("echo", "", func(_ context.Context, params []any) (any, error) { return params, nil })
	var lean sync.Map
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*responseWriter); ok {
			lean.Store(r.URL.Path, true)
		}
		rpc.ServeHTTP(w, r)
	}), nil)
	script := `
import sys, xmlrpc.client
p = xmlrpc.client.ServerProxy("http://%s/RPC2")
for i in range(50):
    got = p.echo("héllo", i, [1.5, True], {"k": b"\x00\x01"})
    want = ["héllo", i, [1.5, True], {"k": xmlrpc.client.Binary(b"\x00\x01")}]
    assert got == want, (got, want)
try:
    p.nosuch()
except xmlrpc.client.Fault as f:
    print("fault", f.faultCode)
print("ok")
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", fmt.Sprintf(script, addr)).CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "ok\n") {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	if _, ok := lean.Load("/RPC2"); !ok {
		t.Fatal("the calls did not take the short path")
	}
}
