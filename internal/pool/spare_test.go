package pool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// freezingBackend is a fake backend that freezes: a frozen worker's health
// hangs and List reports it not running, as the engine does for a paused
// container.
type freezingBackend struct {
	*fakeBackend
	c        *fakeCluster
	ThawFail func(id string) error // nil: thaws succeed

	mu     sync.Mutex // guards frozen
	frozen map[string]bool
}

var _ Freezer = (*freezingBackend)(nil)

func newFreezingBackend(t *testing.T) (*fakeCluster, *freezingBackend) {
	c, b := newFakeCluster(t, 1)
	f := &freezingBackend{fakeBackend: b, c: c, frozen: map[string]bool{}}
	list := b.ListFn
	b.ListFn = func(ctx context.Context) ([]Worker, error) {
		ws, err := list(ctx)
		f.mu.Lock()
		defer f.mu.Unlock()
		for i := range ws {
			if f.frozen[ws[i].ID] {
				ws[i].Running, ws[i].Addr = false, ""
			}
		}
		return ws, err
	}
	return c, f
}

func (f *freezingBackend) worker(id string) *fakeWorker {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	return f.c.workers[id]
}

func (f *freezingBackend) Freeze(ctx context.Context, id string) error {
	w := f.worker(id)
	if w == nil {
		return errors.New("no such worker")
	}
	f.mu.Lock()
	f.frozen[id] = true
	f.mu.Unlock()
	w.silent.Store(true)
	return nil
}

func (f *freezingBackend) Thaw(ctx context.Context, id string) error {
	if f.ThawFail != nil {
		if err := f.ThawFail(id); err != nil {
			return err
		}
	}
	w := f.worker(id)
	if w == nil {
		return errors.New("no such worker")
	}
	f.mu.Lock()
	delete(f.frozen, id)
	f.mu.Unlock()
	w.silent.Store(false)
	return nil
}

func spareConfig() Config {
	cfg := testConfig(0, 2, 1)
	cfg.Spare = true
	return cfg
}

// TestSpareTakenByTheNextStart: the spare is no member; the next start is
// the spare, thawed, and another spare follows.
func TestSpareTakenByTheNextStart(t *testing.T) {
	c, b := newFreezingBackend(t)
	p := openPool(t, b, c, spareConfig(), fnVersion(1))
	eventually(t, 5*time.Second, "a spare", func() bool { return p.Snapshot().Spare != "" })
	first := p.Snapshot().Spare
	if n := len(p.Snapshot().Members); n != 0 {
		t.Fatalf("%d members with a spare only, want 0", n)
	}
	p.Scale(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := p.Snapshot().Members[0].Name; got != first {
		t.Errorf("new member %s, want the spare %s", got, first)
	}
	eventually(t, 5*time.Second, "the next spare", func() bool {
		s := p.Snapshot().Spare
		return s != "" && s != first
	})
	if n := c.starts.Load(); n != 2 {
		t.Errorf("%d containers started, want 2: the spare and the next one", n)
	}
}

// TestSpareThawFailureStartsAContainer: a spare that does not thaw is
// removed and the start goes on with a new container.
func TestSpareThawFailureStartsAContainer(t *testing.T) {
	c, b := newFreezingBackend(t)
	b.ThawFail = func(string) error { return errors.New("fake unpause failure") }
	p := openPool(t, b, c, spareConfig(), fnVersion(1))
	eventually(t, 5*time.Second, "a spare", func() bool { return p.Snapshot().Spare != "" })
	broken := p.Snapshot().Spare
	p.Scale(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx, 1); err != nil {
		t.Fatalf("no worker after the spare failed to thaw: %v", err)
	}
	if got := p.Snapshot().Members[0].Name; got == broken {
		t.Errorf("the member is the spare that did not thaw")
	}
	eventually(t, 5*time.Second, "the broken spare removed", func() bool { return c.byName(broken) == nil })
	if n := p.Snapshot().Counters.StartFailed; n != 0 {
		t.Errorf("%d failed starts, want 0", n)
	}
}

// TestSpareOnlyOnTheController: a follower keeps no spare; promoted, it
// makes one; demoted, it removes its own.
func TestSpareOnlyOnTheController(t *testing.T) {
	c, b := newFreezingBackend(t)
	p := New(b, spareConfig())
	p.SetController(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := c.count(); n != 0 {
			t.Errorf("%d workers left after Close", n)
		}
	}()
	time.Sleep(3 * reconcileTick)
	if n := c.starts.Load(); n != 0 {
		t.Fatalf("a follower started %d containers", n)
	}
	p.SetController(true)
	eventually(t, 5*time.Second, "a spare on the controller", func() bool { return p.Snapshot().Spare != "" })
	p.SetController(false)
	eventually(t, 5*time.Second, "the demoted replica's spare removed", func() bool {
		return p.Snapshot().Spare == "" && c.count() == 0
	})
}
