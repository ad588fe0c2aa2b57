// Package pool keeps the local workers of one function: it starts them
// through a Backend, probes their health, hands out exact per-worker call
// slots in FIFO order, takes failed workers out of rotation at once and
// replaces them, scales with drain, and rolls to a new function version
// without a failed call.
//
// The files: lease.go hands out call slots (the request path); plan.go
// decides, purely, what the reconciler does next (plan(view, now)), and
// reconcile.go applies it and starts and removes containers; health.go
// probes the workers and ejects dead ones; adopt.go takes over the workers
// an earlier run or another lb left; follow.go is the mode of an lb that
// follows another replica; roll.go moves to a new version; snapshot.go
// reports.
//
// Locking: one mutex (Pool.mu) guards the members, the waiters and the
// counters; it is held only for bookkeeping. A call takes it once
// (TryAcquireCounts); its Release takes it only when someone waits for a
// slot or the member left rotation. Nothing slow happens under it: no
// backend or worker call, no log line, no connection closed, no event told
// and no goroutine started (a section under mu leaves those to a deferred
// list run after the unlock). Backend calls and worker calls happen in
// goroutines the pool owns (Close stops them) or on the caller's goroutine
// with the caller's context.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
)

// State is a member's place in its lifecycle.
type State string

const (
	StateStarting State = "starting" // container starting, not yet healthy
	StateReady    State = "ready"    // in rotation
	StateDraining State = "draining" // out of rotation, finishing its calls, then removed
	StateFailed   State = "failed"   // out of rotation, removed and replaced
)

// Config tunes a pool. internal/config builds it (config.Config.PoolConfig)
// from the variables named here; the zero probe and start timings, which no
// variable sets, take the defaults below.
type Config struct {
	Min          int           // NUMBER_OF_SERVERS: Scale never goes below it
	Max          int           // MAX_SERVERS: Scale never goes above it
	Concurrency  int           // WORKER_CONCURRENCY: call slots per member
	LocalTimeout time.Duration // LOCAL_TIMEOUT, passed to the workers
	// MaxResultBytes (MAX_RESULT_BYTES) is passed to the workers, which
	// refuse a larger result; a worker's answer larger than the XML of such
	// a result is refused here too, without ejecting the worker.
	MaxResultBytes int64

	HealthInterval time.Duration // between health() probes of a member (1s)
	HealthTimeout  time.Duration // deadline of one probe (800ms)
	HealthFailures int           // consecutive failed probes that eject a member (2)
	StartTimeout   time.Duration // container start + first healthy probe (30s)
	RemoveTimeout  time.Duration // one backend Remove (30s)
	DialTimeout    time.Duration // TCP connect to a worker (2s)
	// FollowInterval is how often a pool on a ServiceBackend lists its
	// workers (DefaultFollowInterval); a follower on another backend lists
	// them every HealthInterval.
	FollowInterval time.Duration

	// Spare keeps one worker of the current function started ahead of
	// need, healthy once and then frozen (WORKER_SPARE; the Backend must be
	// a Freezer, else nothing is kept): a start thaws it instead of
	// creating and starting a container, and the next spare is made in the
	// background. It holds a worker's memory, no CPU and no call slot.
	Spare bool
}

// Defaults for the zero values of Config.
const (
	DefaultHealthInterval = time.Second
	DefaultHealthTimeout  = 800 * time.Millisecond
	DefaultHealthFailures = 2
	DefaultStartTimeout   = 30 * time.Second
	DefaultRemoveTimeout  = 30 * time.Second
	DefaultDialTimeout    = 2 * time.Second
)

func (c Config) withDefaults() Config {
	if c.HealthInterval <= 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if c.HealthFailures <= 0 {
		c.HealthFailures = DefaultHealthFailures
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.RemoveTimeout <= 0 {
		c.RemoveTimeout = DefaultRemoveTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.FollowInterval <= 0 {
		c.FollowInterval = DefaultFollowInterval
	}
	return c
}

// Validate checks the pool's own invariants: sizes that make sense and at
// least one call slot per member.
func (c Config) Validate() error {
	switch {
	case c.Min < 0:
		return fmt.Errorf("pool: Min %d is negative", c.Min)
	case c.Max < c.Min:
		return fmt.Errorf("pool: Max %d is below Min %d", c.Max, c.Min)
	case c.Concurrency < 1:
		return fmt.Errorf("pool: Concurrency %d, want at least 1 call slot per member", c.Concurrency)
	}
	return nil
}

// member is one worker. All fields but the immutable ones are guarded by
// Pool.mu.
type member struct {
	// set once Start returned (under mu), then immutable
	id     string
	name   string
	addr   string
	client WorkerConn // this member's own connections, closed when it goes
	// immutable from creation
	version  int64
	sha256   string
	key      string // Key of its function: what a roll compares
	capacity int
	ctx      context.Context // cancelled when the member fails or is removed: aborts its calls
	cancel   context.CancelFunc
	lastOK   atomic.Int64 // unix nanos of the last call the worker answered (result or fault)

	state State
	// ready mirrors state == StateReady, and inFlight counts the leases
	// held; both are atomics so that Release can skip the lock (see
	// Lease.Release), and are written only under mu, but for Release's
	// decrement.
	ready      atomic.Bool
	inFlight   atomic.Int64
	since      time.Time
	leases     int64 // leases ever handed out
	healthFail int
	completed  int64
	coldStarts int64
	removing   bool      // taken off the list, backend removal under way
	gone       bool      // its worker left the backend's list (follower, service)
	busyUntil  time.Time // skipped until then: it answered busy
	busyWake   bool      // a goroutine will offer its slots at busyUntil
}

// closeConns drops the member's connections. A new container may get
// the same IP: it must never be sent a stale connection of the old one,
// which is why each member has its own transport.
//
// It also interrupts the member's calls in flight: every caller of
// closeConns has cancelled m.ctx (the member failed or left), and those
// calls fail with spillway.ErrWorkerFailed (see Lease.Call).
func (m *member) closeConns() {
	if m.client != nil {
		m.client.Close()
	}
}

// waiter is one Acquire blocked for a slot. Guarded by Pool.mu.
type waiter struct {
	ch    chan struct{} // closed when lease or err is set
	lease *Lease
	err   error
	done  bool
}

// Pool is the set of workers serving one function.
type Pool struct {
	// Scheduler chooses among ready members with a free slot; nil means
	// round-robin. Set before Open.
	Scheduler policy.Scheduler
	// Logger gets one line per lifecycle event; nil means slog.Default().
	Logger *slog.Logger
	// OnWorkerReady, when set, learns how long each new worker took from
	// start to healthy (the autoscaler's cold-start estimate). Set before Open.
	OnWorkerReady func(startup time.Duration)
	// Fence, when set, is asked before every container start and removal
	// the reconciler makes; an error skips the action (another lb replica
	// controls the pool now). Set before Open.
	Fence func(ctx context.Context) error
	// Events learns rolls and replacements of failed workers; nil tells no
	// one. Set before Open. It is never called with the pool's lock held.
	Events spillway.EventSink
	// Connect returns the connection to the worker at addr (host:port);
	// nil means a workerapi.Client with the pool's dial timeout, one idle
	// connection per call slot (and two more) and its result limit. Set
	// before Open.
	Connect func(addr string) WorkerConn

	cfg     Config
	backend Backend
	// svc is backend when it keeps the workers as one service's replicas
	// (see ServiceBackend), nil otherwise.
	svc ServiceBackend
	log *slog.Logger

	// spareKick wakes spareLoop (Config.Spare).
	spareKick chan struct{}

	ctx    context.Context // the pool's own, cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the pool started
	kick   chan struct{}  // wakes the reconciler (buffer 1)
	// followKick wakes the follow loop (buffer 1): a promotion to run.
	followKick chan struct{}
	opened     atomic.Bool
	openedAt   time.Time // set by Open before any goroutine reads it

	// nWaiters is len(waiters), for Release's lock-free check.
	nWaiters atomic.Int64

	mu           sync.Mutex // guards everything below
	follower     bool       // another lb replica controls the pool (see SetController)
	promoting    bool       // becoming the controller: the sweep has not run yet
	fn           spillway.Function
	members      []*member // stable order: creation
	waiters      []*waiter // FIFO; its length is mirrored in nWaiters
	desired      int
	closed       bool
	notify       chan struct{} // closed and replaced on every state change
	startErr     int           // consecutive failed starts (backoff)
	lastStartErr error         // why the last start failed
	lastFailure  string        // which ready member failed last, and why
	nextTry      time.Time     // no start before this after failures
	counters     Counters
	spare        *spare  // the frozen spare (Config.Spare), nil when none
	lastApplied  applied // what the controller last told svc
	candBuf      []policy.Member
	candIdx      []*member
}

// Counters are totals since the pool was created.
type Counters struct {
	Started      uint64 // members that became ready after a start
	Adopted      uint64 // members adopted from an earlier run
	StartFailed  uint64 // starts that failed (backend error or never healthy)
	Failed       uint64 // ready members ejected (call failure, health, container died)
	Removed      uint64 // containers removed
	Replacements uint64 // members started to replace a failed one
	Busy         uint64 // calls a worker answered busy (placed elsewhere, never a failure)
}

// New returns a pool on backend. Nothing runs until Open.
func New(backend Backend, cfg Config) *Pool {
	svc, _ := backend.(ServiceBackend)
	return &Pool{cfg: cfg.withDefaults(), backend: backend, svc: svc, kick: make(chan struct{}, 1),
		followKick: make(chan struct{}, 1), notify: make(chan struct{}), spareKick: make(chan struct{}, 1)}
}

// Open adopts what an earlier run left (see Adopt), starts the health and
// reconcile loops, scales to Config.Min and waits until that many members
// are ready or ctx ends.
func (p *Pool) Open(ctx context.Context, fn spillway.Function) error {
	if err := p.cfg.Validate(); err != nil {
		return err
	}
	if !p.opened.CompareAndSwap(false, true) {
		return errors.New("pool already opened")
	}
	p.openedAt = time.Now()
	p.log = p.Logger
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("component", "pool")
	if p.Scheduler == nil {
		p.Scheduler = &policy.RoundRobin{}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())

	p.mu.Lock()
	p.fn = fn
	p.desired = p.cfg.Min
	p.mu.Unlock()

	p.mu.Lock()
	follower := p.follower
	p.mu.Unlock()
	// On a service the engine owns every worker: none is swept.
	if _, _, err := p.adopt(ctx, fn, !follower && p.svc == nil); err != nil {
		p.log.Warn("adopt workers of an earlier run", "err", err)
	}
	p.wg.Add(3)
	go p.reconcileLoop()
	go p.healthLoop()
	go p.followLoop()
	p.kickFollow()
	if w, ok := p.backend.(ExitWatcher); ok && p.svc == nil {
		p.wg.Add(1)
		go p.watchLoop(w)
	}
	if f, ok := p.backend.(Freezer); ok && p.cfg.Spare {
		p.wg.Add(1)
		go p.spareLoop(f)
		p.pokeSpare()
	}
	if err := p.WaitReady(ctx, p.cfg.Min); err != nil {
		if last := p.lastStartError(); last != nil {
			return fmt.Errorf("wait for %d ready workers: %w (last start error: %v)", p.cfg.Min, err, last)
		}
		return fmt.Errorf("wait for %d ready workers: %w", p.cfg.Min, err)
	}
	return nil
}

// Function is the function version new members run.
func (p *Pool) Function() spillway.Function {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fn
}

// Reconfigure changes the pool's bounds and what new workers are told
// (the function was published again with other --min, --max,
// --concurrency or --timeout): the desired size is clamped to the new
// bounds at once; workers already running keep their concurrency and
// timeout until they are replaced (by the next code update, a failure or a
// scale-down and up).
func (p *Pool) Reconfigure(min, max, concurrency int, localTimeout time.Duration) error {
	c := p.cfg
	c.Min, c.Max, c.Concurrency, c.LocalTimeout = min, max, concurrency, localTimeout
	if err := c.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg.Min, p.cfg.Max, p.cfg.Concurrency, p.cfg.LocalTimeout = min, max, concurrency, localTimeout
	p.desired = max0(p.cfg.Min, p.desired, p.cfg.Max)
	p.notifyLocked()
	p.mu.Unlock()
	p.poke()
	p.kickFollow()
	return nil
}

func max0(lo, n, hi int) int { return max(lo, min(n, hi)) }

// Scale sets the desired number of members, clamped to [Min, Max], and
// returns it. It does not wait: the reconciler starts members concurrently
// (each waits for health with StartTimeout) or removes idle ones.
func (p *Pool) Scale(desired int) int {
	desired = max(p.cfg.Min, min(desired, p.cfg.Max))
	p.mu.Lock()
	changed := p.desired != desired
	p.desired = desired
	p.mu.Unlock()
	if changed {
		p.poke()
		p.kickFollow()
	}
	return desired
}

// WaitReady blocks until at least n members of the current version are
// ready, or ctx ends.
func (p *Pool) WaitReady(ctx context.Context, n int) error {
	return p.waitFor(ctx, false, func() bool {
		ready := 0
		for _, m := range p.members {
			if m.state == StateReady && m.key == Key(p.fn) {
				ready++
			}
		}
		return ready >= n
	})
}

// waitFor blocks until cond (called under mu) holds, the pool closes
// (unless evenClosed) or ctx ends.
func (p *Pool) waitFor(ctx context.Context, evenClosed bool, cond func() bool) error {
	for {
		p.mu.Lock()
		if cond() {
			p.mu.Unlock()
			return nil
		}
		if p.closed && !evenClosed {
			p.mu.Unlock()
			return fmt.Errorf("pool closed: %w", spillway.ErrUnavailable)
		}
		ch := p.notify
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notifyLocked wakes every waitFor.
func (p *Pool) notifyLocked() {
	close(p.notify)
	p.notify = make(chan struct{})
}

// poke wakes the reconciler without blocking.
func (p *Pool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Close takes every member out of rotation, fails blocked Acquires with
// spillway.ErrUnavailable, waits (within ctx) for calls in flight to
// finish, stops the pool's goroutines and removes every container of the
// pool, also those it never adopted. It is safe to call more than once.
func (p *Pool) Close(ctx context.Context) error {
	return p.close(ctx, true)
}

// Leave is Close for an lb replica that leaves while others still serve
// the pool: it drains its own calls and stops its goroutines, but leaves
// every container running.
func (p *Pool) Leave(ctx context.Context) error {
	return p.close(ctx, false)
}

func (p *Pool) close(ctx context.Context, remove bool) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, w := range p.waiters {
		w.err = fmt.Errorf("pool closing: %w", spillway.ErrUnavailable)
		w.done = true
		close(w.ch)
	}
	p.waiters = nil
	p.nWaiters.Store(0)
	for _, m := range p.members {
		if m.state == StateReady || m.state == StateStarting {
			p.setStateLocked(m, StateDraining)
		}
	}
	p.notifyLocked()
	p.mu.Unlock()

	drainErr := p.waitDrained(ctx)
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()

	// Remove whatever is left, with a fresh deadline if the drain used up
	// ctx: containers must not outlive the pool.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.RemoveTimeout)
	defer cancel()
	ids := map[string]bool{}
	p.mu.Lock()
	members := p.members
	p.members = nil
	sp := p.spare
	p.spare = nil
	p.mu.Unlock()
	if sp != nil {
		p.removeSpare(sp) // no other replica serves a spare
	}
	for _, m := range members {
		m.cancel()
		m.closeConns()
		if m.id != "" {
			ids[m.id] = true
		}
	}
	if !remove {
		p.log.Info("pool left to the other lb replicas", "workers", len(ids))
		return drainErr
	}
	if p.svc != nil {
		err := p.svc.RemoveService(rctx)
		if err == nil {
			p.mu.Lock()
			p.counters.Removed += uint64(len(ids))
			p.mu.Unlock()
		}
		if drainErr != nil {
			err = errors.Join(err, fmt.Errorf("drain calls in flight: %w", drainErr))
		}
		p.log.Info("pool closed: service removed", "workers", len(ids))
		return err
	}
	ws, listErr := p.backend.List(rctx)
	for _, w := range ws {
		ids[w.ID] = true
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for id := range ids {
		wg.Go(func() {
			if err := p.backend.Remove(rctx, id); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			p.mu.Lock()
			p.counters.Removed++
			p.mu.Unlock()
		})
	}
	wg.Wait()
	if listErr != nil {
		errs = append(errs, fmt.Errorf("list workers to remove: %w", listErr))
	}
	if drainErr != nil {
		errs = append(errs, fmt.Errorf("drain calls in flight: %w", drainErr))
	}
	if p.log != nil {
		p.log.Info("pool closed", "removed", len(ids))
	}
	return errors.Join(errs...)
}

func (p *Pool) waitDrained(ctx context.Context) error {
	return p.waitFor(ctx, true, func() bool {
		for _, m := range p.members {
			if m.inFlight.Load() > 0 {
				return false
			}
		}
		return true
	})
}

func (p *Pool) setStateLocked(m *member, s State) {
	m.state = s
	m.ready.Store(s == StateReady)
	m.since = time.Now()
}

// failLocked takes m out of rotation for good; later aborts its calls and
// drops its connections. The reconciler removes and replaces it.
func (p *Pool) failLocked(m *member, cause error, later *deferred) {
	if m.state == StateFailed || m.removing {
		return
	}
	wasReady := m.state == StateReady
	p.setStateLocked(m, StateFailed)
	if wasReady {
		p.counters.Failed++
		p.lastFailure = fmt.Sprintf("%s failed: %v", m.name, cause)
	}
	p.notifyLocked()
	later.add(func() {
		m.cancel()
		m.closeConns()
		if p.log != nil {
			p.log.Warn("worker failed, taking it out of rotation", "worker", m.name, "addr", m.addr, "err", cause)
		}
		p.poke()
	})
}

// fail is failLocked for callers without the lock.
func (p *Pool) fail(m *member, cause error) {
	var later deferred
	p.mu.Lock()
	p.failLocked(m, cause, &later)
	p.mu.Unlock()
	later.run()
}
