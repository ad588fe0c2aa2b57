package pool

import (
	"context"
	"fmt"
	"time"
)

// ServiceBackend is a Backend whose engine keeps a function's workers as
// the replicas of one service (Swarm). The pool does not start or remove
// workers one by one there: it tells the engine how many replicas of which
// version to run (Apply), and the engine starts them, replaces those that
// exit, rolls them to a new version (start first) and picks which one a
// scale-down stops. The pool serves the workers the engine lists (as a
// follower does), takes a worker out of rotation as soon as the list shows
// it stopping, and the worker finishes its calls before it exits (it keeps
// taking calls for a moment after it is told to stop, until lb has seen
// the list: workerapi.Env.StopDelay).
type ServiceBackend interface {
	Backend
	// Apply makes the function's service run replicas workers of spec:
	// it creates the service, changes its replica count, or rolls it to
	// spec (start first) when what the workers run differs. It does not
	// wait for the workers.
	Apply(ctx context.Context, spec WorkerSpec, replicas int) error
	// RemoveService removes the function's service (its workers stop with
	// their grace) and the code no worker uses any more.
	RemoveService(ctx context.Context) error
}

// DefaultFollowInterval is how often a pool on a ServiceBackend lists its
// workers when Config.FollowInterval is zero.
const DefaultFollowInterval = 500 * time.Millisecond

// reapplyEvery is how often the controller applies its desired state to
// the service even when nothing changed: a replica count changed by hand
// is set back.
const reapplyEvery = 10 * time.Second

// applied is what the controller last told the service.
type applied struct {
	spec     string // specID of the WorkerSpec
	replicas int
	at       time.Time
}

// specID tells apart the WorkerSpecs a service must be rolled between.
func specID(s WorkerSpec) string {
	return fmt.Sprintf("%s v%d c%d t%s r%d", Key(s.Function), s.Function.Version, s.Concurrency, s.LocalTimeout, s.MaxResultBytes)
}

// applyService tells the service what the controller wants, when that
// changed or reapplyEvery passed. Followers and a closed pool do nothing.
func (p *Pool) applyService(ctx context.Context, svc ServiceBackend) {
	p.mu.Lock()
	if p.follower || p.promoting || p.closed {
		p.mu.Unlock()
		return
	}
	spec, n := p.specLocked(), p.desired
	last := p.lastApplied
	p.mu.Unlock()
	id := specID(spec)
	if last.spec == id && last.replicas == n && time.Since(last.at) < reapplyEvery {
		return
	}
	if err := svc.Apply(ctx, spec, n); err != nil {
		p.mu.Lock()
		p.lastStartErr = err
		p.mu.Unlock()
		p.log.Warn("apply the function's service", "version", spec.Function.Version, "replicas", n, "err", err)
		return
	}
	p.mu.Lock()
	p.lastApplied = applied{spec: id, replicas: n, at: time.Now()}
	p.mu.Unlock()
	if last.spec != id || last.replicas != n {
		p.log.Info("service applied", "version", spec.Function.Version, "replicas", n)
	}
}

// kickFollow wakes the follow loop without blocking.
func (p *Pool) kickFollow() {
	select {
	case p.followKick <- struct{}{}:
	default:
	}
}
