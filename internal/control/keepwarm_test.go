package control

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/policy"
)

// fakePinger is the cloud as KeepWarm sees it; every field is guarded by mu.
type fakePinger struct {
	mu       sync.Mutex
	notReady bool
	err      error
	pings    []time.Time // when each ping was sent, by the test's clock
	clock    Clock
}

func (p *fakePinger) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.notReady
}

func (p *fakePinger) Ping(ctx context.Context) (cloud.PingResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		return cloud.PingResult{}, errors.New("ping without a deadline")
	}
	p.pings = append(p.pings, p.clock.Now())
	return cloud.PingResult{ColdStart: len(p.pings) == 1, Latency: time.Millisecond}, p.err
}

func (p *fakePinger) sent() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pings)
}

func (p *fakePool) setReady(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts.Ready, p.counts.Members = n, n
}

// TestKeepWarmStep: a function with no ready worker is pinged at once,
// then once per Every; one with a ready worker is not, and pinging starts
// again at once when it is back at zero. A follower, an undeployed cloud
// or an open breaker sends nothing.
func TestKeepWarmStep(t *testing.T) {
	clock := newFakeClock()
	t0 := clock.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	p := &fakePool{}
	cl := &fakePinger{clock: clock}
	rep := &fakeReplica{controller: true}
	var warmed []time.Time
	k := NewKeepWarm(KeepWarmConfig{Every: 4 * time.Minute, Tick: time.Second},
		KeepWarmDeps{Pool: p, Cloud: cl, Peers: rep, Clock: clock, Warmed: func(now time.Time) { warmed = append(warmed, now) }})
	ctx := context.Background()

	steps := []struct {
		at    time.Duration
		setup func()
		want  int // pings sent so far
	}{
		{0, nil, 1},                                                // at zero: at once
		{time.Second, nil, 1},                                      // not again within Every
		{4*time.Minute - time.Second, nil, 1},                      //
		{4 * time.Minute, nil, 2},                                  // Every later
		{5 * time.Minute, func() { p.setReady(1) }, 2},             // a worker: no ping
		{9 * time.Minute, nil, 2},                                  //
		{9*time.Minute + time.Second, func() { p.setReady(0) }, 3}, // back at zero: at once
		{14 * time.Minute, func() { rep.setController(false) }, 3}, // a follower: the controller pings
		{15 * time.Minute, func() { rep.setController(true); cl.mu.Lock(); cl.notReady = true; cl.mu.Unlock() }, 3},
		{16 * time.Minute, func() { cl.mu.Lock(); cl.notReady = false; cl.mu.Unlock() }, 4},
	}
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
		}
		clock.Advance(at(s.at).Sub(clock.Now()))
		k.step(ctx, clock.Now())
		if got := cl.sent(); got != s.want {
			t.Fatalf("at %v: %d pings sent, want %d", s.at, got, s.want)
		}
	}
	st := k.Stats()
	if st.Pings != 4 || st.ColdStarts != 1 || st.Failed != 0 || !st.Last.Equal(at(16*time.Minute)) || len(warmed) != 4 {
		t.Errorf("stats %+v, %d warmed; want 4 pings, 1 cold, last at 16m, 4 warmed", st, len(warmed))
	}

	// A failed ping is counted, tells no one the cloud is warm, and is
	// not retried before Every.
	cl.mu.Lock()
	cl.err = errors.New("502 from the gateway")
	cl.mu.Unlock()
	clock.Advance(4 * time.Minute)
	k.step(ctx, clock.Now())
	clock.Advance(time.Second)
	k.step(ctx, clock.Now())
	if st := k.Stats(); st.Failed != 1 || cl.sent() != 5 || len(warmed) != 4 {
		t.Errorf("after a failed ping: stats %+v, %d sent, %d warmed; want 1 failed, 5 sent, 4 warmed", st, cl.sent(), len(warmed))
	}
}

// TestKeepWarmBudgetBindsPings: pings spend from the cloud budget every
// path to the cloud shares. With CLOUD_MAX_RPS=0.01 (one call per 100 s)
// a 1 s interval sends one ping per 100 s and counts the refused ones;
// without the budget the same ticks send one per second.
func TestKeepWarmBudgetBindsPings(t *testing.T) {
	budget, err := policy.NewBudget(policy.OffloadConfig{CloudMaxRPS: 0.01, BudgetBurst: time.Second, LambdaMemoryMB: 3008})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		budget   CloudBudget
		want     int
		noBudget int64
	}{
		{"budget", budget, 3, 297},
		{"no budget", nil, 300, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			cl := &fakePinger{clock: clock}
			k := NewKeepWarm(KeepWarmConfig{Every: time.Second, Tick: time.Second},
				KeepWarmDeps{Pool: &fakePool{}, Cloud: cl, Budget: tc.budget, Clock: clock})
			for range 300 { // 300 s: the budget allows the first call, then one per 100 s
				k.step(context.Background(), clock.Now())
				clock.Advance(time.Second)
			}
			if got, st := cl.sent(), k.Stats(); got != tc.want || st.NoBudget != tc.noBudget {
				t.Fatalf("%d pings sent, %d refused by the budget; want %d and %d", got, st.NoBudget, tc.want, tc.noBudget)
			}
		})
	}
	// The pings spent the same budget an offloaded call would.
	if use, ok := budget.Use(newFakeClock().Now()); !ok || use.Calls != 3 {
		t.Fatalf("budget use %+v, want the 3 pings counted", use)
	}
}

// TestKeepWarmRun drives the loop with the hand-moved clock: it ticks,
// pings, and Close stops it; it never runs again after Close.
func TestKeepWarmRun(t *testing.T) {
	clock := newFakeClock()
	cl := &fakePinger{clock: clock}
	p := &fakePool{counts: spillway.PoolCounts{}}
	k := NewKeepWarm(KeepWarmConfig{Every: time.Minute, Tick: 10 * time.Second},
		KeepWarmDeps{Pool: p, Cloud: cl, Clock: clock})
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.Run(context.Background())
	}()
	<-clock.waiting // the first tick is awaited
	for range 13 {  // 130 s of ticks: pings at 10 s, 70 s, 130 s
		if got := clock.pending(); len(got) != 1 || got[0] != 10*time.Second {
			t.Fatalf("pending waits %v, want one tick (10s)", got)
		}
		clock.Advance(10 * time.Second)
		<-clock.waiting
	}
	if got := cl.sent(); got != 3 {
		t.Errorf("%d pings in 130 s at one a minute, want 3", got)
	}
	k.Close()
	<-done
	k.Run(context.Background()) // never runs again after Close
}
