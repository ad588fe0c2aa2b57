// Package fleet keeps one serving unit per function: it starts a unit for
// each function the registry announces (and FUNCTIONS selects), hands it
// each new version, and closes it when the function is deleted or lb
// leaves. What a unit is (a pool, a rollout, a gateway, a Lambda) is
// cmd/lb's: the fleet only decides when units start and stop, so one
// function's slow start, failure or deletion never holds up another's.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
)

// Change is one function's news: a version published, or the function
// deleted (internal/registry.Change).
type Change struct {
	Function spillway.Function
	Deleted  bool
}

// Unit serves one function.
type Unit interface {
	// Update hands the unit a newer version to roll to.
	Update(fn spillway.Function)
	// Close stops serving. remove is true when the function was deleted:
	// its workers and cloud resources go too.
	Close(ctx context.Context, remove bool) error
}

// Starter starts a unit for fn, returning once it serves; ctx ends when
// the function is deleted or lb leaves while it starts. On error it has
// released whatever it made.
type Starter func(ctx context.Context, fn spillway.Function) (Unit, error)

// Hooks learn each function's state; nil hooks are skipped. They are
// called from the function's own goroutine, in order for one function.
type Hooks struct {
	Starting func(name string)           // a unit is being started
	Serving  func(name string, u Unit)   // the unit serves
	Leaving  func(name string, del bool) // the unit is about to close (del: the function was deleted)
	Failed   func(name string, err error)
}

// Config sets a fleet.
type Config struct {
	// Select says whether lb serves a function (FUNCTIONS); nil: all.
	Select func(name string) bool
	Start  Starter
	Hooks  Hooks
	// CloseTimeout bounds closing one unit after a deletion (its calls
	// drain, its workers and cloud resources go). Default one minute.
	CloseTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between failed starts;
	// defaults 1 s and 30 s.
	RetryMin, RetryMax time.Duration
	Log                *slog.Logger
}

// Fleet owns the units. Build it with New, run it with Run, stop it with
// Close.
type Fleet struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // ends at Close: every member stops
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	members map[string]*member
	// closed are the done channels of members that are closing, so that a
	// function published again waits for its old unit to go first.
	closed map[string]chan struct{}
	errs   []error
}

// member is one function's owner goroutine and what reaches it.
type member struct {
	name    string
	updates chan spillway.Function // the newest version not yet handed over (cap 1)
	deleted chan struct{}          // closed when the function is deleted
	done    chan struct{}          // closed when the unit is closed
}

// New builds a fleet.
func New(cfg Config) *Fleet {
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = time.Minute
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Fleet{cfg: cfg, log: cfg.Log, ctx: ctx, cancel: cancel,
		members: map[string]*member{}, closed: map[string]chan struct{}{}}
}

// Run applies changes until ctx ends or changes is closed; the units keep
// serving until Close.
func (f *Fleet) Run(ctx context.Context, changes <-chan Change) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			f.Apply(c)
		}
	}
}

// Apply takes one change.
func (f *Fleet) Apply(c Change) {
	name := c.Function.Name
	if name == "" || (f.cfg.Select != nil && !f.cfg.Select(name)) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx.Err() != nil {
		return
	}
	m := f.members[name]
	switch {
	case c.Deleted && m != nil:
		delete(f.members, name)
		f.closed[name] = m.done
		close(m.deleted)
	case c.Deleted:
	case m != nil:
		m.offer(c.Function)
	default:
		m = &member{name: name, updates: make(chan spillway.Function, 1),
			deleted: make(chan struct{}), done: make(chan struct{})}
		f.members[name] = m
		prev := f.closed[name]
		delete(f.closed, name)
		f.wg.Add(1)
		go f.own(m, c.Function, prev)
	}
}

// offer hands fn over, replacing an older version not yet taken.
func (m *member) offer(fn spillway.Function) {
	for {
		select {
		case m.updates <- fn:
			return
		default:
		}
		select {
		case old := <-m.updates:
			if old.Version > fn.Version {
				fn = old
			}
		default:
		}
	}
}

// Names are the functions with a unit (starting or serving), unordered.
func (f *Fleet) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.members))
	for n := range f.members {
		out = append(out, n)
	}
	return out
}

// Close stops every unit (their functions stay published: remove=false)
// and waits for them, or for ctx.
func (f *Fleet) Close(ctx context.Context) error {
	f.mu.Lock()
	f.cancel()
	f.mu.Unlock()
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("close the function units: %w", ctx.Err())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

// own runs one function's unit from start to close.
func (f *Fleet) own(m *member, fn spillway.Function, prev <-chan struct{}) {
	defer f.wg.Done()
	defer close(m.done)
	if prev != nil {
		// The function's previous unit is still closing (deleted and
		// published again): its workers and cloud resources go first.
		select {
		case <-prev:
		case <-f.ctx.Done():
			return
		}
	}
	// ctx ends when the function is deleted or the fleet closes.
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	go func() {
		select {
		case <-m.deleted:
			cancel()
		case <-ctx.Done():
		}
	}()
	hook(f.cfg.Hooks.Starting, m.name)
	u, fn := f.start(ctx, m, fn)
	if u == nil {
		if f.cfg.Hooks.Leaving != nil {
			f.cfg.Hooks.Leaving(m.name, isClosed(m.deleted))
		}
		return
	}
	if f.cfg.Hooks.Serving != nil {
		f.cfg.Hooks.Serving(m.name, u)
	}
	deleted := false
serve:
	for {
		select {
		case next := <-m.updates:
			if next.Version > fn.Version {
				fn = next
				u.Update(fn)
			}
		case <-m.deleted:
			deleted = true
			break serve
		case <-f.ctx.Done():
			break serve
		}
	}
	if f.cfg.Hooks.Leaving != nil {
		f.cfg.Hooks.Leaving(m.name, deleted)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), f.cfg.CloseTimeout)
	defer ccancel()
	if err := u.Close(cctx, deleted); err != nil {
		f.log.Warn("close function", "function", m.name, "deleted", deleted, "err", err)
		f.mu.Lock()
		f.errs = append(f.errs, fmt.Errorf("close function %s: %w", m.name, err))
		f.mu.Unlock()
	}
}

// start starts the unit, retrying with backoff, and returns it with the
// version it runs; nil once ctx ended first.
func (f *Fleet) start(ctx context.Context, m *member, fn spillway.Function) (Unit, spillway.Function) {
	wait := f.cfg.RetryMin
	for {
		// A newer version that arrived while an attempt failed is the
		// one to start.
		select {
		case next := <-m.updates:
			if next.Version > fn.Version {
				fn = next
			}
		default:
		}
		u, err := f.cfg.Start(ctx, fn)
		if err == nil {
			return u, fn
		}
		if ctx.Err() != nil {
			return nil, fn
		}
		f.log.Error("start function", "function", m.name, "version", fn.Version, "err", err, "retry_in", wait)
		if f.cfg.Hooks.Failed != nil {
			f.cfg.Hooks.Failed(m.name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fn
		case <-time.After(wait):
		}
		wait = min(2*wait, f.cfg.RetryMax)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func hook(h func(string), name string) {
	if h != nil {
		h(name)
	}
}
