package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// fakeUnit records what the fleet did to it.
type fakeUnit struct {
	name     string
	mu       sync.Mutex
	versions []int64 // started with, then each Update
	closed   bool
	removed  bool
}

func (u *fakeUnit) Update(fn spillway.Function) {
	u.mu.Lock()
	u.versions = append(u.versions, fn.Version)
	u.mu.Unlock()
}

func (u *fakeUnit) Close(ctx context.Context, remove bool) error {
	u.mu.Lock()
	u.closed, u.removed = true, remove
	u.mu.Unlock()
	return nil
}

func (u *fakeUnit) state() (versions []int64, closed, removed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.versions), u.closed, u.removed
}

// world is a fleet with fake units and a log of the hooks.
type world struct {
	t     *testing.T
	f     *Fleet
	mu    sync.Mutex
	units []*fakeUnit
	log   []string
	// block, when set for a name, holds its Start until closed.
	block map[string]chan struct{}
	fail  map[string]int // starts of a name that fail before one succeeds
}

func newWorld(t *testing.T, sel func(string) bool) *world {
	w := &world{t: t, block: map[string]chan struct{}{}, fail: map[string]int{}}
	w.f = New(Config{
		Select:   sel,
		RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond,
		Start: func(ctx context.Context, fn spillway.Function) (Unit, error) {
			w.mu.Lock()
			b := w.block[fn.Name]
			if w.fail[fn.Name] > 0 {
				w.fail[fn.Name]--
				w.mu.Unlock()
				return nil, errors.New("docker says no")
			}
			w.mu.Unlock()
			if b != nil {
				select {
				case <-b:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			u := &fakeUnit{name: fn.Name, versions: []int64{fn.Version}}
			w.mu.Lock()
			w.units = append(w.units, u)
			w.mu.Unlock()
			return u, nil
		},
		Hooks: Hooks{
			Starting: func(n string) { w.note("starting " + n) },
			Serving:  func(n string, _ Unit) { w.note("serving " + n) },
			Leaving:  func(n string, del bool) { w.note(fmt.Sprintf("leaving %s deleted=%v", n, del)) },
			Failed:   func(n string, err error) { w.note("failed " + n) },
		},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.f.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return w
}

func (w *world) note(s string) {
	w.mu.Lock()
	w.log = append(w.log, s)
	w.mu.Unlock()
}

func (w *world) saw(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Contains(w.log, s)
}

func (w *world) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.log {
		if l == s {
			n++
		}
	}
	return n
}

func (w *world) unitsOf(name string) []*fakeUnit {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*fakeUnit
	for _, u := range w.units {
		if u.name == name {
			out = append(out, u)
		}
	}
	return out
}

func (w *world) eventually(what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			w.mu.Lock()
			w.t.Fatalf("%s: not within 10s; hooks: %v", what, w.log)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func fn(name string, version int64) Change {
	return Change{Function: spillway.Function{Name: name, Version: version}}
}

func deleted(name string) Change {
	return Change{Function: spillway.Function{Name: name}, Deleted: true}
}

func TestFleetStartsOneUnitPerFunctionAndRollsItsVersions(t *testing.T) {
	w := newWorld(t, nil)
	w.f.Apply(fn("faas", 1))
	w.f.Apply(fn("hello", 1))
	w.eventually("both served", func() bool { return w.saw("serving faas") && w.saw("serving hello") })
	w.f.Apply(fn("faas", 2))
	w.f.Apply(fn("faas", 1)) // an older version arriving late is ignored
	w.f.Apply(fn("faas", 3))
	w.eventually("faas at v3", func() bool {
		v, _, _ := w.unitsOf("faas")[0].state()
		return v[len(v)-1] == 3
	})
	if n := len(w.unitsOf("faas")); n != 1 {
		t.Errorf("faas has %d units, want one rolled in place", n)
	}
	v, _, _ := w.unitsOf("faas")[0].state()
	if !slices.IsSorted(v) {
		t.Errorf("faas versions %v: want only newer versions handed over", v)
	}
	if v, _, _ := w.unitsOf("hello")[0].state(); !slices.Equal(v, []int64{1}) {
		t.Errorf("hello versions %v: another function's versions must not reach it", v)
	}
}

func TestFleetDeleteClosesWithRemovalAndRepublishStartsAfresh(t *testing.T) {
	w := newWorld(t, nil)
	w.f.Apply(fn("faas", 1))
	w.f.Apply(fn("hello", 1))
	w.eventually("served", func() bool { return w.saw("serving faas") && w.saw("serving hello") })
	w.f.Apply(deleted("hello"))
	w.eventually("hello closed", func() bool { _, c, _ := w.unitsOf("hello")[0].state(); return c })
	if _, _, removed := w.unitsOf("hello")[0].state(); !removed {
		t.Error("a deleted function's unit closed without removal")
	}
	if !w.saw("leaving hello deleted=true") {
		t.Error("no leaving hook for the deletion")
	}
	if _, closed, _ := w.unitsOf("faas")[0].state(); closed {
		t.Error("deleting hello closed faas")
	}
	// Published again: a new unit, after the old one closed.
	w.f.Apply(fn("hello", 2))
	w.eventually("hello served again", func() bool { return len(w.unitsOf("hello")) == 2 && w.count("serving hello") == 2 })
}

func TestFleetCloseKeepsFunctions(t *testing.T) {
	w := newWorld(t, nil)
	w.f.Apply(fn("faas", 1))
	w.eventually("served", func() bool { return w.saw("serving faas") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, closed, removed := w.unitsOf("faas")[0].state(); !closed || removed {
		t.Errorf("lb leaving: closed=%v removed=%v, want closed without removal", closed, removed)
	}
	w.f.Apply(fn("late", 1)) // after Close nothing starts
	time.Sleep(20 * time.Millisecond)
	if len(w.unitsOf("late")) != 0 {
		t.Error("a unit started after Close")
	}
}

func TestFleetSelectsFunctions(t *testing.T) {
	w := newWorld(t, func(n string) bool { return n == "faas" })
	w.f.Apply(fn("other", 1))
	w.f.Apply(fn("faas", 1))
	w.eventually("faas served", func() bool { return w.saw("serving faas") })
	if w.saw("starting other") {
		t.Error("a function FUNCTIONS does not select was started")
	}
}

func TestFleetSlowStartHoldsUpNoOtherFunction(t *testing.T) {
	w := newWorld(t, nil)
	w.block["slow"] = make(chan struct{})
	w.f.Apply(fn("slow", 1))
	w.f.Apply(fn("fast", 1))
	w.eventually("fast served while slow starts", func() bool { return w.saw("serving fast") })
	if w.saw("serving slow") {
		t.Fatal("slow served before its start returned")
	}
	// Deleted while starting: its start is cancelled, nothing serves.
	w.f.Apply(deleted("slow"))
	w.eventually("slow left", func() bool { return w.saw("leaving slow deleted=true") })
	if len(w.unitsOf("slow")) != 0 {
		t.Error("a function deleted while starting got a unit")
	}
}

func TestFleetRetriesFailedStartWithTheNewestVersion(t *testing.T) {
	w := newWorld(t, nil)
	w.fail["faas"] = 3
	w.f.Apply(fn("faas", 1))
	w.eventually("first failure", func() bool { return w.saw("failed faas") })
	w.f.Apply(fn("faas", 2))
	w.eventually("served", func() bool { return w.saw("serving faas") })
	v, _, _ := w.unitsOf("faas")[0].state()
	if v[len(v)-1] != 2 {
		t.Errorf("versions %v: want the unit at v2, the newest published", v)
	}
	if n := w.count("failed faas"); n != 3 {
		t.Errorf("%d failures reported, want 3", n)
	}
}
