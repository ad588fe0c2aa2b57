package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
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
	// tryCounts counts TryAcquireCounts calls.
	tryCounts atomic.Int64
	spare     atomic.Bool // a frozen spare is there (SpareSlots 1)
}

func newFakePool(workers ...string) *fakePool {
	p := &fakePool{slots: make(chan struct{}, len(workers)+8), total: len(workers)}
	for _, w := range workers {
		p.free = append(p.free, w)
		p.slots <- struct{}{}
	}
	p.desired.Store(int64(len(workers)))
	return p
}

// addWorker brings a worker up (as one started from zero).
func (p *fakePool) addWorker(w string) {
	p.mu.Lock()
	p.total++
	p.free = append(p.free, w)
	p.mu.Unlock()
	p.slots <- struct{}{}
}

func (p *fakePool) take() spillway.Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.free[0]
	p.free = p.free[1:]
	p.leases.Add(1)
	return &fakeLease{pool: p, worker: w}
}

func (p *fakePool) Acquire(ctx context.Context) (spillway.Lease, error) {
	select {
	case <-p.slots:
		return p.take(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *fakePool) TryAcquire() (spillway.Lease, bool) {
	select {
	case <-p.slots:
		return p.take(), true
	default:
		return nil, false
	}
}

func (p *fakePool) Counts() spillway.PoolCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := spillway.PoolCounts{Members: p.total, Ready: p.total, ReadySlots: p.total, FreeSlots: len(p.free), Desired: int(p.desired.Load())}
	if p.spare.Load() {
		c.SpareSlots = 1
	}
	return c
}

// TryAcquireCounts takes the counts, then a slot if one is free: the
// gateway's one-lock path (internal/pool has it).
func (p *fakePool) TryAcquireCounts() (spillway.Lease, spillway.PoolCounts, bool) {
	p.tryCounts.Add(1)
	c := p.Counts()
	l, ok := p.TryAcquire()
	return l, c, ok
}

var _ countingPool = (*fakePool)(nil)

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
	fn    func(ctx context.Context, param any) (spillway.CloudResult, error)
}

func (c *fakeCloud) Ready() bool { return c.ready }
func (c *fakeCloud) Invoke(ctx context.Context, call spillway.CloudCall) (spillway.CloudResult, error) {
	c.calls.Add(1)
	if c.fn != nil {
		return c.fn(ctx, call.Param)
	}
	return spillway.CloudResult{Value: fmt.Sprint("cloud:", call.Param), Latency: time.Millisecond}, nil
}

// setup is what a test configures: the gateway's Config and the offload
// policy's settings, lb's defaults unless a test changes them.
type setup struct {
	Config
	offload      string        // OFFLOAD_POLICY
	queueTimeout time.Duration // QUEUE_TIMEOUT
	cloudMaxRPS  float64       // CLOUD_MAX_RPS
}

func testConfig(edits ...func(*setup)) setup {
	s := setup{
		Config: Config{FunctionName: "faas", LocalTimeout: 5 * time.Second, CloudTimeout: 30 * time.Second,
			LocalSlots: 4, MaxQueued: 1000, MaxRequestBytes: 1 << 20},
		offload: "overflow",
	}
	for _, edit := range edits {
		edit(&s)
	}
	return s
}

func newTestGateway(t *testing.T, cfg setup, p Pool, c Cloud) *Gateway {
	t.Helper()
	off, err := policy.NewOffloader(cfg.offload, policy.OffloadConfig{QueueTimeout: cfg.queueTimeout})
	if err != nil {
		t.Fatal(err)
	}
	d := Deps{Pool: p, Offloader: off, Estimator: policy.NewEstimator(policy.DefaultEstimatorConfig())}
	if c != nil {
		d.Cloud = c
	}
	g := New(cfg.Config, d)
	g.SetReady(true)
	return g
}

func echo(ctx context.Context, worker string, param any) (any, error) {
	return fmt.Sprint(worker, ":", param), nil
}

func TestLocalCallsSpreadAndReport(t *testing.T) {
	p := newFakePool("w1", "w2")
	p.callFn = echo
	g := newTestGateway(t, testConfig(), p, &fakeCloud{ready: true})
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
	cfg := testConfig(func(s *setup) { s.LocalSlots = 2 }) // MAX_SERVERS=2
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
	st := g.Calls()
	if st.Counters.Calls != 3 || st.Counters.Cloud != 1 || st.Counters.Reasons["overflow"] != 1 {
		t.Errorf("counters = %+v", st.Counters)
	}
}

func TestRefusedOffloadFallsBackToLocal(t *testing.T) {
	// OFFLOAD_POLICY=always, but the cloud answers 429 after its retries.
	p := newFakePool("w1")
	p.callFn = echo
	c := &fakeCloud{ready: true, fn: func(ctx context.Context, param any) (spillway.CloudResult, error) {
		return spillway.CloudResult{}, fmt.Errorf("offload: HTTP 429: %w: %w", spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}}
	g := newTestGateway(t, testConfig(func(s *setup) { s.offload = "always" }), p, c)
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
	cfg := testConfig(func(s *setup) { s.LocalSlots = 2 }) // MAX_SERVERS=2
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
			g := newTestGateway(t, testConfig(), p, c)
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
	cfg := testConfig(func(s *setup) { s.LocalTimeout = 100 * time.Millisecond })
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
	g := newTestGateway(t, testConfig(), p, &fakeCloud{ready: true})
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
	g := newTestGateway(t, testConfig(), p, c)
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
	g := newTestGateway(t, testConfig(func(s *setup) { s.offload = "always" }), p, &fakeCloud{ready: true})
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
	g := newTestGateway(t, testConfig(func(s *setup) { s.offload = "never" }), p, nil)
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
	g := newTestGateway(t, testConfig(), p, nil)
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
	cfg := testConfig(func(s *setup) { s.LocalSlots = 8 }) // MAX_SERVERS=4, WORKER_CONCURRENCY=2
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
	st := g.Calls()
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
	g := newTestGateway(t, testConfig(), p, c)
	for _, opts := range []InvokeOptions{{}, {}, {Route: spillway.RouteLocal}, {Route: spillway.RouteLocal}, {}} {
		inv, err := g.Invoke(context.Background(), "x", opts)
		if err != nil || inv.Route != spillway.RouteLocal {
			t.Fatalf("Invoke(%+v) = %+v, %v; want a local result", opts, inv, err)
		}
	}
	st := g.Calls()
	if st.Counters.Errors != 0 || st.Counters.Busy != 3 || c.calls.Load() != 0 {
		t.Errorf("errors %d, busy %d, cloud calls %d; want 0, 3, 0", st.Counters.Errors, st.Counters.Busy, c.calls.Load())
	}
	if p.leases.Load() != 0 {
		t.Errorf("%d leases still held", p.leases.Load())
	}
}

// A policy that sends a call to the cloud while a slot is free gives back
// the slot the one-lock path took with the counts.
func TestCloudDecisionGivesTheSlotBack(t *testing.T) {
	p := newFakePool("w1", "w2")
	p.callFn = echo
	c := &fakeCloud{ready: true}
	g := newTestGateway(t, testConfig(func(s *setup) { s.offload = "always" }), p, c)
	for range 3 {
		inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
		if err != nil || inv.Route != spillway.RouteCloud {
			t.Fatalf("Invoke = %+v, %v; want the cloud", inv, err)
		}
	}
	if p.tryCounts.Load() != 3 || p.leases.Load() != 0 || p.calls.Load() != 0 || p.Counts().FreeSlots != 2 {
		t.Errorf("counting acquires %d, leases held %d, local calls %d, free %d; want 3, 0, 0, 2",
			p.tryCounts.Load(), p.leases.Load(), p.calls.Load(), p.Counts().FreeSlots)
	}
}

// Under MAX_TOTAL_WORKERS a function may be held below MAX_SERVERS: with
// its share's slots as the policy's MaxSlots, a call the cap keeps from a
// worker overflows to the cloud; with the static MAX_SERVERS slots it
// would wait for a worker the cap never lets start.
func TestShareSlotsOverflowToCloud(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("share=%v", shared), func(t *testing.T) {
			cfg := testConfig(func(s *setup) { s.LocalSlots = 4 }) // MAX_SERVERS=4
			p := newFakePool("w1")
			release := make(chan struct{})
			p.callFn = func(ctx context.Context, w string, param any) (any, error) {
				<-release
				return "local", nil
			}
			c := &fakeCloud{ready: true}
			off, err := policy.NewOffloader("overflow", policy.OffloadConfig{})
			if err != nil {
				t.Fatal(err)
			}
			d := Deps{Pool: p, Cloud: c, Offloader: off}
			if shared {
				d.LocalSlots = func() int { return 1 } // the share allows one worker
			}
			g := New(cfg.Config, d)
			go func() { _, _ = g.Invoke(context.Background(), "x", InvokeOptions{}) }()
			waitFor(t, func() bool { return p.calls.Load() == 1 })
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			inv, err := g.Invoke(ctx, "x", InvokeOptions{})
			cancel()
			close(release)
			if shared && (err != nil || inv.Route != spillway.RouteCloud || inv.Reason != spillway.ReasonOverflow) {
				t.Errorf("Invoke = %+v, %v; want cloud/overflow at the share's slots", inv, err)
			}
			if !shared && err == nil {
				t.Errorf("Invoke = %+v; without the share's slots the call waits for a worker (and times out here)", inv)
			}
		})
	}
}

// A function at zero workers: its call goes to the cloud with reason cold
// and asks for a worker at once; with the cloud off it waits for the
// worker and runs there. Without Wake (a function with a minimum) the
// same call waits under the offload policy, as before.
func TestColdCallGoesToTheCloudWhileAWorkerStarts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		scaleZero  bool
		cloud      bool
		spare      bool
		wantRoute  spillway.Route
		wantReason spillway.Reason
	}{
		{"cloud takes the cold call", true, true, false, spillway.RouteCloud, spillway.ReasonCold},
		{"cloud off: waits for the worker", true, false, false, spillway.RouteLocal, spillway.ReasonNone},
		{"a frozen spare: waits for it", true, true, true, spillway.RouteLocal, spillway.ReasonNone},
		{"min above zero: the policy decides", false, true, false, spillway.RouteLocal, spillway.ReasonNone},
		{"latency-aware weighs the start itself", true, true, false, spillway.RouteLocal, spillway.ReasonNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newFakePool() // no worker yet
			p.callFn = echo
			p.spare.Store(tc.spare)
			var woken atomic.Int64
			off, err := policy.NewOffloader("overflow", policy.OffloadConfig{})
			if err != nil {
				t.Fatal(err)
			}
			d := Deps{Pool: p, Offloader: off}
			if tc.cloud {
				d.Cloud = &fakeCloud{ready: true}
			}
			if tc.scaleZero {
				d.Wake = func() bool { woken.Add(1); return true }
			}
			// overflow stands in for a policy that weighs the start: below
			// its slots it waits.
			d.PolicyWeighsStarts = strings.HasPrefix(tc.name, "latency-aware")
			g := New(testConfig().Config, d)
			// The worker the wake asked for comes up a moment later.
			go func() {
				time.Sleep(50 * time.Millisecond)
				p.addWorker("w1")
			}()
			inv, err := g.Invoke(context.Background(), "x", InvokeOptions{})
			if err != nil || inv.Route != tc.wantRoute || inv.Reason != tc.wantReason {
				t.Fatalf("Invoke = %+v, %v; want route %q reason %q", inv, err, tc.wantRoute, tc.wantReason)
			}
			if tc.scaleZero && woken.Load() != 1 {
				t.Errorf("woken %d times, want once", woken.Load())
			}
			if tc.cloud && tc.scaleZero && !tc.spare && !d.PolicyWeighsStarts {
				// Once the worker is ready, calls are local again.
				waitFor(t, func() bool { return p.Counts().ReadySlots > 0 })
				inv, err := g.Invoke(context.Background(), "y", InvokeOptions{})
				if err != nil || inv.Route != spillway.RouteLocal {
					t.Errorf("after the worker is up: %+v, %v; want local", inv, err)
				}
			}
		})
	}
}
