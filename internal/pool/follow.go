package pool

import (
	"context"
	"time"

	"github.com/spillway-faas/spillway"
)

// SetController switches the pool between controller (the default: it
// starts, scales, rolls and removes workers) and follower (another lb
// replica does that). A follower serves every ready worker of the pool's
// current function that the backend lists, adopting new ones as they
// appear and dropping those that go, and never starts or removes a
// container. Call it before Open to open as a follower.
//
// On promotion the pool first sweeps what the old controller left: it
// adopts the healthy workers of its function it does not serve yet and
// removes the other containers of the pool (starts the old controller did
// not finish, old versions). Then it keeps the workers it serves, takes
// their number as its desired size (so it neither starts nor drains
// anything until the autoscaler says so) and acts as the controller.
func (p *Pool) SetController(controller bool) {
	p.mu.Lock()
	was := !p.follower
	switch {
	case !controller:
		p.follower, p.promoting = true, false
	case was:
	case !p.opened.Load():
		p.follower = false // Open adopts and sweeps
	default:
		p.promoting = true
	}
	p.mu.Unlock()
	if p.log != nil && controller != was {
		p.log.Info("pool mode", "controller", controller, "sweep_first", controller && p.opened.Load())
	}
	select {
	case p.followKick <- struct{}{}:
	default:
	}
	p.poke()
}

// promote sweeps the pool's containers, then makes the pool the controller.
func (p *Pool) promote(ctx context.Context, fn spillway.Function) {
	if p.Fence != nil {
		if err := p.Fence(ctx); err != nil {
			p.log.Warn("promotion deferred", "err", err)
			return
		}
	}
	kept, removed, err := p.adopt(ctx, fn, p.svc == nil)
	if err != nil {
		p.log.Warn("sweep the old controller's containers", "err", err)
	}
	p.mu.Lock()
	if !p.promoting {
		p.mu.Unlock()
		return // demoted meanwhile
	}
	p.promoting, p.follower = false, false
	n := 0
	for _, m := range p.members {
		if (m.state == StateReady || m.state == StateStarting) && m.key == Key(p.fn) {
			n++
		}
	}
	p.desired = max(p.cfg.Min, min(n, p.cfg.Max))
	p.notifyLocked()
	p.mu.Unlock()
	p.log.Info("pool controlled by this lb", "workers", n, "adopted", kept, "removed", removed)
	p.poke()
}

// Controller reports whether the pool acts on its workers (see
// SetController); false while a promotion's sweep runs.
func (p *Pool) Controller() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.follower
}

// followLoop, while the pool is a follower, lists the pool's containers
// every HealthInterval: it adopts the ready workers of the current
// function it does not serve yet, and drops members whose container is
// gone.
//
// On a ServiceBackend every replica follows the engine's list, every
// FollowInterval, and the controller then applies its desired state to the
// service.
func (p *Pool) followLoop() {
	defer p.wg.Done()
	every := p.cfg.HealthInterval
	if p.svc != nil {
		every = p.cfg.FollowInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		case <-p.followKick:
		}
		p.mu.Lock()
		follower, promoting, fn := p.follower, p.promoting, p.fn
		p.mu.Unlock()
		if !follower && p.svc == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.StartTimeout)
		if promoting {
			p.promote(ctx, fn)
		} else {
			p.followOnce(ctx, fn)
		}
		if p.svc != nil {
			p.applyService(ctx, p.svc)
		}
		cancel()
	}
}

func (p *Pool) followOnce(ctx context.Context, fn spillway.Function) {
	ws, err := p.backend.List(ctx)
	if err != nil {
		p.log.Warn("list the pool's workers", "err", err)
		return
	}
	running := make(map[string]bool, len(ws))
	stopping := make(map[string]bool)
	for _, w := range ws {
		if w.Running {
			running[w.ID] = true
		}
		if w.Stopping {
			stopping[w.ID] = true
		}
	}
	var gone []*member
	var drained []string
	p.mu.Lock()
	for _, m := range p.members {
		switch {
		case m.id == "" || m.state == StateFailed:
		case !running[m.id]:
			// Removed by the controller or the engine: not a failure of ours.
			p.setStateLocked(m, StateFailed)
			m.gone = true
			gone = append(gone, m)
		case stopping[m.id] && m.state != StateDraining:
			// The engine stops it (scale-down, roll): out of rotation, its
			// calls finish before the worker exits.
			p.setStateLocked(m, StateDraining)
			drained = append(drained, m.name)
		}
	}
	if len(gone) > 0 || len(drained) > 0 {
		p.notifyLocked()
	}
	p.mu.Unlock()
	for _, name := range drained {
		p.log.Info("draining worker", "worker", name, "reason", "stopped by the engine")
	}
	for _, m := range gone {
		m.cancel()
		m.closeConns()
	}
	if len(gone) > 0 {
		p.poke()
	}
	if _, _, err := p.adopt(ctx, fn, false); err != nil && ctx.Err() == nil {
		p.log.Warn("adopt the controller's workers", "err", err)
	}
}
