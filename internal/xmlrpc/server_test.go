package xmlrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// newTestServer serves echo, fail (a domain error), fault (a *Fault),
// panic, sleep(ms) and typed.
func newTestServer(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s := NewServer()
	s.Register("echo", "echo(x) => x", func(ctx context.Context, params []any) (any, error) {
		if len(params) == 1 {
			return params[0], nil
		}
		return params, nil
	})
	s.Register("fail", "", func(ctx context.Context, params []any) (any, error) {
		return nil, fmt.Errorf("run it: %w", &spillway.FunctionError{Type: "ZeroDivisionError", Message: "division by zero"})
	})
	s.Register("fault", "", func(ctx context.Context, params []any) (any, error) {
		return nil, fmt.Errorf("wrapped: %w", NewFault(-32099, "custom"))
	})
	s.Register("timeout", "", func(ctx context.Context, params []any) (any, error) {
		return nil, fmt.Errorf("local run: %w", spillway.ErrTimeout)
	})
	s.Register("panic", "", func(ctx context.Context, params []any) (any, error) {
		panic("boom")
	})
	s.Register("sleep", "", func(ctx context.Context, params []any) (any, error) {
		ms, err := Params(params).Int(0)
		if err != nil {
			return nil, err
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return "slept", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	s.Register("unencodable", "", func(ctx context.Context, params []any) (any, error) {
		return make(chan int), nil
	})
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs
}

func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "text/xml", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

func TestServerFaults(t *testing.T) {
	s, hs := newTestServer(t)
	s.MaxBodyBytes = 4096
	tests := []struct {
		name string
		body string
		code int
	}{
		{"unknown method", call(""), spillway.FaultMethodNotFound},
		{"parse error", "<methodCall><methodName>echo", spillway.FaultParse},
		{"invalid request", "<foo/>", spillway.FaultInvalidRequest},
		{"too large", call(param("<string>" + strings.Repeat("x", 5000) + "</string>")), spillway.FaultPayloadTooLarge},
		{"function error", `<methodCall><methodName>fail</methodName></methodCall>`, spillway.FaultApplication},
		{"wrapped fault sent as is", `<methodCall><methodName>fault</methodName></methodCall>`, -32099},
		{"sentinel", `<methodCall><methodName>timeout</methodName></methodCall>`, spillway.FaultTimeout},
		{"panic", `<methodCall><methodName>panic</methodName></methodCall>`, spillway.FaultInternal},
		{"bad params", `<methodCall><methodName>sleep</methodName><params><param><value>x</value></param></params></methodCall>`, spillway.FaultInvalidParams},
		{"unencodable result", `<methodCall><methodName>unencodable</methodName></methodCall>`, spillway.FaultInternal},
		{"help of unknown", `<methodCall><methodName>system.methodHelp</methodName><params><param><value>nope</value></param></params></methodCall>`, spillway.FaultMethodNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := post(t, hs.URL, tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("HTTP %d, want 200", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/xml" {
				t.Errorf("Content-Type %q", ct)
			}
			_, err := DecodeResponse(b)
			f, ok := IsRemoteFault(err)
			if !ok {
				t.Fatalf("response %s: %v, want a fault", b, err)
			}
			if f.Code != tt.code {
				t.Errorf("fault %d %q, want code %d", f.Code, f.String, tt.code)
			}
		})
	}
	t.Run("function error string", func(t *testing.T) {
		_, b := post(t, hs.URL, `<methodCall><methodName>fail</methodName></methodCall>`)
		_, err := DecodeResponse(b)
		if f, _ := IsRemoteFault(err); f == nil || f.String != "ZeroDivisionError: division by zero" {
			t.Errorf("fault %v", err)
		}
	})
}

func TestServerMapError(t *testing.T) {
	s, hs := newTestServer(t)
	s.MapError = func(err error) Fault { return Fault{Code: -32050, String: "mapped: " + err.Error()} }
	_, b := post(t, hs.URL, `<methodCall><methodName>timeout</methodName></methodCall>`)
	_, err := DecodeResponse(b)
	if f, _ := IsRemoteFault(err); f == nil || f.Code != -32050 {
		t.Errorf("fault %v, want -32050", err)
	}
}

func TestServerGet(t *testing.T) {
	_, hs := newTestServer(t)
	resp, err := http.Get(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: HTTP %d Allow %q, want 405 POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestServerOversizedUnknownLength(t *testing.T) {
	s, hs := newTestServer(t)
	s.MaxBodyBytes = 1024
	// A chunked body (no Content-Length) past the limit.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(call(param("<string>" + strings.Repeat("y", 4096) + "</string>"))))
		pw.Close()
	}()
	resp, err := http.Post(hs.URL, "text/xml", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, derr := DecodeResponse(b)
	if f, _ := IsRemoteFault(derr); f == nil || f.Code != spillway.FaultPayloadTooLarge {
		t.Errorf("got %v, want payload too large", derr)
	}
}

func TestSystemMethods(t *testing.T) {
	_, hs := newTestServer(t)
	c := NewClient(hs.URL, nil)
	ctx := context.Background()

	var names any
	if err := c.Call(ctx, "system.listMethods", nil, &names); err != nil {
		t.Fatal(err)
	}
	want := []any{"echo", "fail", "fault", "panic", "sleep", "system.listMethods", "system.methodHelp",
		"system.methodSignature", "system.multicall", "timeout", "unencodable"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("listMethods: -want %v +got %v", want, names)
	}

	var help any
	if err := c.Call(ctx, "system.methodHelp", []any{"echo"}, &help); err != nil || help != "echo(x) => x" {
		t.Errorf("methodHelp = %v, %v", help, err)
	}

	var res any
	err := c.Call(ctx, "system.multicall", []any{[]any{
		map[string]any{"methodName": "echo", "params": []any{"a"}},
		map[string]any{"methodName": "fail", "params": []any{}},
		map[string]any{"methodName": "nope"},
		map[string]any{"methodName": "system.multicall", "params": []any{[]any{}}},
		"junk",
		map[string]any{"methodName": "echo", "params": []any{int64(1), int64(2)}},
	}}, &res)
	if err != nil {
		t.Fatal(err)
	}
	wantRes := []any{
		[]any{"a"},
		map[string]any{"faultCode": int64(spillway.FaultApplication), "faultString": "ZeroDivisionError: division by zero"},
		map[string]any{"faultCode": int64(spillway.FaultMethodNotFound), "faultString": `method "nope" not found`},
		map[string]any{"faultCode": int64(spillway.FaultInvalidRequest), "faultString": "system.multicall cannot be nested"},
		map[string]any{"faultCode": int64(spillway.FaultInvalidParams), "faultString": "multicall entry is string, want struct"},
		[]any{[]any{int64(1), int64(2)}},
	}
	if !reflect.DeepEqual(res, wantRes) {
		t.Errorf("multicall: -want %#v\n+got %#v", wantRes, res)
	}
}

func TestServerRegisterWhileServing(t *testing.T) {
	s, hs := newTestServer(t)
	c := NewClient(hs.URL, nil)
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			s.Register(fmt.Sprintf("m%d", i), "", func(context.Context, []any) (any, error) { return i, nil })
		}
	}()
	for range 50 {
		if err := c.Call(ctx, "echo", []any{"x"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	var got any
	if err := c.Call(ctx, "m49", nil, &got); err != nil || got != int64(49) {
		t.Errorf("m49 = %v, %v", got, err)
	}
}

// TestClient runs every case on net/http and on Conns.
func TestClient(t *testing.T) {
	for _, tr := range []struct {
		name      string
		newClient func(url string, _ *http.Client) *Client
	}{
		{"net/http", NewClient},
		{"conns", func(url string, _ *http.Client) *Client {
			c := NewClient(url, nil)
			c.Conns = NewConns(strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"), ConnsOptions{})
			return c
		}},
	} {
		t.Run(tr.name, func(t *testing.T) { testClient(t, tr.newClient) })
	}
}

func testClient(t *testing.T, NewClient func(string, *http.Client) *Client) {
	_, hs := newTestServer(t)
	ctx := context.Background()

	t.Run("echo every type", func(t *testing.T) {
		c := NewClient(hs.URL, nil)
		when := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
		args := []any{"s", "", int64(1) << 40, true, 1.25, when, []byte{1, 2}, nil,
			[]any{}, map[string]any{}, map[string]any{"n": []any{nil, ""}}}
		var got any
		if err := c.Call(ctx, "echo", args, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, args) {
			t.Errorf("-want %#v +got %#v", args, got)
		}
	})
	t.Run("typed reply through kolo", func(t *testing.T) {
		c := NewClient(hs.URL, nil)
		var got struct {
			Route string  `xmlrpc:"route"`
			Ms    float64 `xmlrpc:"duration_ms"`
		}
		if err := c.Call(ctx, "echo", []any{map[string]any{"route": "cloud", "duration_ms": 3.5}}, &got); err != nil {
			t.Fatal(err)
		}
		if got.Route != "cloud" || got.Ms != 3.5 {
			t.Errorf("got %+v", got)
		}
		var s string
		if err := c.Call(ctx, "echo", []any{"plain"}, &s); err != nil || s != "plain" {
			t.Errorf("string reply %q, %v", s, err)
		}
	})
	t.Run("fault", func(t *testing.T) {
		c := NewClient(hs.URL, nil)
		err := c.Call(ctx, "fail", nil, nil)
		var f *Fault
		if !errors.As(err, &f) || f.Code != spillway.FaultApplication {
			t.Fatalf("err %v, want an application fault", err)
		}
		if got := spillway.ErrorFromFault(f.Code, f.String); got.Error() != "ZeroDivisionError: division by zero" {
			t.Errorf("ErrorFromFault = %v", got)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c := NewClient(hs.URL, nil)
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.Call(ctx, "sleep", []any{5000}, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want DeadlineExceeded", err)
		}
		if !strings.Contains(err.Error(), "xmlrpc call sleep") {
			t.Errorf("error %q does not say what was being done", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("call took %v after a 50ms deadline", d)
		}
	})
	t.Run("transport error", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		url := dead.URL
		dead.Close()
		err := NewClient(url, nil).Call(ctx, "echo", nil, nil)
		if err == nil || !strings.Contains(err.Error(), "xmlrpc call echo: send to "+url) {
			t.Errorf("err %v", err)
		}
	})
	t.Run("connection cut mid-response", func(t *testing.T) {
		cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			_, _ = w.Write([]byte("<?xml"))
			hj, ok := w.(http.Hijacker)
			if !ok {
				return
			}
			conn, _, err := hj.Hijack()
			if err == nil {
				conn.Close()
			}
		}))
		defer cut.Close()
		err := NewClient(cut.URL, nil).Call(ctx, "echo", nil, nil)
		if err == nil || !strings.Contains(err.Error(), "read response") || err.Error() == "EOF" {
			t.Errorf("err %v", err)
		}
	})
	t.Run("http error status", func(t *testing.T) {
		bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nope", http.StatusUnauthorized)
		}))
		defer bad.Close()
		err := NewClient(bad.URL, nil).Call(ctx, "echo", nil, nil)
		if err == nil || !strings.Contains(err.Error(), "HTTP 401") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("response too large", func(t *testing.T) {
		c := NewClient(hs.URL, nil)
		c.MaxResponseBytes = 100
		err := c.Call(ctx, "echo", []any{strings.Repeat("z", 200)}, nil)
		if err == nil || !strings.Contains(err.Error(), "over 100 bytes") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("headers and keep-alive", func(t *testing.T) {
		var auth atomic.Value
		var conns atomic.Int32
		s := NewServer()
		s.Register("ping", "", func(context.Context, []any) (any, error) { return "pong", nil })
		hs2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			auth.Store(r.Header.Get("Authorization"))
			s.ServeHTTP(w, r)
		}))
		hs2.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		}
		hs2.Start()
		defer hs2.Close()
		c := NewClient(hs2.URL, nil)
		c.SetBearerToken("tok")
		for range 20 {
			if err := c.Call(ctx, "ping", nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		if got := auth.Load(); got != "Bearer tok" {
			t.Errorf("Authorization %q", got)
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%d connections for 20 sequential calls, want 1 (keep-alive)", n)
		}
		c.SetBasicAuth("u", "p")
		if err := c.Call(ctx, "ping", nil, nil); err != nil {
			t.Fatal(err)
		}
		if got := auth.Load(); got != "Basic dTpw" {
			t.Errorf("Authorization %q", got)
		}
	})
	t.Run("unencodable arg", func(t *testing.T) {
		err := NewClient(hs.URL, nil).Call(ctx, "echo", []any{func() {}}, nil)
		if err == nil || !strings.Contains(err.Error(), "encode param 1") {
			t.Errorf("err %v", err)
		}
	})
}

// The server answers with the same bytes whatever the pool state: run
// calls concurrently to let -race see the buffer pool.
func TestServerConcurrent(t *testing.T) {
	_, hs := newTestServer(t)
	c := NewClient(hs.URL, nil)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 50 {
				want := fmt.Sprintf("%d-%d-%s", g, i, strings.Repeat("x", i*10))
				var got any
				if err := c.Call(context.Background(), "echo", []any{want}, &got); err != nil {
					errs <- err
					return
				}
				if got != want {
					errs <- fmt.Errorf("got %v, want %v", got, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

var _ http.Handler = (*Server)(nil)

func TestDecodeBodyNotRetained(t *testing.T) {
	// Strings decoded from a pooled buffer must not alias it.
	b := []byte(call(param("<string>abc</string>")))
	_, params, err := DecodeCall(b)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, bytes.Repeat([]byte{'!'}, len(b)))
	if params[0] != "abc" {
		t.Errorf("decoded string changed with its buffer: %q", params[0])
	}
}
