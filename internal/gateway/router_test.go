package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// twoFunctions is a router serving faas (the default) and hello, each on
// its own fake pool, one metrics registry for both; "warming" is known but
// still starting.
func twoFunctions(t *testing.T, token string) (*httptest.Server, *Router, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	gw := func(name string, call func(ctx context.Context, worker string, param any) (any, error)) *Gateway {
		p := newFakePool(name + "-w1")
		p.callFn = call
		off, err := policy.NewOffloader("overflow", policy.OffloadConfig{})
		if err != nil {
			t.Fatal(err)
		}
		g := New(Config{FunctionName: name, LocalTimeout: 5e9, CloudTimeout: 5e9, LocalSlots: 1, MaxRequestBytes: 1 << 10, AuthToken: token},
			Deps{Pool: p, Offloader: off, Metrics: reg})
		g.SetReady(true)
		return g
	}
	faas := gw("faas", func(ctx context.Context, worker string, param any) (any, error) {
		switch param {
		case "boom":
			return nil, &spillway.FunctionError{Type: "ZeroDivisionError", Message: "division by zero"}
		case "dict":
			return map[string]any{"n": 20, "fib": 6765}, nil
		}
		return fmt.Sprintf("faas(%v %T)", param, param), nil
	})
	hello := gw("hello", func(ctx context.Context, worker string, param any) (any, error) {
		return fmt.Sprintf("hello %v", param), nil
	})
	r := NewRouter(RouterConfig{DefaultFunction: "faas", MaxRequestBytes: 1 << 10, AuthToken: token}, reg, nil)
	r.Serve("faas", faas)
	r.Serve("hello", hello)
	r.Starting("warming")
	r.SetReady(true)
	cat := func() []spillway.FunctionInfo {
		return []spillway.FunctionInfo{{Name: "faas", Version: 3, Style: "script", Min: 1, Max: 2, Concurrency: 1, TimeoutSeconds: 5, Workers: 1, Ready: 1},
			{Name: "hello", Version: 1, Style: "handler", Min: 1, Max: 4, Concurrency: 2, TimeoutSeconds: 30, Workers: 2, Ready: 1}}
	}
	srv := httptest.NewServer(r.Handler(callsReporter{faas}, cat))
	t.Cleanup(srv.Close)
	return srv, r, reg
}

// rpc calls method on srv and returns the result or the fault.
func rpc(t *testing.T, url, method string, params ...any) (any, *xmlrpc.Fault) {
	t.Helper()
	var out any
	err := xmlrpc.NewClient(url, nil).Call(context.Background(), method, params, &out)
	var f *xmlrpc.Fault
	if errors.As(err, &f) {
		return nil, f
	}
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return out, nil
}

type httpAnswer struct {
	status  int
	ctype   string
	body    string
	headers http.Header
}

func post(t *testing.T, url, ctype, body string, hdr ...string) httpAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpAnswer{resp.StatusCode, resp.Header.Get("Content-Type"), string(b), resp.Header}
}

func TestRouterSendsEachCallToItsFunction(t *testing.T) {
	srv, _, _ := twoFunctions(t, "")
	cases := []struct {
		method string
		params []any
		want   any
	}{
		{"call_faas", []any{"20"}, "faas(20 string)"},
		{"call", []any{"hello", "you"}, "hello you"},
		{"call", []any{"faas", "7"}, "faas(7 string)"},
	}
	for _, c := range cases {
		got, f := rpc(t, srv.URL, c.method, c.params...)
		if f != nil || got != c.want {
			t.Errorf("%s%v = %v, %v; want %v", c.method, c.params, got, f, c.want)
		}
	}
	got, f := rpc(t, srv.URL, "invoke", "x", map[string]any{"function": "hello"})
	m, _ := got.(map[string]any)
	if f != nil || m["result"] != "hello x" || m["function"] != "hello" || m["route"] != "local" || m["worker"] != "hello-w1" {
		t.Errorf("invoke with function hello = %v, %v", got, f)
	}
	got, _ = rpc(t, srv.URL, "invoke", "x")
	if m, _ := got.(map[string]any); m["function"] != "faas" {
		t.Errorf("invoke without a function = %v, want the default function", got)
	}
}

func TestRouterFaults(t *testing.T) {
	srv, _, _ := twoFunctions(t, "")
	cases := []struct {
		name   string
		method string
		params []any
		code   int
		text   string
	}{
		{"unknown function", "call", []any{"nope", "1"}, spillway.FaultNoSuchFunction, "no such function: nope"},
		{"unknown in invoke", "invoke", []any{"1", map[string]any{"function": "nope"}}, spillway.FaultNoSuchFunction, "no such function: nope"},
		{"starting function", "call", []any{"warming", "1"}, spillway.FaultUnavailable, "starting"},
		{"call without a name", "call", []any{"1"}, spillway.FaultInvalidParams, "function name and a parameter"},
		{"name not a string", "call", []any{3, "1"}, spillway.FaultInvalidParams, "function name"},
		{"function raised", "call", []any{"faas", "boom"}, spillway.FaultApplication, "ZeroDivisionError: division by zero"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, f := rpc(t, srv.URL, c.method, c.params...)
			if f == nil || f.Code != c.code || !strings.Contains(f.String, c.text) {
				t.Errorf("fault %v, want %d containing %q", f, c.code, c.text)
			}
		})
	}
}

func TestFunctionsListsTheCatalog(t *testing.T) {
	srv, _, _ := twoFunctions(t, "")
	got, f := rpc(t, srv.URL, "functions")
	list, _ := got.([]any)
	if f != nil || len(list) != 2 {
		t.Fatalf("functions() = %v, %v", got, f)
	}
	hello, _ := list[1].(map[string]any)
	want := map[string]any{"name": "hello", "version": int64(1), "style": "handler", "min": int64(1), "max": int64(4),
		"concurrency": int64(2), "timeout": float64(30), "workers": int64(2), "ready": int64(1)}
	for k, v := range want {
		if fmt.Sprint(hello[k]) != fmt.Sprint(v) {
			t.Errorf("functions()[1].%s = %v (%T), want %v", k, hello[k], hello[k], v)
		}
	}
}

func TestHTTPInvoke(t *testing.T) {
	srv, _, _ := twoFunctions(t, "")
	cases := []struct {
		name, path, ctype, body string
		status                  int
		wantCType, wantBody     string
	}{
		{"text in, text out", "/function/faas", "", "20", 200, "text/plain", "faas(20 string)"},
		{"another function", "/function/hello", "text/plain", "you", 200, "text/plain", "hello you"},
		{"JSON number", "/function/faas", "application/json", "20", 200, "text/plain", "faas(20 int)"},
		{"JSON object", "/function/faas", "application/json", `{"a": [1, 2.5]}`, 200, "text/plain", "faas(map[a:[1 2.5]] map[string]interface {})"},
		{"JSON result", "/function/faas", "", "dict", 200, "application/json", `{"fib":6765,"n":20}`},
		{"bad JSON", "/function/faas", "application/json", "{", 400, "application/json", `"type":"BadRequest"`},
		{"unknown function", "/function/nope", "", "1", 404, "application/json", `no such function: nope`},
		{"starting", "/function/warming", "", "1", 503, "application/json", `"type":"Unavailable"`},
		{"function raised", "/function/faas", "", "boom", 502, "application/json", `{"fault":-32500,"message":"division by zero","type":"ZeroDivisionError"}`},
		{"too large", "/function/faas", "", strings.Repeat("x", 2<<10), 413, "application/json", `"type":"PayloadTooLarge"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := post(t, srv.URL+c.path, c.ctype, c.body)
			if a.status != c.status || !strings.HasPrefix(a.ctype, c.wantCType) || !strings.Contains(a.body, c.wantBody) {
				t.Errorf("POST %s %q: %d %s %q; want %d %s containing %q", c.path, c.body, a.status, a.ctype, a.body, c.status, c.wantCType, c.wantBody)
			}
			if a.status == 200 {
				h := a.headers
				if h.Get("X-Spillway-Route") != "local" || h.Get("X-Spillway-Worker") == "" || h.Get("X-Spillway-Duration-Ms") == "" {
					t.Errorf("headers %v: want route, worker and duration", h)
				}
				if _, ok := h["X-Spillway-Reason"]; !ok {
					t.Errorf("headers %v: want X-Spillway-Reason (empty on the normal path)", h)
				}
			}
		})
	}
	resp, err := http.Get(srv.URL + "/function/faas")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /function/faas: %d Allow=%q, want 405 Allow=POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// HTTP and XML-RPC give the same result and the same fault text for the
// same call.
func TestHTTPAndXMLRPCAgree(t *testing.T) {
	srv, _, _ := twoFunctions(t, "")
	for _, c := range []struct{ fn, param string }{{"faas", "20"}, {"hello", "x"}, {"nope", "1"}, {"faas", "boom"}} {
		got, f := rpc(t, srv.URL, "call", c.fn, c.param)
		a := post(t, srv.URL+"/function/"+c.fn, "", c.param)
		if f == nil {
			if a.status != 200 || a.body != got {
				t.Errorf("%s(%s): XML-RPC %v, HTTP %d %q", c.fn, c.param, got, a.status, a.body)
			}
			continue
		}
		var body struct {
			Type, Message string
			Fault         int
		}
		if err := json.Unmarshal([]byte(a.body), &body); err != nil {
			t.Fatalf("%s: HTTP body %q: %v", c.fn, a.body, err)
		}
		if body.Fault != f.Code || !strings.Contains(f.String, body.Message) || a.status != HTTPStatus(f.Code) {
			t.Errorf("%s(%s): XML-RPC fault %d %q, HTTP %d %+v", c.fn, c.param, f.Code, f.String, a.status, body)
		}
	}
}

func TestHTTPInvokeNeedsTheToken(t *testing.T) {
	for _, withToken := range []bool{false, true} {
		srv, _, _ := twoFunctions(t, "s3cret")
		var hdr []string
		if withToken {
			hdr = []string{"Authorization", "Bearer s3cret"}
		}
		a := post(t, srv.URL+"/function/faas", "", "20", hdr...)
		want := http.StatusUnauthorized
		if withToken {
			want = http.StatusOK
		}
		if a.status != want {
			t.Errorf("token sent=%v: %d %q, want %d", withToken, a.status, a.body, want)
		}
	}
}

func TestMetricsCarryTheFunction(t *testing.T) {
	srv, _, reg := twoFunctions(t, "")
	rpc(t, srv.URL, "call", "faas", "1")
	rpc(t, srv.URL, "call", "hello", "1")
	rpc(t, srv.URL, "call", "hello", "2")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "spillway_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "function" {
					calls[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if calls["faas"] != 1 || calls["hello"] != 2 {
		t.Errorf("spillway_calls_total by function = %v, want faas 1, hello 2", calls)
	}
}

func TestRouterReadiness(t *testing.T) {
	r := NewRouter(RouterConfig{DefaultFunction: "faas"}, prometheus.NewRegistry(), nil)
	r.Starting("faas")
	r.SetReady(true)
	if r.Ready() {
		t.Error("ready while the default function starts")
	}
	r.Serve("faas", &Gateway{})
	if !r.Ready() {
		t.Error("not ready once the default function serves")
	}
	r.Close()
	if r.Ready() {
		t.Error("ready while closing")
	}
	if _, err := r.Invoke(context.Background(), "faas", "1", InvokeOptions{}); !errors.Is(err, spillway.ErrUnavailable) {
		t.Errorf("call while closing: %v, want unavailable", err)
	}
}
