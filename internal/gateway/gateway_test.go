package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/policy"
)

// fakePool is a pool of named slots whose calls run callFn.
type fakePool struct {
	mu      sync.Mutex
	free    []string      // free slots, by worker name
	slots   chan struct{} // one token per free slot
	total   int
	calls   atomic.Int64
	leases  atomic.Int64 // outstanding leases
	callFn  func(ctx context.Context, worker string, param any) (any, error)
	desired atomic.Int64
}

func newFakePool(workers ...string) *fakePool {
	p := &fakePool{slots: make(chan struct{}, len(workers)), total: len(workers)}
	for _, w := range workers {
		p.free = append(p.free, w)
		p.slots <- struct{}{}
	}
	p.desired.Store(int64(len(workers)))
	return p
}

func (p *fakePool) take() Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.free[0]
	p.free = p.free[1:]
	p.leases.Add(1)
	return &fakeLease{pool: p, worker: w}
}

func (p *fakePool) Acquire(ctx context.Context) (Lease, error) {
	select {
	case <-p.slots:
		return p.take(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *fakePool) TryAcquire() (Lease, bool) {
	select {
	case <-p.slots:
		return p.take(), true
	default:
		return nil, false
	}
}

func (p *fakePool) Counts() PoolCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolCounts{Members: p.total, Ready: p.total, ReadySlots: p.total, FreeSlots: len(p.free), Desired: int(p.desired.Load())}
}

type fakeLease struct {
	pool     *fakePool
	worker   string
	released atomic.Bool
}

func (l *fakeLease) Worker() string  { return l.worker }
func (l *fakeLease) ColdStart() bool { return false }
func (l *fakeLease) Call(ctx context.Context, param any) (any, error) {
	l.pool.calls.Add(1)
	return l.pool.callFn(ctx, l.worker, param)
}
func (l *fakeLease) Release() {
	if l.released.Swap(true) {
		panic("lease released twice")
	}
	l.pool.mu.Lock()
	l.pool.free = append(l.pool.free, l.worker)
	l.pool.mu.Unlock()
	l.pool.leases.Add(-1)
	l.pool.slots <- struct{}{}
}

type fakeCloud struct {
	ready bool
	calls atomic.Int64
	fn    func(ctx context.Context, param any) (cloud.Result, error)
}

func (c *fakeCloud) Ready() bool { return c.ready }
func (c *fakeCloud) Invoke(ctx context.Context, call cloud.Call) (cloud.Result, error) {
	c.calls.Add(1)
	if c.fn != nil {
		return c.fn(ctx, call.Param)
	}
	return cloud.Result{Value: fmt.Sprint("cloud:", call.Param), Latency: time.Millisecond}, nil
}

func testConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newTestGateway(t *testing.T, cfg config.Config, p Pool, c Cloud) *Gateway {
	t.Helper()
	off, err := policy.NewOffloader(cfg.OffloadPolicy, policy.OffloadConfig{QueueTimeout: cfg.QueueTimeout})
	if err != nil {
		t.Fatal(err)
	}
	d := Deps{Pool: p, Offloader: off, Estimator: policy.NewEstimator(policy.DefaultEstimatorConfig())}
	if c != nil {
		d.Cloud = c
	}
	g := New(cfg, d)
	g.SetReady(true)
	t.Cleanup(g.Close)
	return g
}

func echo(ctx context.Context, worker string, param any) (any, error) {
	return fmt.Sprint(worker, ":", param), nil
}

func TestLocalCallsSpreadAndReport(t *testing.T) {
	p := newFakePool("w1", "w2")
	p.callFn = echo
	g := newTestGateway(t, testConfig(t, nil), p, &fakeCloud{ready: true})
	inv, err := g.Invoke(context.Background(), "20", InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if inv.Route != spillway.RouteLocal || inv.Reason != spillway.ReasonNone || inv.Worker == "" || inv.Result != inv.Worker+":20" {
		t.Errorf("Invoke = %+v, want a local call on a named worker", inv)
	}
	if p.leases.Load() != 0 {
		t.Errorf("%d leases still held after the call", p.leases.Load())
	}
}

func TestOverflowGoesToCloudAtMaxSlots(t *testing.T) {
	// MAX_SERVERS=2: two slow local calls fill every slot; the third overflows.
	cfg := testConfig(t, map[string]string{"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2"})
	p := newFakePool("w1", "w2")
	release := make(chan struct{})
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		<-release
		return "local", nil
	}
	c := &fakeCloud{ready: true}
	g := newTestGateway(t, cfg, p, c)

	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Invoke(context.Background(), "x", InvokeOptions{}); err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor(t, func() bool { return p.calls.Load() == 2 })
	inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
	close(release)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if inv.Route != spillway.RouteCloud || inv.Reason != spillway.ReasonOverflow {
		t.Errorf("third call = route %q reason %q, want cloud/overflow", inv.Route, inv.Reason)
	}
	st := g.Status()
	if st.Counters.Calls != 3 || st.Counters.Cloud != 1 || st.Counters.Reasons["overflow"] != 1 {
		t.Errorf("counters = %+v", st.Counters)
	}
}

func TestRefusedOffloadFallsBackToLocal(t *testing.T) {
	// OFFLOAD_POLICY=always, but the cloud answers 429 after its retries.
	p := newFakePool("w1")
	p.callFn = echo
	c := &fakeCloud{ready: true, fn: func(ctx context.Context, param any) (cloud.Result, error) {
		return cloud.Result{}, fmt.Errorf("offload: HTTP 429: %w: %w", spillway.ErrCloudUnavailable, cloud.ErrNotRun)
	}}
	g := newTestGateway(t, testConfig(t, map[string]string{"OFFLOAD_POLICY": "always"}), p, c)
	inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
	if err != nil || inv.Route != spillway.RouteLocal || c.calls.Load() != 1 {
		t.Errorf("Invoke = %+v, %v (cloud calls %d); want a local answer after the refusal", inv, err, c.calls.Load())
	}
	// A forced cloud call reports the refusal.
	if _, err := g.Invoke(context.Background(), "x", InvokeOptions{Route: spillway.RouteCloud}); !errors.Is(err, spillway.ErrCloudUnavailable) {
		t.Errorf("forced cloud err = %v, want ErrCloudUnavailable", err)
	}
}

func TestBelowMaxSlotsWaitsForLocal(t *testing.T) {
	// One ready worker but MAX_SERVERS=2: the second call waits (reference rule).
	cfg := testConfig(t, map[string]string{"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2"})
	p := newFakePool("w1")
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		time.Sleep(50 * time.Millisecond)
		return "local", nil
	}
	c := &fakeCloud{ready: true}
	g := newTestGateway(t, cfg, p, c)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
			if err != nil || inv.Route != spillway.RouteLocal {
				t.Errorf("Invoke = %+v, %v; want local", inv, err)
			}
		}()
	}
	wg.Wait()
	if c.calls.Load() != 0 {
		t.Errorf("cloud got %d calls, want 0", c.calls.Load())
	}
}

func TestTimeoutGoesToCloud(t *testing.T) {
	tests := []struct {
		name      string
		cloud     *fakeCloud
		wantRoute spillway.Route
		wantErr   error
	}{
		{"cloud takes over", &fakeCloud{ready: true}, spillway.RouteCloud, nil},
		{"cloud off", nil, spillway.RouteLocal, spillway.ErrTimeout},
		{"cloud breaker open", &fakeCloud{ready: false}, spillway.RouteLocal, spillway.ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakePool("w1")
			p.callFn = func(ctx context.Context, w string, param any) (any, error) {
				return nil, fmt.Errorf("worker says: %w", spillway.ErrTimeout)
			}
			var c Cloud
			if tt.cloud != nil {
				c = tt.cloud
			}
			g := newTestGateway(t, testConfig(t, nil), p, c)
			inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if inv.Route != tt.wantRoute {
				t.Errorf("route = %q, want %q", inv.Route, tt.wantRoute)
			}
			if err == nil && inv.Reason != spillway.ReasonTimeout {
				t.Errorf("reason = %q, want timeout", inv.Reason)
			}
		})
	}
}

func TestHungWorkerCountsAsTimeout(t *testing.T) {
	cfg := testConfig(t, map[string]string{"LOCAL_TIMEOUT": "100ms", "CLOUD": "off"})
	p := newFakePool("w1")
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	g := newTestGateway(t, cfg, p, nil)
	start := time.Now()
	_, err := g.Invoke(context.Background(), "x", InvokeOptions{})
	if !errors.Is(err, spillway.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	// The call is cut at its deadline, not left hanging; the slack is for a
	// loaded machine.
	if d := time.Since(start); d > 100*time.Millisecond+timeoutMargin+2*time.Second {
		t.Errorf("took %v, want the call cut at its deadline", d)
	}
}

func TestFailedWorkerIsRetriedElsewhere(t *testing.T) {
	p := newFakePool("dead", "alive")
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		if w == "dead" {
			return nil, fmt.Errorf("call worker dead: connection refused: %w", spillway.ErrWorkerFailed)
		}
		return "ok", nil
	}
	g := newTestGateway(t, testConfig(t, nil), p, &fakeCloud{ready: true})
	for range 4 {
		inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
		if err != nil || inv.Result != "ok" || inv.Worker != "alive" {
			t.Fatalf("Invoke = %+v, %v; want ok on alive", inv, err)
		}
	}
	if p.leases.Load() != 0 {
		t.Errorf("%d leases still held", p.leases.Load())
	}
}

func TestFunctionErrorIsNotRetried(t *testing.T) {
	p := newFakePool("w1", "w2")
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		return nil, &spillway.FunctionError{Type: "ZeroDivisionError", Message: "division by zero"}
	}
	c := &fakeCloud{ready: true}
	g := newTestGateway(t, testConfig(t, nil), p, c)
	_, err := g.Invoke(context.Background(), "x", InvokeOptions{})
	if spillway.FaultCode(err) != spillway.FaultApplication {
		t.Fatalf("err = %v, want an application fault", err)
	}
	if p.calls.Load() != 1 || c.calls.Load() != 0 {
		t.Errorf("local calls %d, cloud calls %d; want 1, 0", p.calls.Load(), c.calls.Load())
	}
}

func TestForcedRoutes(t *testing.T) {
	p := newFakePool("w1")
	p.callFn = echo
	g := newTestGateway(t, testConfig(t, map[string]string{"OFFLOAD_POLICY": "always"}), p, &fakeCloud{ready: true})
	for _, route := range []spillway.Route{spillway.RouteLocal, spillway.RouteCloud} {
		inv, err := g.Invoke(context.Background(), "x", InvokeOptions{Route: route})
		if err != nil || inv.Route != route || inv.Reason != spillway.ReasonForced {
			t.Errorf("forced %s: %+v, %v", route, inv, err)
		}
	}
}

func TestQueuedCallPastItsDeadlineIsATimeout(t *testing.T) {
	p := newFakePool("w1")
	block := make(chan struct{})
	defer close(block)
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		<-block
		return "late", nil
	}
	g := newTestGateway(t, testConfig(t, map[string]string{"CLOUD": "off", "OFFLOAD_POLICY": "never"}), p, nil)
	go func() { _, _ = g.Invoke(context.Background(), "first", InvokeOptions{}) }()
	waitFor(t, func() bool { return p.calls.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := g.Invoke(ctx, "second", InvokeOptions{})
	if !errors.Is(err, spillway.ErrTimeout) {
		t.Errorf("queued call past its deadline: err = %v, want ErrTimeout", err)
	}
}

func TestDrainRefusesNewCalls(t *testing.T) {
	p := newFakePool("w1")
	p.callFn = echo
	g := newTestGateway(t, testConfig(t, nil), p, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := g.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Invoke(context.Background(), "x", InvokeOptions{}); !errors.Is(err, spillway.ErrUnavailable) {
		t.Errorf("after Drain, err = %v, want ErrUnavailable", err)
	}
}

// TestAccountingUnderConcurrency: many callers, random outcomes; every lease
// is released once and the gauges return to zero.
func TestAccountingUnderConcurrency(t *testing.T) {
	cfg := testConfig(t, map[string]string{"NUMBER_OF_SERVERS": "2", "MAX_SERVERS": "4", "WORKER_CONCURRENCY": "2"})
	p := newFakePool("a1", "a2", "b1", "b2")
	var n atomic.Int64
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		switch n.Add(1) % 5 {
		case 0:
			return nil, fmt.Errorf("reset: %w", spillway.ErrWorkerFailed)
		case 1:
			return nil, &spillway.FunctionError{Type: "ValueError"}
		}
		time.Sleep(time.Millisecond)
		return "ok", nil
	}
	g := newTestGateway(t, cfg, p, &fakeCloud{ready: true})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_, _ = g.Invoke(context.Background(), "x", InvokeOptions{})
			}
		}()
	}
	wg.Wait()
	st := g.Status()
	if p.leases.Load() != 0 || st.InFlight != 0 || st.LocalInFlight != 0 || st.Queued != 0 || st.CloudInFlight != 0 {
		t.Errorf("after the storm: leases %d, status %+v", p.leases.Load(), st)
	}
	if st.Counters.Calls != 32*20 || st.Counters.Local+st.Counters.Cloud != st.Counters.Calls {
		t.Errorf("counters do not add up: %+v", st.Counters)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBusyWorkerIsPlacedAgainNotFailed(t *testing.T) {
	// "full" is at its concurrency for another replica: it answers busy
	// its first 3 times. No call fails and no cloud call is needed.
	p := newFakePool("full", "free")
	var busy atomic.Int64
	p.callFn = func(ctx context.Context, w string, param any) (any, error) {
		if w == "full" && busy.Add(1) <= 3 {
			return nil, fmt.Errorf("worker full: %w", spillway.ErrWorkerBusy)
		}
		return w, nil
	}
	c := &fakeCloud{ready: true}
	g := newTestGateway(t, testConfig(t, nil), p, c)
	for _, opts := range []InvokeOptions{{}, {}, {Route: spillway.RouteLocal}, {Route: spillway.RouteLocal}, {}} {
		inv, err := g.Invoke(context.Background(), "x", opts)
		if err != nil || inv.Route != spillway.RouteLocal {
			t.Fatalf("Invoke(%+v) = %+v, %v; want a local result", opts, inv, err)
		}
	}
	st := g.Status()
	if st.Counters.Errors != 0 || st.Counters.Busy != 3 || c.calls.Load() != 0 {
		t.Errorf("errors %d, busy %d, cloud calls %d; want 0, 3, 0", st.Counters.Errors, st.Counters.Busy, c.calls.Load())
	}
	if p.leases.Load() != 0 {
		t.Errorf("%d leases still held", p.leases.Load())
	}
}

// fakeCluster is the other replicas as the gateway sees them.
type fakeCluster struct {
	controller atomic.Bool
	others     cluster.Load
}

func (c *fakeCluster) ID() string       { return "lb-a" }
func (c *fakeCluster) Controller() bool { return c.controller.Load() }
func (c *fakeCluster) Peers() []cluster.Report {
	return []cluster.Report{{ID: "lb-b", Controller: !c.controller.Load()}}
}
func (c *fakeCluster) OthersLoad(fn string) cluster.Load { return c.others }

type autoscalerFunc func(policy.ScaleSnapshot) policy.ScaleDecision

func (f autoscalerFunc) Decide(s policy.ScaleSnapshot) policy.ScaleDecision { return f(s) }

func TestControllerSizesForAllReplicas(t *testing.T) {
	cfg := testConfig(t, map[string]string{"ELASTICITY_SLEEP": "10ms"})
	cl := &fakeCluster{others: cluster.Load{InFlight: 7, Queued: 5, ArrivalRate: 40}}
	snaps := make(chan policy.ScaleSnapshot, 100)
	scaled := make(chan int, 100)
	off, err := policy.NewOffloader(cfg.OffloadPolicy, policy.OffloadConfig{})
	if err != nil {
		t.Fatal(err)
	}
	g := New(cfg, Deps{
		Pool: newFakePool("w1"), Offloader: off, Cluster: cl,
		Autoscaler: autoscalerFunc(func(s policy.ScaleSnapshot) policy.ScaleDecision {
			select {
			case snaps <- s:
			default:
			}
			return policy.ScaleDecision{Desired: 4}
		}),
		Scale: func(n int) {
			select {
			case scaled <- n:
			default:
			}
		},
	})
	t.Cleanup(g.Close)

	// A follower neither decides nor scales.
	time.Sleep(100 * time.Millisecond) // ten ticks; a follower must stay quiet through all of them
	if len(snaps) != 0 || len(scaled) != 0 {
		t.Fatalf("follower decided %d times and scaled %d times, want never", len(snaps), len(scaled))
	}
	st := g.Status()
	if st.LBID != "lb-a" || st.Controller || len(st.Replicas) != 2 || !st.Replicas[1].Controller {
		t.Errorf("follower status lb_id %q controller %v replicas %+v", st.LBID, st.Controller, st.Replicas)
	}

	cl.controller.Store(true)
	select {
	case s := <-snaps:
		if s.InFlight != 7 || s.Queued != 5 || s.ArrivalRate < 40 {
			t.Errorf("controller's snapshot %+v, want the other replicas' 7 in flight, 5 queued, >= 40/s", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the controller never decided")
	}
	select {
	case n := <-scaled:
		if n != 4 {
			t.Errorf("scaled to %d, want 4", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the controller never scaled")
	}
}
