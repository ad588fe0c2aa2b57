package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

// Watcher is optionally implemented by a Backend: it calls died with the
// id of each worker container of the pool that exits, until ctx ends. The
// pool ejects such a member before any call or probe notices.
type Watcher interface {
	Watch(ctx context.Context, died func(id string)) error
}

// reconcileTick bounds how long a needed action waits for a kick.
const reconcileTick = 250 * time.Millisecond

// reconcileLoop moves the members toward the desired state: remove failed
// and drained members, start missing ones, drain surplus and old-version
// ones. Decisions are taken under mu; backend calls run in goroutines.
func (p *Pool) reconcileLoop() {
	defer p.wg.Done()
	t := time.NewTicker(reconcileTick)
	defer t.Stop()
	for {
		p.reconcile()
		select {
		case <-p.ctx.Done():
			return
		case <-p.kick:
		case <-t.C:
		}
	}
}

func (p *Pool) reconcile() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.ctx.Err() != nil {
		return
	}
	if p.follower {
		p.followLocked()
		return
	}
	// 1. Failed members and drained ones leave the list; their containers go.
	kept := p.members[:0]
	var removed []*member
	for _, m := range p.members {
		gone := m.state == StateFailed || (m.state == StateDraining && m.inFlight.Load() == 0)
		if gone && m.id == "" && m.state == StateFailed {
			// A start that failed before the container existed: its
			// goroutine already cleaned up.
			continue
		}
		if gone {
			m.removing = true
			removed = append(removed, m)
			continue
		}
		kept = append(kept, m)
	}
	clear(p.members[len(kept):])
	p.members = kept
	for _, m := range removed {
		p.removeAsync(m)
	}

	// 2. Count the current version's members toward the desired size.
	var current, readyCurrent, old []*member
	key := Key(p.fn)
	for _, m := range p.members {
		switch {
		case m.state == StateDraining:
		case m.key == key:
			current = append(current, m)
			if m.state == StateReady {
				readyCurrent = append(readyCurrent, m)
			}
		case m.state == StateReady:
			old = append(old, m)
		}
	}

	// 3. Start what is missing (with backoff after failed starts).
	if need := p.desired - len(current); need > 0 && !now.Before(p.nextTry) {
		for range need {
			p.startAsyncLocked()
		}
	}

	// 4. Above the desired size: drain idle members only, newest first.
	if surplus := len(current) - p.desired; surplus > 0 {
		for i := len(readyCurrent) - 1; i >= 0 && surplus > 0; i-- {
			if m := readyCurrent[i]; m.inFlight.Load() == 0 {
				p.drainLocked(m, "scale down")
				surplus--
			}
		}
	}

	// 5. Roll: an old-version member leaves rotation once a ready member of
	// the current version stands in for it; idle ones first.
	if keepOld := max(0, p.desired-len(readyCurrent)); len(old) > keepOld {
		drop := len(old) - keepOld
		for pass := 0; pass < 2 && drop > 0; pass++ {
			for _, m := range old {
				if drop == 0 {
					break
				}
				if m.state == StateReady && (pass == 1 || m.inFlight.Load() == 0) {
					p.drainLocked(m, "roll to version "+fmt.Sprint(p.fn.Version))
					drop--
				}
			}
		}
	}
}

func (p *Pool) drainLocked(m *member, why string) {
	p.setStateLocked(m, StateDraining)
	p.notifyLocked()
	p.log.Info("draining worker", "worker", m.name, "reason", why, "in_flight", m.inFlight.Load())
	if m.inFlight.Load() == 0 {
		p.poke()
	}
}

// removeAsync removes m's container in an owned goroutine.
func (p *Pool) removeAsync(m *member) {
	m.cancel()
	m.closeConns()
	p.notifyLocked()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), p.cfg.RemoveTimeout)
		defer cancel()
		if p.Fence != nil {
			if err := p.Fence(ctx); err != nil {
				p.log.Warn("worker left to the controller", "worker", m.name, "err", err)
				return
			}
		}
		if err := p.backend.Remove(ctx, m.id); err != nil {
			p.log.Error("remove worker", "worker", m.name, "err", err)
			return
		}
		p.mu.Lock()
		p.counters.Removed++
		p.mu.Unlock()
		p.log.Info("removed worker", "worker", m.name)
	}()
}

// startAsyncLocked adds a starting member and starts its container in an
// owned goroutine.
func (p *Pool) startAsyncLocked() {
	ctx, cancel := context.WithCancel(p.ctx)
	m := &member{
		version:  p.fn.Version,
		sha256:   p.fn.SHA256,
		key:      Key(p.fn),
		capacity: p.cfg.Concurrency,
		ctx:      ctx,
		cancel:   cancel,
	}
	p.setStateLocked(m, StateStarting)
	p.members = append(p.members, m)
	replacing := p.counters.Failed > p.counters.Replacements
	if replacing {
		p.counters.Replacements++
		if p.Events != nil {
			p.Events.Event(spillway.EventWorkerReplaced, "starting a replacement: "+p.lastFailure)
		}
	}
	spec := WorkerSpec{Function: p.fn, Concurrency: p.cfg.Concurrency, LocalTimeout: p.cfg.LocalTimeout, MaxResultBytes: p.cfg.MaxResultBytes}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.start(m, spec)
	}()
}

func (p *Pool) start(m *member, spec WorkerSpec) {
	ctx, cancel := context.WithTimeout(m.ctx, p.cfg.StartTimeout)
	defer cancel()
	began := time.Now()
	if p.Fence != nil {
		if err := p.Fence(ctx); err != nil {
			p.mu.Lock()
			p.lastStartErr = err
			p.startFailedLocked(m)
			p.mu.Unlock()
			p.log.Warn("worker not started", "err", err)
			return
		}
	}
	w, err := p.backend.Start(ctx, spec)
	if err != nil {
		p.mu.Lock()
		p.lastStartErr = err
		p.startFailedLocked(m)
		p.mu.Unlock()
		p.log.Error("start worker", "version", spec.Function.Version, "err", err)
		return
	}
	client := p.connect(w.Addr)
	p.mu.Lock()
	m.id, m.name, m.addr, m.client = w.ID, w.Name, w.Addr, client
	orphan := m.removing || m.state == StateFailed
	p.mu.Unlock()
	if orphan {
		// Dropped while the container started: nobody else will remove it.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.RemoveTimeout)
		defer rcancel()
		if err := p.backend.Remove(rctx, w.ID); err != nil {
			p.log.Error("remove worker dropped while starting", "worker", w.Name, "err", err)
		}
		return
	}

	err = p.waitHealthy(ctx, m)
	var readyAfter time.Duration // set when the worker became ready
	defer func() {               // runs after the unlock below
		if readyAfter > 0 && p.OnWorkerReady != nil {
			p.OnWorkerReady(readyAfter)
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastStartErr = fmt.Errorf("worker %s never became healthy: %w", m.name, err)
		p.startFailedLocked(m)
		p.log.Error("worker never became healthy", "worker", m.name, "after", time.Since(began).Round(time.Millisecond), "err", err)
		return
	}
	if m.state != StateStarting {
		return // failed by the watcher or drained by Close meanwhile
	}
	p.setStateLocked(m, StateReady)
	p.counters.Started++
	p.startErr = 0
	p.nextTry = time.Time{}
	p.notifyLocked()
	p.grantLocked()
	p.poke() // a roll or scale-down may proceed now
	readyAfter = time.Since(began)
	p.log.Info("worker ready", "worker", m.name, "addr", m.addr, "version", m.version, "after", readyAfter.Round(time.Millisecond))
}

// startFailedLocked marks a start failed (the reconciler removes the
// container if there is one) and backs further starts off.
func (p *Pool) startFailedLocked(m *member) {
	p.counters.StartFailed++
	p.startErr++
	backoff := min(250*time.Millisecond<<min(p.startErr, 6), 10*time.Second)
	p.nextTry = time.Now().Add(backoff)
	if m.state != StateFailed {
		p.setStateLocked(m, StateFailed)
		m.cancel()
	}
	if m.id == "" {
		// No container: drop the placeholder now.
		for i, x := range p.members {
			if x == m {
				p.members = append(p.members[:i], p.members[i+1:]...)
				break
			}
		}
	}
	p.notifyLocked()
	p.poke()
}

// waitHealthy probes m until it answers health() ready, or ctx ends.
func (p *Pool) waitHealthy(ctx context.Context, m *member) error {
	var last error
	for {
		h, err := p.probe(ctx, m.client)
		switch {
		case err == nil && h.Ready:
			p.mu.Lock()
			m.completed, m.coldStarts = h.Completed, h.ColdStarts
			p.mu.Unlock()
			if h.SHA256 != "" && m.sha256 != "" && h.SHA256 != m.sha256 {
				p.log.Warn("worker reports another function sha256 than its label", "worker", m.name, "reported", h.SHA256, "label", m.sha256)
			}
			return nil
		case err == nil:
			last = errors.New("health() says not ready")
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last probe: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probe calls health() with the probe deadline.
func (p *Pool) probe(ctx context.Context, c WorkerConn) (workerapi.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HealthTimeout)
	defer cancel()
	return c.Health(ctx)
}

// healthLoop probes every ready or draining member each HealthInterval; a
// member that misses HealthFailures probes in a row is ejected.
func (p *Pool) healthLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		var targets []*member
		for _, m := range p.members {
			if (m.state == StateReady || m.state == StateDraining) && m.client != nil {
				targets = append(targets, m)
			}
		}
		p.mu.Unlock()
		results := make([]error, len(targets))
		hs := make([]workerapi.Health, len(targets))
		var wg sync.WaitGroup
		for i, m := range targets {
			wg.Go(func() { hs[i], results[i] = p.probe(m.ctx, m.client) })
		}
		wg.Wait()
		p.mu.Lock()
		for i, m := range targets {
			if m.ctx.Err() != nil {
				continue
			}
			if results[i] == nil {
				m.healthFail = 0
				m.completed, m.coldStarts = hs[i].Completed, hs[i].ColdStarts
				continue
			}
			if time.Since(time.Unix(0, m.lastOK.Load())) < p.cfg.HealthInterval {
				// It answered a call just now: busy (a starved probe on a
				// saturated machine), not dead.
				continue
			}
			m.healthFail++
			if m.healthFail >= p.cfg.HealthFailures || errors.Is(results[i], syscall.ECONNREFUSED) {
				// Refused is certain: nothing listens there any more.
				p.failLocked(m, fmt.Errorf("missed %d health probes: %w", m.healthFail, results[i]))
			}
		}
		p.mu.Unlock()
	}
}

// watchLoop ejects members whose container the backend reports dead. It
// re-subscribes after errors until the pool closes.
func (p *Pool) watchLoop(w Watcher) {
	defer p.wg.Done()
	for p.ctx.Err() == nil {
		err := w.Watch(p.ctx, func(id string) {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, m := range p.members {
				if m.id == id && (m.state == StateReady || m.state == StateStarting) {
					p.failLocked(m, errors.New("container exited"))
				}
			}
		})
		if p.ctx.Err() != nil {
			return
		}
		p.log.Warn("watch worker containers", "err", err)
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// Adopt lists the containers an earlier run of this pool left and keeps,
// as ready members, the running ones of fn's Key (sha256, style, handler)
// that answer health();
// it removes the rest. Open calls it; it returns how many were kept and
// removed.
func (p *Pool) Adopt(ctx context.Context, fn spillway.Function) (kept, removed int, err error) {
	return p.adopt(ctx, fn, true)
}

// adopt keeps the healthy running workers of fn's Key it does not know;
// with removeRest it removes the other containers it does not know.
func (p *Pool) adopt(ctx context.Context, fn spillway.Function, removeRest bool) (kept, removed int, err error) {
	ws, err := p.backend.List(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("list leftover workers: %w", err)
	}
	p.mu.Lock()
	known := map[string]bool{}
	for _, m := range p.members {
		known[m.id] = true
	}
	p.mu.Unlock()

	type verdict struct {
		w    Worker
		keep bool
		h    workerapi.Health
		c    WorkerConn
	}
	vs := make([]verdict, 0, len(ws))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, w := range ws {
		if known[w.ID] {
			continue
		}
		wg.Go(func() {
			v := verdict{w: w}
			if w.Running && w.Addr != "" && w.Key() == Key(fn) && w.Function == fn.Name {
				v.c = p.connect(w.Addr)
				h, err := p.probe(ctx, v.c)
				v.keep, v.h = err == nil && h.Ready, h
				if !v.keep {
					v.c.CloseIdleConnections()
				}
			}
			mu.Lock()
			vs = append(vs, v)
			mu.Unlock()
		})
	}
	wg.Wait()

	var toRemove []Worker
	p.mu.Lock()
	for _, v := range vs {
		if !v.keep || kept >= p.cfg.Max || p.closed {
			if v.c != nil && v.keep {
				v.c.CloseIdleConnections()
			}
			if removeRest {
				toRemove = append(toRemove, v.w)
			}
			continue
		}
		mctx, cancel := context.WithCancel(p.baseCtx())
		m := &member{
			id: v.w.ID, name: v.w.Name, addr: v.w.Addr, client: v.c,
			version: v.w.Version, sha256: v.w.SHA256, key: v.w.Key(), capacity: p.cfg.Concurrency,
			ctx: mctx, cancel: cancel, completed: v.h.Completed, coldStarts: v.h.ColdStarts,
		}
		p.setStateLocked(m, StateReady)
		p.members = append(p.members, m)
		p.counters.Adopted++
		kept++
	}
	if kept > 0 {
		p.notifyLocked()
		p.grantLocked()
	}
	p.mu.Unlock()

	var errs []error
	for _, w := range toRemove {
		wg.Go(func() {
			rerr := p.backend.Remove(ctx, w.ID)
			mu.Lock()
			defer mu.Unlock()
			if rerr != nil {
				errs = append(errs, rerr)
				return
			}
			removed++
		})
	}
	wg.Wait()
	p.mu.Lock()
	p.counters.Removed += uint64(removed)
	p.mu.Unlock()
	if p.log != nil && (kept > 0 || removed > 0) {
		p.log.Info("adopted workers of an earlier run", "kept", kept, "removed", removed)
	}
	return kept, removed, errors.Join(errs...)
}

// connect returns the connection to one worker: Pool.Connect's, else a
// workerapi.Client on connections of its own (keep-alive, no proxy, a
// short connect timeout).
func (p *Pool) connect(addr string) WorkerConn {
	if p.Connect != nil {
		return p.Connect(addr)
	}
	return workerapi.NewClient(addr, workerapi.ClientOptions{
		DialTimeout:    p.cfg.DialTimeout,
		IdleConns:      p.cfg.Concurrency + 2,
		MaxResultBytes: p.cfg.MaxResultBytes,
	})
}

func (p *Pool) baseCtx() context.Context {
	if p.ctx == nil {
		return context.Background()
	}
	return p.ctx
}

// Roll switches the pool to fn: when its Key differs (code, style or
// handler), members of the new version start, and each
// old member leaves rotation (finishing its calls) once a new one stands
// in for it. Roll returns when no old-version member is left and the
// desired size is ready, or when ctx ends (the roll then goes on in the
// background).
func (p *Pool) Roll(ctx context.Context, fn spillway.Function) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("roll: pool closed: %w", spillway.ErrUnavailable)
	}
	same := Key(p.fn) == Key(fn)
	p.fn = fn
	if p.follower && !same {
		// The controller rolls; this replica adopts the new workers as
		// they become ready and drops the old ones as they go.
		p.notifyLocked()
		p.mu.Unlock()
		p.poke()
		return nil
	}
	if same {
		// Same code: new members get the new version number, nothing to roll.
		p.mu.Unlock()
		return nil
	}
	p.notifyLocked()
	if p.Events != nil {
		p.Events.Event(spillway.EventRoll, fmt.Sprintf("to version %d (sha256 %.12s): new workers start, old ones drain", fn.Version, fn.SHA256))
	}
	p.mu.Unlock()
	p.log.Info("rolling workers to a new function version", "version", fn.Version, "sha256", fn.SHA256)
	p.poke()
	superseded := false
	err := p.waitFor(ctx, false, func() bool {
		if Key(p.fn) != Key(fn) {
			superseded = true
			return true
		}
		ready := 0
		for _, m := range p.members {
			if m.key != Key(fn) {
				return false
			}
			if m.state == StateReady {
				ready++
			}
		}
		return ready >= p.desired
	})
	if err != nil {
		return fmt.Errorf("roll to version %d: %w (last start error: %v)", fn.Version, err, p.lastStartError())
	}
	if superseded {
		return fmt.Errorf("roll to version %d: superseded by a newer roll", fn.Version)
	}
	return nil
}

// lastStartError is the error of the last failed start, or nil.
func (p *Pool) lastStartError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastStartErr
}
