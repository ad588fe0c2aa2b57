package pool

import (
	"context"
	"fmt"

	"github.com/spillway-faas/spillway"
)

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
	p.mu.Unlock()
	p.kickFollow() // a service rolls when told
	if p.Events != nil {
		p.Events.Event(spillway.EventRoll, fmt.Sprintf("to version %d (sha256 %.12s): new workers start, old ones drain", fn.Version, fn.SHA256))
	}
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
