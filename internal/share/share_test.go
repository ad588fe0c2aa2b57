package share

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
)

// clock is a hand-moved clock, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// pool is a function's pool as lb drives it: it moves to what Target
// returns at once.
type pool struct {
	name string
	size int
}

func (p *pool) tick(t *testing.T, l *Ledger, want, inFlight int) int {
	t.Helper()
	p.size = l.Target(p.name, want, p.size, inFlight)
	return p.size
}

// TestTakeFromIdle is the rule end to end: a function that grew and went
// idle gives its workers to one that needs them, once it has been idle
// IdleAfter; the needy one gets them on the tick after the idle one shrank.
func TestTakeFromIdle(t *testing.T) {
	c := newClock()
	l := New(4, c.now)
	l.Join("a", 1, 4)
	l.Join("b", 1, 4)
	a, b := &pool{name: "a", size: 1}, &pool{name: "b", size: 1}

	// a's burst: it grows into the free capacity.
	l.Arrived("a")
	if got := a.tick(t, l, 3, 3); got != 3 {
		t.Fatalf("a under the cap: got %d, want 3", got)
	}
	if got := l.Limit("b"); got != 1 {
		t.Fatalf("b's limit with the cap full: %d, want 1", got)
	}
	// b's burst right after: a's last call is too recent to take from it.
	c.advance(500 * time.Millisecond)
	l.Arrived("b")
	if got := b.tick(t, l, 3, 3); got != 1 {
		t.Fatalf("b while a is busy: got %d, want 1", got)
	}
	if got := a.tick(t, l, 3, 0); got != 3 {
		t.Fatalf("a, idle for 0.5s: got %d, want it to keep 3", got)
	}
	// a idle past IdleAfter: b's tick marks it, a shrinks at its own tick.
	c.advance(time.Second)
	l.Arrived("b")
	if got := b.tick(t, l, 3, 3); got != 1 {
		t.Fatalf("b before a shrank: got %d, want 1 (the cap is full)", got)
	}
	if got := a.tick(t, l, 3, 0); got != 1 {
		t.Fatalf("a, idle for 1.5s: got %d, want 1 (its min)", got)
	}
	if got := b.tick(t, l, 3, 3); got != 1 {
		t.Fatalf("b before a reported its smaller size: got %d, want 1", got)
	}
	if got := a.tick(t, l, 1, 0); got != 1 {
		t.Fatalf("a reporting 1: got %d, want 1", got)
	}
	if got := b.tick(t, l, 3, 3); got != 3 {
		t.Fatalf("b after a shrank: got %d, want 3", got)
	}
	if held, total := l.Held(); held != 4 || total != 4 {
		t.Fatalf("Held = %d of %d, want 4 of 4", held, total)
	}
	st := l.Standings()
	if len(st) != 2 || st[0].Name != "a" || st[0].Allotted != 1 || st[1].Workers != 1 || st[1].Allotted != 3 || st[1].LastCall.IsZero() {
		t.Fatalf("Standings = %+v", st)
	}
}

func TestJoinLeave(t *testing.T) {
	c := newClock()
	l := New(4, c.now)
	if got := l.Target("unknown", 3, 1, 0); got != 3 {
		t.Fatalf("Target of a function that did not join = %d, want its wish 3", got)
	}
	if got := l.Limit("unknown"); got != 0 {
		t.Fatalf("Limit of a function that did not join = %d, want 0", got)
	}
	l.Arrived("unknown") // no panic, no entry
	l.Join("a", 1, 8)
	a := &pool{name: "a", size: 1}
	if got := a.tick(t, l, 8, 8); got != 4 {
		t.Fatalf("a alone: %d, want the cap 4", got)
	}
	// b joins with min 2: mins are granted, a gives the excess back.
	l.Join("b", 2, 4)
	if got := l.Limit("b"); got != 2 {
		t.Fatalf("b's limit: %d, want its min 2", got)
	}
	if got := a.tick(t, l, 8, 8); got != 2 {
		t.Fatalf("a after b joined with min 2: %d, want 2", got)
	}
	// b's min rises past the cap: a goes to its min, b keeps its min.
	l.Join("b", 4, 4)
	if got := a.tick(t, l, 8, 8); got != 1 {
		t.Fatalf("a after b's min became 4: %d, want its min 1", got)
	}
	if held, _ := l.Held(); held != 6 {
		t.Fatalf("held %d, want 6 (a counts 2 until it reports its smaller size)", held)
	}
	if got := a.tick(t, l, 8, 8); got != 1 {
		t.Fatalf("a again: %d, want 1", got)
	}
	if held, _ := l.Held(); held != 5 {
		t.Fatalf("held %d, want 5 (both mins)", held)
	}
	// b leaves: its workers stop counting.
	l.Leave("b")
	l.Leave("b")
	if got := l.Limit("a"); got != 4 {
		t.Fatalf("a's limit after b left: %d, want 4", got)
	}
	if got := a.tick(t, l, 8, 8); got != 4 {
		t.Fatalf("a after b left: %d, want 4", got)
	}
	if st := l.Standings(); len(st) != 1 || st[0].Name != "a" {
		t.Fatalf("Standings after Leave = %+v", st)
	}
}

// TestCapHeldConcurrently runs many functions' elasticity loops at once,
// each pool moving to what Target returned, with random wishes and
// arrivals, and checks that the workers of all pools together never exceed
// the cap.
func TestCapHeldConcurrently(t *testing.T) {
	const total, fns, ticks = 10, 6, 400
	c := newClock()
	for _, rule := range []policy.ShareRule{policy.DefaultShareRule, {Moves: 1, TakeBusy: true}} {
		l := NewRule(total, rule, c.now)
		var sum atomic.Int64
		sum.Add(fns) // every pool starts at its min, 1
		var wg sync.WaitGroup
		var over atomic.Int64
		for i := range fns {
			l.Join(fmt.Sprint("f", i), 1, 6)
		}
		for i := range fns {
			name := fmt.Sprint("f", i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				size := 1
				for range ticks {
					if rng.IntN(3) == 0 {
						l.Arrived(name)
					}
					c.advance(time.Duration(rng.IntN(500)) * time.Millisecond)
					got := l.Target(name, rng.IntN(8), size, rng.IntN(3))
					if got < 1 || got > 6 {
						t.Errorf("%s: size %d outside [1, 6]", name, got)
					}
					if s := sum.Add(int64(got - size)); s > total {
						over.Add(1)
					}
					size = got
					_ = l.Limit(name)
				}
			}()
		}
		wg.Wait()
		if n := over.Load(); n != 0 {
			t.Fatalf("%+v: the pools exceeded the cap %d times", rule, n)
		}
		if held, _ := l.Held(); held < int(sum.Load()) || held > total {
			t.Fatalf("%+v: ledger holds %d, pools have %d, cap %d", rule, held, sum.Load(), total)
		}
	}
}

func BenchmarkArrived(b *testing.B) {
	l := New(100, time.Now)
	for i := range 100 {
		l.Join(fmt.Sprint("f", i), 1, 8)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Arrived("f42")
		}
	})
}

// TestStatus: status() shows the cap, what is held and each function's
// standing, with its idle time (-1 before any call); no cap, no section.
func TestStatus(t *testing.T) {
	if st := New(0, time.Now).Status(); st != nil {
		t.Fatalf("no cap: Status = %+v, want nil", st)
	}
	c := newClock()
	l := New(4, c.now)
	l.Join("a", 1, 4)
	l.Join("b", 0, 2)
	a := &pool{name: "a", size: 1}
	l.Arrived("a")
	a.tick(t, l, 3, 3)
	c.advance(2500 * time.Millisecond)
	st := l.Status()
	want := spillway.ShareStatus{MaxTotalWorkers: 4, Held: 3, Functions: []spillway.ShareStanding{
		{Name: "a", Min: 1, Max: 4, Workers: 1, Want: 3, Allotted: 3, Limit: 4, IdleSeconds: 2.5},
		{Name: "b", Min: 0, Max: 2, Workers: 0, Want: 0, Allotted: 0, Limit: 1, IdleSeconds: -1},
	}}
	if st == nil || st.MaxTotalWorkers != want.MaxTotalWorkers || st.Held != want.Held || !slices.Equal(st.Functions, want.Functions) {
		t.Fatalf("Status = %+v\nwant %+v", st, want)
	}
}
