package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// guardGateway builds a gateway whose clock stands still (so a budget never
// refills during a test) and whose budget, when limited, is shared by the
// policy and every other cloud path, as cmd/lb wires it.
func guardGateway(t *testing.T, cfg setup, p Pool, c Cloud, fn spillway.Function, log *slog.Logger) *Gateway {
	t.Helper()
	ocfg := policy.OffloadConfig{QueueTimeout: cfg.queueTimeout, CloudMaxRPS: cfg.cloudMaxRPS, BudgetBurst: time.Second}
	budget, err := policy.NewBudget(ocfg)
	if err != nil {
		t.Fatal(err)
	}
	ocfg.Budget = budget
	off, err := policy.NewOffloader(cfg.offload, ocfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := Deps{Pool: p, Offloader: off, Budget: budget, Log: log,
		Function: func() spillway.Function { return fn },
		Now:      func() time.Time { return now }}
	if c != nil {
		d.Cloud = c
	}
	g := New(cfg.Config, d)
	g.SetReady(true)
	return g
}

func TestBudgetBindsEveryCloudPath(t *testing.T) {
	// CLOUD_MAX_RPS=2 with a clock that stands still: exactly 2 calls may
	// reach the cloud, whatever path sends them. With the budget unset (the
	// protection off) every call reaches it.
	timeoutWorker := func(ctx context.Context, w string, param any) (any, error) {
		return nil, fmt.Errorf("worker says: %w", spillway.ErrTimeout)
	}
	failedWorker := func(ctx context.Context, w string, param any) (any, error) {
		return nil, fmt.Errorf("connection reset: %w", spillway.ErrWorkerFailed)
	}
	paths := []struct {
		name     string
		offload  string // OFFLOAD_POLICY; "" for the default
		worker   func(ctx context.Context, w string, param any) (any, error)
		opts     InvokeOptions
		overCode int // the fault past the budget
	}{
		{"forced", "", echo, InvokeOptions{Route: spillway.RouteCloud}, spillway.FaultBudgetExhausted},
		{"timeout", "", timeoutWorker, InvokeOptions{}, spillway.FaultTimeout},
		{"retry", "", failedWorker, InvokeOptions{}, spillway.FaultBudgetExhausted},
		{"policy", "always", echo, InvokeOptions{}, 0},
	}
	for _, path := range paths {
		for _, protected := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/budget=%v", path.name, protected), func(t *testing.T) {
				cfg := testConfig(func(s *setup) {
					s.LocalTimeout = time.Second
					if path.offload != "" {
						s.offload = path.offload
					}
					if protected {
						s.cloudMaxRPS = 2
					}
				})
				p := newFakePool("w1")
				p.callFn = path.worker
				c := &fakeCloud{ready: true}
				g := guardGateway(t, cfg, p, c, spillway.Function{}, nil)
				var over int
				for range 20 {
					_, err := g.Invoke(context.Background(), "x", path.opts)
					if err != nil && path.overCode != 0 {
						if code := spillway.FaultCode(err); code != path.overCode {
							t.Fatalf("call over the budget: fault %d (%v), want %d", code, err, path.overCode)
						}
						over++
					}
				}
				want := int64(20)
				if protected {
					want = 2
				}
				if got := c.calls.Load(); got != want {
					t.Errorf("%d calls reached the cloud, want %d", got, want)
				}
				if path.overCode != 0 && protected && over != 18 {
					t.Errorf("%d calls got fault %d, want 18", over, path.overCode)
				}
				if path.name == "policy" && protected && p.calls.Load() != 18 {
					t.Errorf("%d calls ran locally once the budget was spent, want 18", p.calls.Load())
				}
			})
		}
	}
}

func TestBudgetBindsMulticall(t *testing.T) {
	// One system.multicall of 20 forced-cloud invokes spends the budget like
	// 20 calls: 2 reach the cloud, 18 get -32003. Without a budget, 20 do.
	for _, protected := range []bool{true, false} {
		t.Run(fmt.Sprintf("budget=%v", protected), func(t *testing.T) {
			cfg := testConfig(func(s *setup) {
				if protected {
					s.cloudMaxRPS = 2
				}
			})
			c := &fakeCloud{ready: true}
			g := guardGateway(t, cfg, newFakePool("w1"), c, spillway.Function{}, nil)
			srv := httptest.NewServer(g.Handler(callsReporter{g}))
			defer srv.Close()
			calls := make([]any, 20)
			for i := range calls {
				calls[i] = map[string]any{"methodName": "invoke", "params": []any{"x", map[string]any{"route": "cloud"}}}
			}
			var reply []any
			if err := xmlrpc.NewClient(srv.URL, nil).Call(context.Background(), "system.multicall", []any{calls}, &reply); err != nil {
				t.Fatal(err)
			}
			var refused int
			for _, r := range reply {
				if f, ok := r.(map[string]any); ok && f["faultCode"] == int64(spillway.FaultBudgetExhausted) {
					refused++
				}
			}
			want, wantRefused := int64(20), 0
			if protected {
				want, wantRefused = 2, 18
			}
			if c.calls.Load() != want || refused != wantRefused {
				t.Errorf("cloud calls %d, -32003 faults %d; want %d and %d", c.calls.Load(), refused, want, wantRefused)
			}
		})
	}
}

func TestCloudServerErrorRunsAtMostOnce(t *testing.T) {
	// The cloud answers 5xx after the function may have run: the call is not
	// run again locally and no re-run is counted, unless the function is
	// idempotent (the protection off), when it is re-run and counted.
	for _, idempotent := range []bool{false, true} {
		t.Run(fmt.Sprintf("idempotent=%v", idempotent), func(t *testing.T) {
			p := newFakePool("w1")
			p.callFn = echo
			c := &fakeCloud{ready: true, fn: func(ctx context.Context, param any) (spillway.CloudResult, error) {
				return spillway.CloudResult{}, fmt.Errorf("offload: 500: %w", spillway.ErrCloudUnavailable)
			}}
			cfg := testConfig(func(s *setup) { s.offload = "always" })
			g := guardGateway(t, cfg, p, c, spillway.Function{Name: "faas", Idempotent: idempotent}, nil)
			_, err := g.Invoke(context.Background(), "x", InvokeOptions{})
			reruns := counterValue(t, g.metrics.reruns.WithLabelValues("cloud_refused"))
			if idempotent {
				if err != nil || p.calls.Load() != 1 || reruns != 1 {
					t.Errorf("idempotent: err %v, local runs %d, reruns %v; want a local re-run, counted", err, p.calls.Load(), reruns)
				}
				return
			}
			if !errors.Is(err, spillway.ErrCloudUnavailable) || p.calls.Load() != 0 || reruns != 0 {
				t.Errorf("err %v, local runs %d, reruns %v; want the cloud's error, no re-run", err, p.calls.Load(), reruns)
			}
		})
	}
}

func TestFaultsCarryNoInternalAddresses(t *testing.T) {
	const (
		worker = "spillway-faas-worker-7-3f9a"
		addr   = "172.18.0.5:8001"
	)
	p := newFakePool(worker)
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		return nil, fmt.Errorf("call worker %s: %w: Post \"http://%s/\": connection reset", w, spillway.ErrWorkerFailed, addr)
	}
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	g := guardGateway(t, testConfig(), p, nil, spillway.Function{}, log)
	srv := httptest.NewServer(g.Handler(callsReporter{g}))
	defer srv.Close()

	err := xmlrpc.NewClient(srv.URL, nil).Call(context.Background(), "call_faas", []any{"x"}, nil)
	var f *xmlrpc.Fault
	if !errors.As(err, &f) || f.Code != spillway.FaultWorkerFailed {
		t.Fatalf("call_faas: %v, want fault %d", err, spillway.FaultWorkerFailed)
	}
	for _, leak := range []string{worker, addr, "172.18."} {
		if strings.Contains(f.String, leak) {
			t.Errorf("fault string %q names %q", f.String, leak)
		}
	}
	_, id, ok := strings.Cut(f.String, "call id ")
	id = strings.TrimSuffix(id, ")")
	if !ok || len(id) != 16 {
		t.Fatalf("fault string %q carries no call id", f.String)
	}
	// The details are in the log, under the same call id.
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "call failed") && strings.Contains(l, id) {
			line = l
		}
	}
	if !strings.Contains(line, addr) || !strings.Contains(line, worker) {
		t.Errorf("no log line with call id %s, the worker and its address:\n%s", id, logs.String())
	}

	// Protection off: the default mapping of the same error names both.
	raw := xmlrpc.DefaultMapError(fmt.Errorf("call worker %s: %w: Post \"http://%s/\"", worker, spillway.ErrWorkerFailed, addr))
	if !strings.Contains(raw.String, addr) || !strings.Contains(raw.String, worker) {
		t.Errorf("the unprotected fault string %q should name the worker and its address", raw.String)
	}
}

func TestQueueBoundedByMaxQueued(t *testing.T) {
	// One busy worker and no cloud: with MAX_QUEUED=1 the second caller
	// waits and the third gets -32008 at once. With the bound off
	// (MAX_QUEUED large) the third waits too.
	for _, bounded := range []bool{true, false} {
		t.Run(fmt.Sprintf("bounded=%v", bounded), func(t *testing.T) {
			max := 1
			if !bounded {
				max = 1000
			}
			p := newFakePool("w1")
			release := make(chan struct{})
			p.callFn = func(ctx context.Context, w string, param any) (any, error) {
				<-release
				return "ok", nil
			}
			g := newTestGateway(t, testConfig(func(s *setup) { s.MaxQueued = max }), p, nil)
			var wg sync.WaitGroup
			var done atomic.Int64
			start := func() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = g.Invoke(context.Background(), "x", InvokeOptions{})
					done.Add(1)
				}()
			}
			defer func() { close(release); wg.Wait() }()
			start()
			waitFor(t, func() bool { return p.calls.Load() == 1 })
			start()
			waitFor(t, func() bool { return g.queued.Load() == 1 })

			if bounded {
				_, err := g.Invoke(context.Background(), "x", InvokeOptions{})
				if !errors.Is(err, ErrQueueFull) || spillway.FaultCode(err) != spillway.FaultUnavailable {
					t.Fatalf("third call: %v, want the queue-full fault %d", err, spillway.FaultUnavailable)
				}
				if got := counterValue(t, g.metrics.queueFull); got != 1 {
					t.Errorf("spillway_queue_full_total = %v, want 1", got)
				}
				return
			}
			start()
			waitFor(t, func() bool { return g.queued.Load() == 2 })
			if done.Load() != 0 {
				t.Errorf("%d calls ended while the worker was busy, want all waiting", done.Load())
			}
		})
	}
}

func TestStaleCloudTakesNoCall(t *testing.T) {
	// The cloud runs an older version than the workers (its deploy failed):
	// a call that passes LOCAL_TIMEOUT is not sent to the old Lambda, and a
	// forced-cloud call is refused with -32001. Once the cloud is current,
	// both go there.
	var current atomic.Bool
	p := newFakePool("w1")
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		return nil, fmt.Errorf("worker says: %w", spillway.ErrTimeout)
	}
	c := &fakeCloud{ready: true}
	cfg := testConfig()
	off, err := policy.NewOffloader(cfg.offload, policy.OffloadConfig{})
	if err != nil {
		t.Fatal(err)
	}
	g := New(cfg.Config, Deps{Pool: p, Cloud: c, Offloader: off, CloudCurrent: current.Load})
	g.SetReady(true)

	if _, err := g.Invoke(context.Background(), "x", InvokeOptions{}); !errors.Is(err, spillway.ErrTimeout) {
		t.Errorf("timed-out call with a stale cloud: %v, want the timeout", err)
	}
	if _, err := g.Invoke(context.Background(), "x", InvokeOptions{Route: spillway.RouteCloud}); spillway.FaultCode(err) != spillway.FaultCloudUnavailable {
		t.Errorf("forced-cloud call with a stale cloud: %v, want fault %d", err, spillway.FaultCloudUnavailable)
	}
	if n := c.calls.Load(); n != 0 {
		t.Fatalf("%d calls sent to a cloud that runs an older version", n)
	}
	current.Store(true)
	inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
	if err != nil || inv.Route != spillway.RouteCloud || c.calls.Load() != 1 {
		t.Errorf("with the cloud current: %+v, %v; want the timed-out call taken over by the cloud", inv, err)
	}
}

// callsReporter reports the gateway's own calls as the status.
type callsReporter struct{ g *Gateway }

func (r callsReporter) Status() spillway.Status {
	c := r.g.Calls()
	return spillway.Status{Ready: r.g.Ready(), InFlight: c.InFlight, LocalInFlight: c.LocalInFlight,
		CloudInFlight: c.CloudInFlight, Queued: c.Queued, Counters: c.Counters}
}

// counterValue reads one counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
