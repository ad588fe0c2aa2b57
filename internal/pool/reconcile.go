package pool

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spillway-faas/spillway"
)

// reconcileTick bounds how long a needed action waits for a kick.
const reconcileTick = 250 * time.Millisecond

// deferred is what a section under Pool.mu leaves for after the unlock:
// the pool never logs, closes a connection, cancels a member's calls, tells
// an event or starts a goroutine while it holds mu. (A goroutine's
// wg.Add is made under mu, so that Close, which sets closed under mu
// before it waits, never misses one.)
type deferred []func()

func (d *deferred) add(f func()) { *d = append(*d, f) }

func (d deferred) run() {
	for _, f := range d {
		f()
	}
}

// reconcileLoop moves the members toward the desired state on every kick
// and every reconcileTick.
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

// reconcile is one round: under mu it takes a view, plans (plan is pure)
// and applies the plan's bookkeeping; after the unlock it does the rest:
// members' calls cancelled and connections closed, containers started and
// removed in owned goroutines, log lines and events.
func (p *Pool) reconcile() {
	now := time.Now()
	var later deferred
	p.mu.Lock()
	if p.closed || p.ctx.Err() != nil {
		p.mu.Unlock()
		return
	}
	members := slices.Clone(p.members)
	p.applyLocked(members, plan(p.viewLocked(), now), &later)
	p.mu.Unlock()
	later.run()
}

// viewLocked is the pool as plan sees it; view.members[i] is p.members[i].
func (p *Pool) viewLocked() view {
	v := view{follower: p.follower || p.svc != nil, managed: p.svc != nil, controller: !p.follower && !p.promoting, desired: p.desired, key: Key(p.fn), version: p.fn.Version, nextTry: p.nextTry,
		members: make([]memberView, len(p.members))}
	for i, m := range p.members {
		v.members[i] = memberView{state: m.state, key: m.key, inFlight: int(m.inFlight.Load()), hasContainer: m.id != "", gone: m.gone}
	}
	return v
}

// applyLocked applies acts, planned on members (the list as it was then),
// to the pool's bookkeeping, and leaves the I/O to later.
func (p *Pool) applyLocked(members []*member, acts []action, later *deferred) {
	if len(acts) == 0 {
		return
	}
	var leaving []*member
	for _, a := range acts {
		switch a.kind {
		case actRemove:
			m := members[a.member]
			m.removing = true
			leaving = append(leaving, m)
			p.wg.Add(1)
			later.add(func() {
				m.cancel()
				m.closeConns()
				go p.removeContainer(m)
			})
		case actForget:
			m := members[a.member]
			leaving = append(leaving, m)
			later.add(func() {
				m.cancel()
				m.closeConns()
			})
		case actStart:
			p.startLocked(later)
		case actDrain:
			m := members[a.member]
			p.setStateLocked(m, StateDraining)
			name, inFlight, why := m.name, m.inFlight.Load(), a.reason
			later.add(func() { p.log.Info("draining worker", "worker", name, "reason", why, "in_flight", inFlight) })
			if inFlight == 0 {
				later.add(p.poke) // remove it on the next round
			}
		}
	}
	if len(leaving) > 0 {
		p.members = slices.DeleteFunc(p.members, func(m *member) bool { return slices.Contains(leaving, m) })
	}
	p.notifyLocked()
}

// removeContainer removes m's container; the reconciler counted it in wg.
func (p *Pool) removeContainer(m *member) {
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
}

// startLocked adds a starting member of the current version; later starts
// its container in an owned goroutine.
func (p *Pool) startLocked(later *deferred) {
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
	if p.counters.Failed > p.counters.Replacements {
		p.counters.Replacements++
		if p.Events != nil {
			cause := "starting a replacement: " + p.lastFailure
			later.add(func() { p.Events.Event(spillway.EventWorkerReplaced, cause) })
		}
	}
	spec := p.specLocked()
	p.wg.Add(1)
	later.add(func() {
		go func() {
			defer p.wg.Done()
			p.start(m, spec)
		}()
	})
}

// specLocked is what a new worker of the current function runs.
func (p *Pool) specLocked() WorkerSpec {
	return WorkerSpec{Function: p.fn, Concurrency: p.cfg.Concurrency, LocalTimeout: p.cfg.LocalTimeout, MaxResultBytes: p.cfg.MaxResultBytes}
}

// start starts m's container and waits until it answers health() ready;
// then m takes calls.
func (p *Pool) start(m *member, spec WorkerSpec) {
	ctx, cancel := context.WithTimeout(m.ctx, p.cfg.StartTimeout)
	defer cancel()
	began := time.Now()
	if p.Fence != nil {
		if err := p.Fence(ctx); err != nil {
			p.startFailed(m, err)
			p.log.Warn("worker not started", "err", err)
			return
		}
	}
	w, thawed := p.thawSpare(ctx, Key(spec.Function))
	if !thawed {
		var err error
		if w, err = p.backend.Start(ctx, spec); err != nil {
			p.startFailed(m, err)
			p.log.Error("start worker", "version", spec.Function.Version, "err", err)
			return
		}
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

	if err := p.waitHealthy(ctx, m); err != nil {
		p.startFailed(m, fmt.Errorf("worker %s never became healthy: %w", m.name, err))
		p.log.Error("worker never became healthy", "worker", m.name, "after", time.Since(began).Round(time.Millisecond), "err", err)
		return
	}
	p.mu.Lock()
	if m.state != StateStarting {
		p.mu.Unlock()
		return // failed by the watcher or drained by Close meanwhile
	}
	p.setStateLocked(m, StateReady)
	p.counters.Started++
	p.startErr = 0
	p.nextTry = time.Time{}
	p.notifyLocked()
	p.grantLocked()
	p.mu.Unlock()
	p.poke() // a roll or scale-down may proceed now
	readyAfter := time.Since(began)
	p.log.Info("worker ready", "worker", m.name, "addr", m.addr, "version", m.version, "spare", thawed,
		"after", readyAfter.Round(time.Millisecond))
	if p.OnWorkerReady != nil {
		p.OnWorkerReady(readyAfter)
	}
}

// startFailed marks a start failed with err (the reconciler removes the
// container if there is one) and backs further starts off.
func (p *Pool) startFailed(m *member, err error) {
	p.mu.Lock()
	p.lastStartErr = err
	p.counters.StartFailed++
	p.startErr++
	backoff := min(250*time.Millisecond<<min(p.startErr, 6), 10*time.Second)
	p.nextTry = time.Now().Add(backoff)
	if m.state != StateFailed {
		p.setStateLocked(m, StateFailed)
	}
	if m.id == "" {
		// No container: drop the placeholder now.
		p.members = slices.DeleteFunc(p.members, func(x *member) bool { return x == m })
	}
	p.notifyLocked()
	p.mu.Unlock()
	m.cancel()
	p.poke()
}
