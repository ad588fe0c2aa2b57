// Package fakelb is a stand-in lb for tests of the client and the load
// generator: a real XML-RPC server (internal/xmlrpc on httptest) with
// call_faas, invoke and status, whose speed and failures tests control.
// Given Functions it serves many functions, as lb does since issue 12:
// call(name, param), functions(), invoke's "function" option and status's
// functions section; without, it is an lb from before, which has none of
// them and refuses invoke options other than route.
package fakelb

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// Options shape the fake's behaviour.
type Options struct {
	// Delay is how long each call takes.
	Delay time.Duration
	// Serial makes calls run one at a time behind a mutex, so a backlog
	// builds when calls come faster than 1/Delay.
	Serial bool
	// FaultEvery > 0 makes every FaultEvery-th call (1-based) a fault with
	// FaultCode (default spillway.FaultTimeout).
	FaultEvery int
	FaultCode  int
	// Functions, when set, are the functions served (the first is the
	// default, that of call_faas and of invoke without "function"). A call
	// of function F returns "F(param)\n"; call_faas still returns
	// "result(param)\n".
	Functions []spillway.FunctionInfo
}

// LB is a running fake.
type LB struct {
	URL   string
	opts  Options
	serve sync.Mutex // held by each call when opts.Serial
	calls atomic.Int64
	seen  sync.Map // route -> struct{}: first call per route is a cold start
	srv   *httptest.Server
	// Forced counts invoke calls that carried a route option, by route.
	forcedLocal, forcedCloud atomic.Int64

	mu     sync.Mutex       // guards byName
	byName map[string]int64 // calls of named functions (call, invoke with "function")
}

// Start starts a fake lb that stops when the test ends.
func Start(t testing.TB, opts Options) *LB {
	t.Helper()
	if opts.FaultCode == 0 {
		opts.FaultCode = spillway.FaultTimeout
	}
	lb := &LB{opts: opts, byName: map[string]int64{}}
	s := xmlrpc.NewServer()
	s.Register("call_faas", "call_faas(param) => result", lb.callFaas)
	s.Register("invoke", "invoke(param[, options]) => struct", lb.invoke)
	s.Register("status", "status() => struct", lb.status)
	if len(opts.Functions) > 0 {
		s.Register("call", "call(name, param) => result", lb.call)
		s.Register("functions", "functions() => array", lb.functions)
	}
	lb.srv = httptest.NewServer(s)
	lb.URL = lb.srv.URL + "/"
	t.Cleanup(lb.srv.Close)
	return lb
}

// Calls is the number of call_faas and invoke calls served.
func (lb *LB) Calls() int64 { return lb.calls.Load() }

// CallsOf is the number of calls that named function fn (call, or invoke
// with the "function" option).
func (lb *LB) CallsOf(fn string) int64 {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.byName[fn]
}

// Forced returns how many invoke calls forced local and cloud.
func (lb *LB) Forced() (local, cloud int64) { return lb.forcedLocal.Load(), lb.forcedCloud.Load() }

// work sleeps for the delay (serialised if asked) and decides whether this
// call (1-based n) faults.
func (lb *LB) work(ctx context.Context) (int64, error) {
	n := lb.calls.Add(1)
	if lb.opts.Serial {
		lb.serve.Lock()
		defer lb.serve.Unlock()
	}
	if lb.opts.Delay > 0 {
		t := time.NewTimer(lb.opts.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return n, ctx.Err()
		}
	}
	if lb.opts.FaultEvery > 0 && n%int64(lb.opts.FaultEvery) == 0 {
		return n, xmlrpc.NewFault(lb.opts.FaultCode, "fake fault on call %d", n)
	}
	return n, nil
}

func result(param any) string { return fmt.Sprintf("result(%v)\n", param) }

// named checks that fn is served, as lb does, and counts its call.
func (lb *LB) named(fn string) error {
	for _, f := range lb.opts.Functions {
		if f.Name == fn {
			lb.mu.Lock()
			lb.byName[fn]++
			lb.mu.Unlock()
			return nil
		}
	}
	return xmlrpc.NewFault(spillway.FaultNoSuchFunction, "no such function: %s", fn)
}

func (lb *LB) call(ctx context.Context, params []any) (any, error) {
	p := xmlrpc.Params(params)
	if err := p.Count(2, 2); err != nil {
		return nil, err
	}
	fn, err := p.String(0)
	if err != nil {
		return nil, err
	}
	if err := lb.named(fn); err != nil {
		return nil, err
	}
	if _, err := lb.work(ctx); err != nil {
		return nil, err
	}
	return fmt.Sprintf("%s(%v)\n", fn, params[1]), nil
}

func (lb *LB) functions(ctx context.Context, params []any) (any, error) {
	if err := xmlrpc.Params(params).Count(0, 0); err != nil {
		return nil, err
	}
	return lb.opts.Functions, nil
}
func (lb *LB) callFaas(ctx context.Context, params []any) (any, error) {
	p := xmlrpc.Params(params)
	if err := p.Count(1, 1); err != nil {
		return nil, err
	}
	if _, err := lb.work(ctx); err != nil {
		return nil, err
	}
	return result(params[0]), nil
}

// invoke alternates local and cloud (cloud calls are "overflow") unless the
// options force a route.
func (lb *LB) invoke(ctx context.Context, params []any) (any, error) {
	p := xmlrpc.Params(params)
	if err := p.Count(1, 2); err != nil {
		return nil, err
	}
	opts, err := p.OptStruct(1)
	if err != nil {
		return nil, err
	}
	fn := ""
	for k, v := range opts {
		switch {
		case k == "route":
		case k == "function" && len(lb.opts.Functions) > 0:
			fn, _ = v.(string)
			if err := lb.named(fn); err != nil {
				return nil, err
			}
		default:
			// As lb does, and as one from before many functions does with
			// "function".
			return nil, xmlrpc.NewFault(spillway.FaultInvalidParams, "unknown invoke option %q (known: route): invalid params", k)
		}
	}
	switch opts["route"] {
	case "local":
		lb.forcedLocal.Add(1)
	case "cloud":
		lb.forcedCloud.Add(1)
	}
	start := time.Now()
	n, err := lb.work(ctx)
	if err != nil {
		return nil, err
	}
	res := result(params[0])
	if fn != "" {
		res = fmt.Sprintf("%s(%v)\n", fn, params[0])
	}
	route, reason := spillway.RouteLocal, spillway.ReasonNone
	if n%2 == 0 {
		route, reason = spillway.RouteCloud, spillway.ReasonOverflow
	}
	switch opts["route"] {
	case "local":
		route, reason = spillway.RouteLocal, spillway.ReasonForced
	case "cloud":
		route, reason = spillway.RouteCloud, spillway.ReasonForced
	}
	worker := ""
	if route == spillway.RouteLocal {
		worker = fmt.Sprintf("fake-w%d", n%2+1)
	}
	_, seen := lb.seen.LoadOrStore(route, struct{}{})
	reply := map[string]any{
		"result":      res,
		"route":       route,
		"worker":      worker,
		"reason":      reason,
		"duration_ms": float64(time.Since(start).Microseconds()) / 1000,
		"cold_start":  !seen,
	}
	if len(lb.opts.Functions) > 0 {
		if fn == "" {
			fn = lb.opts.Functions[0].Name
		}
		reply["function"] = fn
	}
	return reply, nil
}

// status has the section of each function, when it serves many: its
// settings from Functions, its calls counted by CallsOf.
func (lb *LB) status(ctx context.Context, params []any) (any, error) {
	n := lb.calls.Load()
	st := map[string]any{
		"pool_size": 2 + n%3,
		"counters":  map[string]any{"calls": n, "cloud": n / 2},
		"members": []any{
			map[string]any{"name": "fake-w1", "in_flight": 0, "healthy": true},
			map[string]any{"name": "fake-w2", "in_flight": 1, "healthy": true},
		},
	}
	if len(lb.opts.Functions) > 0 {
		fns := map[string]any{}
		for _, f := range lb.opts.Functions {
			sec := spillway.FunctionSection{
				Name: f.Name, Version: f.Version, Style: f.Style, Ready: f.Ready > 0,
				PoolSize: f.Workers, PoolReady: f.Ready, PoolDesired: f.Workers, PoolMin: f.Min, PoolMax: f.Max,
				Concurrency: f.Concurrency, TimeoutSeconds: f.TimeoutSeconds,
				Counters: spillway.Counters{Calls: lb.CallsOf(f.Name)},
			}
			if f.Ready > 0 {
				sec.Cloud = &spillway.CloudStatus{Ready: true, Breaker: "closed"}
			}
			fns[f.Name] = sec
		}
		st["functions"] = fns
	}
	return st, nil
}
