package pool

import (
	"context"
	"fmt"
	"time"
)

// Freezer is optionally implemented by a Backend: it freezes a started
// worker (its processes stopped where they are: no CPU, no answer, memory
// kept) and thaws it. With Config.Spare the pool keeps one frozen spare.
type Freezer interface {
	Freeze(ctx context.Context, id string) error
	Thaw(ctx context.Context, id string) error
}

// spare is a worker started ahead of need: healthy once, then frozen. It
// is not a member: no call, probe or plan sees it, and a backend lists it
// as not running, so another lb replica neither adopts nor serves it.
type spare struct {
	w   Worker
	key string // Key of the function it runs
}

// spareRetryMax bounds the wait after a failed spare before the next try.
const spareRetryMax = 30 * time.Second

// spareLoop keeps one frozen spare of the current function while the pool
// controls its workers: it makes one when there is none, and replaces one
// of an older function. Failures back off, up to spareRetryMax.
func (p *Pool) spareLoop(f Freezer) {
	defer p.wg.Done()
	t := time.NewTicker(reconcileTick)
	defer t.Stop()
	var backoff time.Duration
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.spareKick:
		case <-t.C:
		}
		err := p.keepSpare(f)
		if err == nil {
			backoff = 0
			continue
		}
		if p.ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, time.Second), spareRetryMax)
		p.log.Warn("spare worker not kept", "retry_in", backoff, "err", err)
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// keepSpare is one round of spareLoop.
func (p *Pool) keepSpare(f Freezer) error {
	p.mu.Lock()
	var stale *spare
	if p.spare != nil && (p.follower || p.spare.key != Key(p.fn)) {
		stale, p.spare = p.spare, nil
	}
	need := p.spare == nil && !p.follower && !p.closed
	spec := p.specLocked()
	p.mu.Unlock()
	if stale != nil {
		p.removeSpare(stale)
	}
	if !need {
		return nil
	}
	began := time.Now()
	s, err := p.makeSpare(f, spec)
	if err != nil {
		return err
	}
	p.mu.Lock()
	keep := !p.closed && !p.follower && p.spare == nil && s.key == Key(p.fn)
	if keep {
		p.spare = s
	}
	p.mu.Unlock()
	if !keep {
		p.removeSpare(s)
		return nil
	}
	p.log.Info("spare worker frozen", "worker", s.w.Name, "version", s.w.Version, "after", time.Since(began).Round(time.Millisecond))
	return nil
}

// makeSpare starts a worker of spec, waits until it answers health()
// ready and freezes it. On failure nothing is left behind.
func (p *Pool) makeSpare(f Freezer, spec WorkerSpec) (*spare, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.StartTimeout)
	defer cancel()
	if p.Fence != nil {
		if err := p.Fence(ctx); err != nil {
			return nil, err
		}
	}
	w, err := p.backend.Start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("start a spare worker: %w", err)
	}
	s := &spare{w: w, key: Key(spec.Function)}
	// The probe's connections close before the freeze: none outlives it.
	c := p.connect(w.Addr)
	_, err = p.waitReady(ctx, c, w.Name, w.SHA256)
	c.Close()
	if err == nil {
		if err = f.Freeze(ctx, w.ID); err != nil {
			err = fmt.Errorf("freeze spare worker %s: %w", w.Name, err)
		}
	} else {
		err = fmt.Errorf("spare worker %s never became healthy: %w", w.Name, err)
	}
	if err != nil {
		p.removeSpare(s)
		return nil, err
	}
	return s, nil
}

// thawSpare takes the spare when it runs key and thaws it: the caller's
// new member is that worker. ok is false when there is no such spare or
// it did not thaw (it is removed then, and the caller starts a container).
func (p *Pool) thawSpare(ctx context.Context, key string) (w Worker, ok bool) {
	f, isFreezer := p.backend.(Freezer)
	if !isFreezer || !p.cfg.Spare {
		return Worker{}, false
	}
	p.mu.Lock()
	s := p.spare
	if s == nil || s.key != key {
		p.mu.Unlock()
		return Worker{}, false
	}
	p.spare = nil
	p.mu.Unlock()
	p.pokeSpare() // the next spare starts now
	if err := f.Thaw(ctx, s.w.ID); err != nil {
		p.log.Warn("thaw the spare worker", "worker", s.w.Name, "err", err)
		p.removeSpare(s)
		return Worker{}, false
	}
	return s.w, true
}

// removeSpare removes a spare's container, with a deadline of its own: a
// spare must not outlive the pool.
func (p *Pool) removeSpare(s *spare) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.baseCtx()), p.cfg.RemoveTimeout)
	defer cancel()
	if err := p.backend.Remove(ctx, s.w.ID); err != nil {
		p.log.Error("remove spare worker", "worker", s.w.Name, "err", err)
		return
	}
	p.mu.Lock()
	p.counters.Removed++
	p.mu.Unlock()
}

// pokeSpare wakes spareLoop without blocking.
func (p *Pool) pokeSpare() {
	select {
	case p.spareKick <- struct{}{}:
	default:
	}
}

// spareDied forgets the spare whose container exited (the backend's exit
// watch): the next round makes another.
func (p *Pool) spareDied(id string) {
	p.mu.Lock()
	s := p.spare
	if s == nil || s.w.ID != id {
		p.mu.Unlock()
		return
	}
	p.spare = nil
	p.mu.Unlock()
	p.log.Warn("spare worker exited", "worker", s.w.Name)
	p.removeSpare(s)
	p.pokeSpare()
}
