// Package fakelb is a stand-in lb for tests of the client and the load
// generator: a real XML-RPC server (internal/xmlrpc on httptest) with
// call_faas, invoke and status, whose speed and failures tests control.
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
}

// Start starts a fake lb that stops when the test ends.
func Start(t testing.TB, opts Options) *LB {
	t.Helper()
	if opts.FaultCode == 0 {
		opts.FaultCode = spillway.FaultTimeout
	}
	lb := &LB{opts: opts}
	s := xmlrpc.NewServer()
	s.Register("call_faas", "call_faas(param) => result", lb.callFaas)
	s.Register("invoke", "invoke(param[, options]) => struct", lb.invoke)
	s.Register("status", "status() => struct", lb.status)
	lb.srv = httptest.NewServer(s)
	lb.URL = lb.srv.URL + "/"
	t.Cleanup(lb.srv.Close)
	return lb
}

// Calls is the number of call_faas and invoke calls served.
func (lb *LB) Calls() int64 { return lb.calls.Load() }

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
	return map[string]any{
		"result":      result(params[0]),
		"route":       route,
		"worker":      worker,
		"reason":      reason,
		"duration_ms": float64(time.Since(start).Microseconds()) / 1000,
		"cold_start":  !seen,
	}, nil
}

func (lb *LB) status(ctx context.Context, params []any) (any, error) {
	n := lb.calls.Load()
	return map[string]any{
		"pool_size": 2 + n%3,
		"counters":  map[string]any{"calls": n, "cloud": n / 2},
		"members": []any{
			map[string]any{"name": "fake-w1", "in_flight": 0, "healthy": true},
			map[string]any{"name": "fake-w2", "in_flight": 1, "healthy": true},
		},
	}, nil
}
