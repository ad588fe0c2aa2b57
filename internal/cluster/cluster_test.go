package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/testutil"
)

func mustRedis(t *testing.T) *redis.Client {
	t.Helper()
	srv := testutil.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func mustTick(t *testing.T, l *Lease, now time.Time) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held, err := l.Tick(ctx, now)
	if err != nil {
		t.Fatalf("tick %s: %v", l.id, err)
	}
	return held
}

func TestLease(t *testing.T) {
	rdb := mustRedis(t)
	ctx := context.Background()
	// Long enough that a stalled moment on a loaded machine never lets a
	// renewed lease expire between two steps of a test.
	const ttl = 3 * time.Second

	tests := []struct {
		name string
		run  func(t *testing.T, pool string)
	}{
		{"first taker holds, a second does not", func(t *testing.T, pool string) {
			a, b := NewLease(rdb, pool, "a", ttl), NewLease(rdb, pool, "b", ttl)
			now := time.Now()
			if !mustTick(t, a, now) || mustTick(t, b, now) {
				t.Fatal("want a to hold and b not")
			}
			if id, gen, _ := Holder(ctx, rdb, pool); id != "a" || gen != 1 {
				t.Fatalf("holder = %s gen %d, want a gen 1", id, gen)
			}
			if err := a.Check(ctx, rdb, a.Generation()); err != nil {
				t.Errorf("holder's fence: %v", err)
			}
			if err := b.Check(ctx, rdb, b.Generation()); !errors.Is(err, ErrNotController) {
				t.Errorf("non-holder's fence = %v, want ErrNotController", err)
			}
		}},
		{"renewal keeps the lease past its ttl", func(t *testing.T, pool string) {
			a, b := NewLease(rdb, pool, "a", ttl), NewLease(rdb, pool, "b", ttl)
			mustTick(t, a, time.Now())
			for range 4 {
				time.Sleep(ttl / 3)
				if !mustTick(t, a, time.Now()) {
					t.Fatal("holder lost the lease while renewing")
				}
				if mustTick(t, b, time.Now()) {
					t.Fatal("b took a renewed lease")
				}
			}
		}},
		{"a holder that stops renewing loses it; the next generation fences it", func(t *testing.T, pool string) {
			a, b := NewLease(rdb, pool, "a", ttl), NewLease(rdb, pool, "b", ttl)
			mustTick(t, a, time.Now())
			stale := a.Generation()
			var took time.Time
			waitFor(t, 30*time.Second, "b takes the expired lease", func() bool {
				took = time.Now()
				return mustTick(t, b, took)
			})
			if b.Generation() != stale+1 {
				t.Errorf("b's generation %d, want %d", b.Generation(), stale+1)
			}
			// a wakes up: its fence and its renewal both fail.
			if err := a.Check(ctx, rdb, stale); !errors.Is(err, ErrNotController) {
				t.Errorf("stale holder's fence = %v, want ErrNotController", err)
			}
			if mustTick(t, a, time.Now()) {
				t.Error("stale holder renewed the new holder's lease")
			}
			if a.Held(time.Now()) {
				t.Error("stale holder still thinks it holds")
			}
			if id, _, _ := Holder(ctx, rdb, pool); id != "b" {
				t.Errorf("holder = %q, want b", id)
			}
		}},
		{"release hands over at once", func(t *testing.T, pool string) {
			a, b := NewLease(rdb, pool, "a", time.Hour), NewLease(rdb, pool, "b", time.Hour)
			mustTick(t, a, time.Now())
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if !mustTick(t, b, time.Now()) {
				t.Fatal("b did not take a released lease")
			}
			// a's release of a lease it no longer holds leaves b's alone.
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Check(ctx, rdb, b.Generation()); err != nil {
				t.Errorf("b's fence after a's second release: %v", err)
			}
		}},
		{"local deadline: a holder cut off from Redis stops acting after ttl", func(t *testing.T, pool string) {
			a := NewLease(rdb, pool, "a", ttl)
			now := time.Now()
			mustTick(t, a, now)
			if !a.Held(now.Add(ttl / 2)) {
				t.Error("not held within ttl")
			}
			if a.Held(now.Add(ttl)) {
				t.Error("held past ttl without a renewal")
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, fmt.Sprintf("p%d", i)) })
	}
}

// naiveLease is the lease without its protection: read, then set, as two
// steps. between runs after the read, so a test can force the interleaving.
type naiveLease struct {
	rdb     *redis.Client
	key, id string
	between func()
}

func (n *naiveLease) tick(ctx context.Context) (bool, error) {
	v, err := n.rdb.Get(ctx, n.key).Result()
	if err == nil {
		return v == n.id, nil
	}
	if !errors.Is(err, redis.Nil) {
		return false, err
	}
	n.between()
	if err := n.rdb.Set(ctx, n.key, n.id, time.Minute).Err(); err != nil {
		return false, err
	}
	return true, nil
}

// TestLeaseRace forces every replica to try for a free lease at the same
// moment, round after round, and counts the winners. The lease admits one;
// the naive read-then-set lease, with the same race forced, admits several:
// two controllers.
func TestLeaseRace(t *testing.T) {
	rdb := mustRedis(t)
	const replicas, rounds = 8, 30
	ctx := context.Background()

	t.Run("lease", func(t *testing.T) {
		leases := make([]*Lease, replicas)
		for i := range leases {
			leases[i] = NewLease(rdb, "race", fmt.Sprintf("lb%d", i), time.Minute)
		}
		for round := range rounds {
			var start sync.WaitGroup
			start.Add(1)
			var wg sync.WaitGroup
			var winners atomic.Int32
			for _, l := range leases {
				wg.Go(func() {
					start.Wait()
					held, err := l.Tick(ctx, time.Now())
					if err != nil {
						t.Error(err)
					}
					if held {
						winners.Add(1)
					}
				})
			}
			start.Done()
			wg.Wait()
			fenced := 0
			for _, l := range leases {
				if l.Check(ctx, rdb, l.Generation()) == nil {
					fenced++
				}
			}
			if winners.Load() != 1 || fenced != 1 {
				t.Fatalf("round %d: %d replicas hold the lease, %d pass the fence; want 1 and 1", round, winners.Load(), fenced)
			}
			for _, l := range leases {
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	t.Run("naive lease (protection off) elects several", func(t *testing.T) {
		// Every replica reads "free" before any writes: the race a loaded
		// machine produces now and then, forced here every round.
		var most int32
		for round := range rounds {
			rdb.Del(ctx, "naive")
			var read sync.WaitGroup
			read.Add(replicas)
			var wg sync.WaitGroup
			var winners atomic.Int32
			for i := range replicas {
				n := &naiveLease{rdb: rdb, key: "naive", id: fmt.Sprintf("lb%d", i), between: func() {
					read.Done()
					read.Wait()
				}}
				wg.Go(func() {
					held, err := n.tick(ctx)
					if err != nil {
						t.Error(err)
					}
					if held {
						winners.Add(1)
					}
				})
			}
			wg.Wait()
			most = max(most, winners.Load())
			_ = round
		}
		if most < 2 {
			t.Fatalf("the naive lease never elected two controllers (most %d); the race was not forced", most)
		}
		t.Logf("naive lease: up to %d controllers at once", most)
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReplicas(t *testing.T) {
	rdb := mustRedis(t)
	// The lease lives 2 ticks: long enough that a stalled moment on a loaded
	// machine does not move the controller in the middle of the checks.
	const tick = 500 * time.Millisecond
	type rep struct {
		*Replica
		changes atomic.Int32
	}
	open := func(id string, load spillway.Load) *rep {
		r := &rep{}
		var err error
		r.Replica, err = Open(context.Background(), rdb, Config{
			Pool: "pool", ID: id, Addr: id + ":8000", Tick: tick,
			Load:         func() map[string]spillway.Load { return map[string]spillway.Load{"faas": load} },
			OnController: func(bool) { r.changes.Add(1) },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(context.Background()) })
		return r
	}
	a := open("a", spillway.Load{InFlight: 3, Queued: 1, ArrivalRate: 10})
	b := open("b", spillway.Load{InFlight: 2, Queued: 4, ArrivalRate: 5})
	c := open("c", spillway.Load{InFlight: 1, ArrivalRate: 1})
	all := []*rep{a, b, c}

	if !a.Controller() || b.Controller() || c.Controller() {
		t.Fatal("want a, the first to open, as the one controller")
	}
	waitFor(t, 10*time.Second, "every replica sees the two others", func() bool {
		return len(a.Peers()) == 2 && len(b.Peers()) == 2 && len(c.Peers()) == 2
	})
	if got, want := a.OthersLoad("faas"), (spillway.Load{InFlight: 3, Queued: 4, ArrivalRate: 6}); got != want {
		t.Errorf("a's view of the others' load = %+v, want %+v", got, want)
	}
	if got := a.OthersLoad("other"); got != (spillway.Load{}) {
		t.Errorf("load of a function nobody serves = %+v", got)
	}

	// The controller leaves: exactly one of the others takes over.
	others, err := a.Close(context.Background())
	if err != nil || others != 2 {
		t.Fatalf("close a: %d others, %v; want 2", others, err)
	}
	waitFor(t, 10*time.Second, "b or c takes over", func() bool { return b.Controller() || c.Controller() })
	if b.Controller() && c.Controller() {
		t.Fatal("two controllers")
	}
	if a.Controller() {
		t.Fatal("a closed and still controller")
	}
	next, last := b, c
	if c.Controller() {
		next, last = c, b
	}
	if g := next.Generation(); g != 2 {
		t.Errorf("new controller's generation %d, want 2", g)
	}
	if err := next.Fence(context.Background()); err != nil {
		t.Errorf("new controller's fence: %v", err)
	}
	if err := last.Fence(context.Background()); !errors.Is(err, ErrNotController) {
		t.Errorf("follower's fence = %v, want ErrNotController", err)
	}
	// Only the controller publishes the cloud deployment; a follower (or a
	// controller that lost the lease) cannot overwrite it.
	if err := next.Function("faas").PublishCloud(context.Background(), []byte("v2")); err != nil {
		t.Fatalf("controller publish: %v", err)
	}
	if err := last.Function("faas").PublishCloud(context.Background(), []byte("stale")); !errors.Is(err, ErrNotController) {
		t.Errorf("follower publish = %v, want ErrNotController", err)
	}
	if err := a.Function("faas").PublishCloud(context.Background(), []byte("stale")); !errors.Is(err, ErrNotController) {
		t.Errorf("former controller publish = %v, want ErrNotController", err)
	}
	if b, err := last.Function("faas").ReadCloud(context.Background()); err != nil || string(b) != "v2" {
		t.Errorf("follower reads %q, %v; want v2", b, err)
	}
	// Each function has its own deployment record.
	if b, err := last.Function("hello").ReadCloud(context.Background()); err != nil || b != nil {
		t.Errorf("another function's deployment reads %q, %v; want none", b, err)
	}
	waitFor(t, 10*time.Second, "a's report withdrawn", func() bool { return len(last.Peers()) == 1 })

	// The last two leave in turn; the very last learns it is alone.
	if others, err := next.Close(context.Background()); err != nil || others != 1 {
		t.Fatalf("close %s: %d others, %v; want 1", next.ID(), others, err)
	}
	waitFor(t, 10*time.Second, "the last replica takes over", last.Controller)
	if others, err := last.Close(context.Background()); err != nil || others != 0 {
		t.Fatalf("close the last: %d others, %v; want 0", others, err)
	}
	for _, r := range all {
		if r.Controller() {
			t.Errorf("%s is controller after close", r.ID())
		}
	}
	if a.changes.Load() != 2 {
		t.Errorf("a saw %d controller changes, want 2 (became, then Close)", a.changes.Load())
	}
}
