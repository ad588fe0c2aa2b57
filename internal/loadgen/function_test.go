package loadgen_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/loadgen/fakelb"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

var twoFunctions = []spillway.FunctionInfo{
	{Name: "faas", Version: 3, Style: "script", Min: 1, Max: 4, Concurrency: 1, TimeoutSeconds: 30, Workers: 2, Ready: 2},
	{Name: "hello", Version: 1, Style: "handler", Max: 2, Concurrency: 4, TimeoutSeconds: 2.5, Workers: 1, Ready: 1},
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestResolveFunction: an lb that serves many functions is called by name;
// one that serves one function is called through call_faas when the name
// is its function's (FAAS_FUNCTION_NAME), and refused otherwise.
func TestResolveFunction(t *testing.T) {
	many := fakelb.Start(t, fakelb.Options{Functions: twoFunctions})
	one := fakelb.Start(t, fakelb.Options{})
	tests := []struct {
		name       string
		lb         *fakelb.LB
		fn, dflt   string
		want       string
		oneFuncErr bool
	}{
		{"no name asks nothing", one, "", "faas", "", false},
		{"many: the name", many, "hello", "faas", "hello", false},
		{"many: an unknown name is the calls' to report", many, "nope", "faas", "nope", false},
		{"one: its own function", one, "faas", "faas", "", false},
		{"one: another", one, "hello", "faas", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadgen.ResolveFunction(ctxT(t), xmlrpc.NewClient(tt.lb.URL, nil), tt.fn, tt.dflt)
			if got != tt.want || errors.Is(err, loadgen.ErrOneFunction) != tt.oneFuncErr || (err != nil && !tt.oneFuncErr) {
				t.Errorf("ResolveFunction(%q, %q) = %q, %v; want %q, one-function error %v", tt.fn, tt.dflt, got, err, tt.want, tt.oneFuncErr)
			}
		})
	}
	t.Run("lb down", func(t *testing.T) {
		_, err := loadgen.ResolveFunction(ctxT(t), xmlrpc.NewClient("http://127.0.0.1:1/", nil), "hello", "faas")
		if err == nil || errors.Is(err, loadgen.ErrOneFunction) {
			t.Errorf("err = %v, want a transport error", err)
		}
	})
}

// TestCallersNameTheFunction: with Function set, every caller reaches that
// function, invoke with the function option added to the forced route.
func TestCallersNameTheFunction(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{Functions: twoFunctions})
	cl := xmlrpc.NewClient(lb.URL, nil)
	callers := []struct {
		name   string
		caller loadgen.Caller
		route  string
	}{
		{"invoke", &loadgen.InvokeCaller{Client: cl, Param: "1", Function: "hello"}, ""},
		{"invoke forced", &loadgen.InvokeCaller{Client: cl, Param: "1", Options: map[string]any{"route": "cloud"}, Function: "hello"}, "cloud"},
		{"call", &loadgen.CallFaasCaller{Client: cl, Param: "1", Function: "hello"}, loadgen.RouteUnknown},
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			before := lb.CallsOf("hello")
			res := mustRun(t, &loadgen.Runner{Caller: c.caller}, loadgen.Config{Concurrency: 2, Requests: 10})
			if got := lb.CallsOf("hello") - before; got != 10 || res.Report.OK != 10 {
				t.Errorf("hello called %d times, %d ok; want 10", got, res.Report.OK)
			}
			if c.route != "" && res.Report.Routes[c.route].Count != 10 {
				t.Errorf("routes %v, want all %s", res.Report.Routes, c.route)
			}
		})
	}
	if n := lb.CallsOf("faas"); n != 0 {
		t.Errorf("the default function was called %d times", n)
	}
	t.Run("unknown function", func(t *testing.T) {
		res := mustRun(t, &loadgen.Runner{Caller: &loadgen.CallFaasCaller{Client: cl, Param: "1", Function: "nope"}},
			loadgen.Config{Concurrency: 1, Requests: 3})
		if res.Report.ErrorCodes["-32010"] != 3 {
			t.Errorf("errors %v, want 3 × -32010", res.Report.ErrorCodes)
		}
		if got := loadgen.ErrorKeyName("-32010"); got != "-32010 no such function" {
			t.Errorf("ErrorKeyName = %q", got)
		}
	})
}
