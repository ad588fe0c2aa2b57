package pool

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

func call(t *testing.T, p *Pool, param string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := p.Acquire(ctx)
	if err != nil {
		return "", "", err
	}
	defer l.Release()
	v, err := l.Call(ctx, param)
	s, _ := v.(string)
	return s, l.Worker(), err
}

func TestAcquireCallRelease(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(2, 4, 1), fnVersion(1))
	seen := map[string]int{}
	for i := range 10 {
		got, worker, err := call(t, p, fmt.Sprint(i))
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if want := worker + ":" + fmt.Sprint(i) + ":sha-1"; got != want {
			t.Fatalf("call %d = %q, want %q", i, got, want)
		}
		seen[worker]++
	}
	if len(seen) != 2 || seen[p.Snapshot().Members[0].Name] != 5 {
		t.Errorf("round-robin spread = %v, want 5 and 5", seen)
	}
	s := p.Snapshot()
	if s.Ready != 2 || s.InFlight != 0 || s.Desired != 2 || s.Capacity != 2 || s.Counters.Started != 2 {
		t.Errorf("snapshot %+v", s)
	}
}

func TestInFlightAccountingUnderConcurrency(t *testing.T) {
	for _, sched := range []string{policy.SchedulerRoundRobin, policy.SchedulerLeastConnections} {
		t.Run(sched, func(t *testing.T) {
			c, b := newFakeCluster(t, 2)
			cfg := testConfig(3, 3, 2)
			cfg.HealthTimeout = 2 * time.Second // -race on 2 shared cores: no spurious ejection
			p := New(b, cfg)
			p.Scheduler, _ = policy.NewScheduler(sched)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := p.Open(ctx, fnVersion(1)); err != nil {
				t.Fatal(err)
			}
			defer p.Close(ctx)
			var failed atomic.Int64
			var wg sync.WaitGroup
			for range 40 {
				wg.Go(func() {
					for range 15 {
						l, err := p.Acquire(ctx)
						if err != nil {
							failed.Add(1)
							return
						}
						if _, err := l.Call(ctx, "sleep:1"); err != nil {
							t.Errorf("call on %s: %v", l.Worker(), err)
							failed.Add(1)
						}
						l.Release()
						l.Release() // a second release is a logged no-op
					}
				})
			}
			wg.Wait()
			if failed.Load() != 0 {
				t.Fatalf("%d calls failed", failed.Load())
			}
			s := p.Snapshot()
			if s.InFlight != 0 || s.Waiting != 0 || s.Ready != 3 {
				t.Fatalf("after the storm: %+v", s)
			}
			var total int64
			for _, m := range s.Members {
				w := c.byName(m.Name)
				if w.maxSeen.Load() > 2 {
					t.Errorf("worker %s saw %d calls at once, capacity 2", m.Name, w.maxSeen.Load())
				}
				total += w.calls.Load()
			}
			if total != 40*15 {
				t.Errorf("workers ran %d calls, want %d", total, 40*15)
			}
		})
	}
}

func TestAcquireIsFIFO(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(1, 1, 1), fnVersion(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.TryAcquire(); ok {
		t.Fatal("TryAcquire got a slot from a full pool")
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			l, err := p.Acquire(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			l.Release()
		})
		eventually(t, 5*time.Second, "waiter queued", func() bool { return p.Snapshot().Waiting == i+1 })
	}
	if _, ok := p.TryAcquire(); ok {
		t.Fatal("TryAcquire jumped the queue")
	}
	first.Release()
	wg.Wait()
	if fmt.Sprint(order) != "[0 1 2 3 4]" {
		t.Fatalf("grant order %v, want arrival order", order)
	}
	l, ok := p.TryAcquire()
	if !ok {
		t.Fatal("TryAcquire on an idle pool failed")
	}
	l.Release()
}

func TestAcquireHonoursContext(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(1, 1, 1), fnVersion(1))
	held, ok := p.TryAcquire()
	if !ok {
		t.Fatal("TryAcquire failed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Acquire(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("Acquire = %v after %v; want deadline exceeded soon", err, time.Since(start))
	}
	if s := p.Snapshot(); s.Waiting != 0 || s.InFlight != 1 {
		t.Fatalf("after a cancelled wait: %+v", s)
	}
	held.Release()
	if s := p.Snapshot(); s.InFlight != 0 {
		t.Fatalf("slot leaked: %+v", s)
	}
}

func TestFaultsKeepTheMember(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(1, 1, 1), fnVersion(1))
	tests := []struct {
		param string
		check func(error) bool
	}{
		{"timeout", func(err error) bool { return errors.Is(err, spillway.ErrTimeout) }},
		{"raise", func(err error) bool {
			var fe *spillway.FunctionError
			return errors.As(err, &fe) && fe.Type == "ZeroDivisionError" && fe.Message == "division by zero"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.param, func(t *testing.T) {
			_, _, err := call(t, p, tt.param)
			if !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			if errors.Is(err, spillway.ErrWorkerFailed) {
				t.Fatalf("a fault counted as a worker failure: %v", err)
			}
			if s := p.Snapshot(); s.Ready != 1 || s.Counters.Failed != 0 {
				t.Fatalf("member left rotation after a fault: %+v", s)
			}
		})
	}
}

func TestTransportFailureEjectsAndReplaces(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	cfg := testConfig(2, 2, 1)
	cfg.HealthInterval = time.Hour // only the call may notice
	p := openPool(t, b, c, cfg, fnVersion(1))
	victim := p.Snapshot().Members[0].Name
	c.byName(victim).kill()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var failedOn string
	for range 2 {
		l, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Call(ctx, "x")
		l.Release()
		if err != nil {
			if !errors.Is(err, spillway.ErrWorkerFailed) {
				t.Fatalf("err = %v, want ErrWorkerFailed", err)
			}
			failedOn = l.Worker()
		}
	}
	if failedOn != victim {
		t.Fatalf("failure seen on %q, want %q", failedOn, victim)
	}
	for _, m := range p.Snapshot().Members {
		if m.Name == victim && m.State == StateReady {
			t.Fatal("dead member still in rotation")
		}
	}
	// The retry goes elsewhere and succeeds.
	if _, w, err := call(t, p, "retry"); err != nil || w == victim {
		t.Fatalf("retry on %s: %v", w, err)
	}
	eventually(t, 5*time.Second, "replacement ready", func() bool {
		s := p.Snapshot()
		return s.Ready == 2 && len(s.Members) == 2 && s.Counters.Replacements == 1 && s.Counters.Removed == 1
	})
	if s := p.Snapshot(); s.Counters.Failed != 1 {
		t.Fatalf("counters %+v", s.Counters)
	}
}

func TestHealthEjectsSilentMemberAndAbortsItsCalls(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(1, 1, 1), fnVersion(1))
	victim := p.Snapshot().Members[0].Name
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.byName(victim).silent.Store(true)
	start := time.Now()
	_, err = l.Call(ctx, "sleep:8000") // hangs like a call to a vanished container
	l.Release()
	if !errors.Is(err, spillway.ErrWorkerFailed) {
		t.Fatalf("err = %v, want ErrWorkerFailed", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("hung call released after %v", d)
	}
	eventually(t, 5*time.Second, "replacement ready", func() bool {
		s := p.Snapshot()
		return s.Ready == 1 && len(s.Members) == 1 && s.Members[0].Name != victim
	})
}

func TestScaleUpAndDownWithDrain(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(1, 4, 1), fnVersion(1))
	if got := p.Scale(10); got != 4 {
		t.Fatalf("Scale(10) = %d, want the ceiling 4", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx, 4); err != nil {
		t.Fatal(err)
	}
	// Hold one slot on each of two members, then scale to the floor.
	l1, _ := p.TryAcquire()
	l2, _ := p.TryAcquire()
	if got := p.Scale(0); got != 1 {
		t.Fatalf("Scale(0) = %d, want the floor 1", got)
	}
	eventually(t, 5*time.Second, "idle members removed", func() bool { return c.count() == 2 })
	s := p.Snapshot()
	if s.InFlight != 2 {
		t.Fatalf("busy members touched: %+v", s)
	}
	l1.Release()
	eventually(t, 5*time.Second, "scaled to 1", func() bool { return c.count() == 1 && len(p.Snapshot().Members) == 1 })
	if got := p.Snapshot().Members[0].Name; got != l2.Worker() {
		t.Fatalf("kept %s, want the busy %s", got, l2.Worker())
	}
	l2.Release()
	if _, _, err := call(t, p, "after"); err != nil {
		t.Fatal(err)
	}
}

func TestRollWithoutFailedCalls(t *testing.T) {
	c, b := newFakeCluster(t, 2)
	p := openPool(t, b, c, testConfig(2, 4, 2), fnVersion(1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := call(t, p, "sleep:20"); err != nil {
					t.Errorf("call during roll: %v", err)
					failures.Add(1)
				}
				calls.Add(1)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if err := p.Roll(ctx, fnVersion(2)); err != nil {
		t.Fatalf("Roll: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || calls.Load() < 20 {
		t.Fatalf("%d of %d calls failed", failures.Load(), calls.Load())
	}
	eventually(t, 5*time.Second, "old workers removed", func() bool { return c.count() == 2 })
	s := p.Snapshot()
	for _, m := range s.Members {
		if m.SHA256 != "sha-2" || m.State != StateReady {
			t.Errorf("after roll: %+v", m)
		}
	}
	if got, _, err := call(t, p, "v"); err != nil || !strings.HasSuffix(got, ":sha-2") {
		t.Fatalf("call after roll = %q, %v", got, err)
	}
}

func TestAdoptKeepsHealthyCurrentAndRemovesTheRest(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	// An earlier run left: two healthy current, one old version, one
	// current that does not answer.
	for _, v := range []int64{1, 1, 0, 1} {
		if _, err := b.StartFn(context.Background(), WorkerSpec{Function: fnVersion(v)}); err != nil {
			t.Fatal(err)
		}
	}
	c.byName("w4-v1").silent.Store(true)
	p := openPool(t, b, c, testConfig(2, 4, 1), fnVersion(1))
	s := p.Snapshot()
	if s.Counters.Adopted != 2 || s.Ready != 2 || c.starts.Load() != 4 {
		t.Fatalf("adopted %d, ready %d, starts %d; want 2, 2, 4 (no new start)", s.Counters.Adopted, s.Ready, c.starts.Load())
	}
	if c.count() != 2 || c.byName("w3-v0") != nil || c.byName("w4-v1") != nil {
		t.Fatalf("leftovers not removed: %d workers", c.count())
	}
	if _, _, err := call(t, p, "x"); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailuresBackOffAndRecover(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	c.failNext.Store(2)
	p := openPool(t, b, c, testConfig(1, 1, 1), fnVersion(1))
	if s := p.Snapshot(); s.Ready != 1 || s.Counters.StartFailed != 2 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestCloseFailsWaitersAndRemovesAll(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := New(b, testConfig(2, 2, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		t.Fatal(err)
	}
	l1, _ := p.TryAcquire()
	l2, _ := p.TryAcquire()
	errc := make(chan error, 1)
	go func() {
		_, err := p.Acquire(ctx)
		errc <- err
	}()
	eventually(t, 5*time.Second, "waiter queued", func() bool { return p.Snapshot().Waiting == 1 })
	closed := make(chan error, 1)
	go func() { closed <- p.Close(ctx) }()
	if err := <-errc; !errors.Is(err, spillway.ErrUnavailable) {
		t.Fatalf("waiter got %v, want ErrUnavailable", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with calls in flight")
	case <-time.After(50 * time.Millisecond):
	}
	l1.Release()
	l2.Release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if c.count() != 0 {
		t.Fatalf("%d workers left", c.count())
	}
	if _, err := p.Acquire(ctx); !errors.Is(err, spillway.ErrUnavailable) {
		t.Fatalf("Acquire after Close = %v", err)
	}
}

func TestOpenReportsWhyWorkersDoNotStart(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	c.failNext.Store(1 << 30)
	p := New(b, testConfig(1, 1, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := p.Open(ctx, fnVersion(1))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "fake start failure") {
		t.Fatalf("Open = %v; want the deadline and the start error", err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRollSupersededByNewerRoll(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	c.delay = 200 * time.Millisecond
	p := openPool(t, b, c, testConfig(1, 2, 1), fnVersion(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Roll(ctx, fnVersion(2)) }()
	time.Sleep(20 * time.Millisecond)
	if err := p.Roll(ctx, fnVersion(3)); err != nil {
		t.Fatalf("Roll(3): %v", err)
	}
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("Roll(2) = %v, want superseded", err)
	}
	eventually(t, 5*time.Second, "only version 3 left", func() bool {
		s := p.Snapshot()
		return len(s.Members) == 1 && s.Members[0].SHA256 == "sha-3" && s.Ready == 1
	})
}

func TestRollOnStyleChangeWithSameCode(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	fn := fnVersion(1)
	p := openPool(t, b, c, testConfig(1, 1, 1), fn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	same := fn
	same.Version = 2
	if err := p.Roll(ctx, same); err != nil {
		t.Fatal(err)
	}
	if c.starts.Load() != 1 {
		t.Fatalf("a version bump with the same code restarted workers: %d starts", c.starts.Load())
	}
	handler := fn
	handler.Version, handler.Style, handler.Handler = 3, spillway.StyleHandler, "main"
	if err := p.Roll(ctx, handler); err != nil {
		t.Fatal(err)
	}
	s := p.Snapshot()
	if c.starts.Load() != 2 || len(s.Members) != 1 || s.Members[0].Version != 3 {
		t.Fatalf("style change did not roll: %d starts, %+v", c.starts.Load(), s.Members)
	}
}

// TestChaos: callers with the gateway's retry keep calling while workers
// are killed, the pool is scaled up and down and rolled twice. No call
// fails, and afterwards the accounting is exact and nothing is left.
func TestChaos(t *testing.T) {
	c, b := newFakeCluster(t, 2)
	cfg := testConfig(2, 5, 2)
	cfg.HealthTimeout = time.Second
	p := New(b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				for range 4 {
					var l spillway.Lease
					if l, err = p.Acquire(ctx); err != nil {
						break
					}
					_, err = l.Call(ctx, "sleep:2")
					l.Release()
					if !errors.Is(err, spillway.ErrWorkerFailed) {
						break
					}
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("call: %v", err)
				}
			}
		})
	}
	kill := func() {
		s := p.Snapshot()
		for _, m := range s.Members {
			if m.State == StateReady {
				if w := c.byName(m.Name); w != nil {
					w.kill()
					return
				}
			}
		}
	}
	steps := []func(){
		kill,
		func() { p.Scale(5) },
		kill,
		func() { p.Scale(1) },
		func() { _ = p.Roll(ctx, fnVersion(2)) },
		kill,
		func() { p.Scale(4) },
		func() { _ = p.Roll(ctx, fnVersion(3)) },
		kill,
		func() { p.Scale(2) },
	}
	for _, step := range steps {
		step()
		time.Sleep(60 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls failed", failures.Load(), calls.Load())
	}
	eventually(t, 5*time.Second, "settled at 2 members of version 3", func() bool {
		s := p.Snapshot()
		if s.Ready != 2 || len(s.Members) != 2 || c.count() != 2 {
			return false
		}
		for _, m := range s.Members {
			if m.SHA256 != "sha-3" || m.InFlight != 0 {
				return false
			}
		}
		return true
	})
	s := p.Snapshot()
	t.Logf("%d calls; counters %+v", calls.Load(), s.Counters)
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if c.count() != 0 {
		t.Fatalf("%d workers left", c.count())
	}
}

func TestCloseWhileStarting(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := New(b, testConfig(1, 4, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		t.Fatal(err)
	}
	c.delay = 300 * time.Millisecond
	p.Scale(4)
	eventually(t, 5*time.Second, "starts under way", func() bool { return c.starts.Load() == 4 })
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if c.count() != 0 {
		t.Fatalf("%d workers left", c.count())
	}
}

func TestHealthEjectsRefusingMemberAtOnce(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	cfg := testConfig(1, 1, 1)
	cfg.HealthFailures = 100 // only a refused connection can eject this fast
	p := openPool(t, b, c, cfg, fnVersion(1))
	victim := p.Snapshot().Members[0].Name
	c.byName(victim).kill()
	eventually(t, 2*time.Second, "refusing member ejected", func() bool {
		for _, m := range p.Snapshot().Members {
			if m.Name == victim && m.State == StateReady {
				return false
			}
		}
		return true
	})
}

func TestOnWorkerReadyReportsEachStart(t *testing.T) {
	_, b := newFakeCluster(t, 1)
	p := New(b, testConfig(1, 3, 1))
	var mu sync.Mutex
	var startups []time.Duration
	p.OnWorkerReady = func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		startups = append(startups, d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	p.Scale(3)
	if err := p.WaitReady(ctx, 3); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "three startups reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(startups) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	for _, d := range startups {
		if d <= 0 {
			t.Errorf("startup %v, want positive", d)
		}
	}
}

func TestBusyMemberStaysAndIsTriedAgain(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(1, 1, 1), fnVersion(1))
	_, _, err := call(t, p, "busy")
	if !errors.Is(err, spillway.ErrWorkerBusy) || errors.Is(err, spillway.ErrWorkerFailed) {
		t.Fatalf("busy answer = %v, want ErrWorkerBusy and not ErrWorkerFailed", err)
	}
	// The only member is skipped for a moment, not ejected: a waiter gets
	// it when the moment passes, with no Release in between.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := p.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire after a busy answer: %v", err)
	}
	var v any
	v, err = l.Call(ctx, "x")
	l.Release()
	if err != nil || !strings.HasPrefix(fmt.Sprint(v), "w1-v1:x") {
		t.Fatalf("call after the backoff = %v, %v", v, err)
	}
	s := p.Snapshot()
	if s.Counters.Failed != 0 || s.Counters.Busy != 1 || s.Ready != 1 || c.starts.Load() != 1 {
		t.Errorf("failed %d busy %d ready %d starts %d; want 0 1 1 1", s.Counters.Failed, s.Counters.Busy, s.Ready, c.starts.Load())
	}
}

// TestFollowerServesTheControllersWorkers runs two pools on one backend,
// as two lb replicas: the follower adopts what the controller starts,
// follows its scale and roll, never starts or removes a container itself,
// and takes over when promoted.
func TestFollowerServesTheControllersWorkers(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	ctrl := openPool(t, b, c, testConfig(2, 5, 1), fnVersion(1))

	var followerActs atomic.Int64
	acting := atomic.Bool{}
	fb := &fakeBackend{
		StartFn: func(ctx context.Context, spec WorkerSpec) (Worker, error) {
			if !acting.Load() {
				followerActs.Add(1)
			}
			return b.Start(ctx, spec)
		},
		RemoveFn: func(ctx context.Context, id string) error {
			if !acting.Load() {
				followerActs.Add(1)
			}
			return b.Remove(ctx, id)
		},
		ListFn: b.List,
	}
	f := New(fb, testConfig(2, 5, 1))
	f.SetController(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Open(ctx, fnVersion(1)); err != nil {
		t.Fatalf("follower Open: %v", err)
	}
	defer f.Close(context.Background())
	readyOf := func(p *Pool, version int64) int {
		n := 0
		for _, m := range p.Snapshot().Members {
			if m.State == StateReady && m.Version == version {
				n++
			}
		}
		return n
	}
	if _, w, err := call(t, f, "x"); err != nil || w == "" {
		t.Fatalf("follower call: %q %v", w, err)
	}

	ctrl.Scale(4)
	eventually(t, 30*time.Second, "the follower serves the 4 workers", func() bool { return readyOf(f, 1) == 4 })
	f.Scale(5) // a follower's size means nothing
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	if err := f.Roll(rctx, fnVersion(2)); err != nil {
		t.Fatalf("follower Roll: %v", err)
	}
	if err := ctrl.Roll(rctx, fnVersion(2)); err != nil {
		t.Fatalf("controller Roll: %v", err)
	}
	eventually(t, 30*time.Second, "the follower serves only version 2", func() bool {
		return readyOf(f, 2) == 4 && len(f.Snapshot().Members) == 4
	})
	if n := followerActs.Load(); n != 0 {
		t.Fatalf("the follower started or removed %d containers", n)
	}

	// The controller dies without touching the workers, in the middle of
	// a start (a container of the old version); the follower is promoted,
	// removes that leftover, keeps the 4 workers and scales from there.
	if err := ctrl.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	orphan, err := b.Start(context.Background(), WorkerSpec{Function: fnVersion(1), Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	acting.Store(true)
	f.SetController(true)
	eventually(t, 30*time.Second, "the promotion completes", f.Controller)
	if d := f.Snapshot().Desired; d != 4 {
		t.Errorf("promoted desired = %d, want the 4 it serves", d)
	}
	if c.byName(orphan.Name) != nil {
		t.Errorf("the old controller's leftover %s was not removed", orphan.Name)
	}
	f.Scale(5)
	eventually(t, 30*time.Second, "the new controller starts a fifth", func() bool { return readyOf(f, 2) == 5 })
	if c.count() != 5 {
		t.Errorf("%d containers, want 5", c.count())
	}
}

// TryAcquireCounts reports the counts from before its lease, and nothing
// when the pool is full.
func TestTryAcquireCounts(t *testing.T) {
	c, b := newFakeCluster(t, 2)
	p := openPool(t, b, c, testConfig(1, 1, 2), fnVersion(1))
	l1, c1, ok := p.TryAcquireCounts()
	if !ok || c1.FreeSlots != 2 || c1.ReadySlots != 2 || c1.Ready != 1 {
		t.Fatalf("first: ok %v counts %+v", ok, c1)
	}
	l2, c2, ok := p.TryAcquireCounts()
	if !ok || c2.FreeSlots != 1 {
		t.Fatalf("second: ok %v counts %+v", ok, c2)
	}
	if l, c3, ok := p.TryAcquireCounts(); ok || l != nil || c3.FreeSlots != 0 {
		t.Fatalf("full: ok %v lease %v counts %+v", ok, l, c3)
	}
	l1.Release()
	l2.Release()
	if got := p.Counts().FreeSlots; got != 2 {
		t.Errorf("free slots after both releases = %d, want 2", got)
	}
}

// A Release that takes no lock must never strand a waiter: callers on one
// slot, each slot handed on by a lock-free Release or found free by the
// waiter that was just published.
func TestLockFreeReleaseWakesEveryWaiter(t *testing.T) {
	c, b := newFakeCluster(t, 1)
	p := openPool(t, b, c, testConfig(1, 1, 1), fnVersion(1))
	const callers, rounds = 4, 20000
	var wg sync.WaitGroup
	var done atomic.Int64
	for range callers {
		wg.Go(func() {
			for range rounds {
				// A stranded waiter waits for ever: a few seconds tell.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				l, err := p.Acquire(ctx)
				cancel()
				if err != nil {
					t.Errorf("acquire: %v (a waiter was stranded)", err)
					return
				}
				l.Release()
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if done.Load() != callers*rounds {
		t.Fatalf("%d of %d acquires", done.Load(), callers*rounds)
	}
	if s := p.Snapshot(); s.InFlight != 0 || s.Waiting != 0 || p.Counts().FreeSlots != 1 {
		t.Errorf("after the run: in flight %d, waiting %d, free %d", s.InFlight, s.Waiting, p.Counts().FreeSlots)
	}
}

// The gateway takes a slot and the counts with one lock through this.
var _ interface {
	TryAcquireCounts() (spillway.Lease, spillway.PoolCounts, bool)
} = (*Pool)(nil)
