// Package control is what lb runs beside the calls:
//
//   - Rollout follows the function's versions: it records what the workers
//     run and rolls the pool to each new version; CloudRollout keeps the
//     cloud on the wanted version (the controller deploys it with retry and
//     backoff, the other replicas adopt the controller's deployment);
//   - Elasticity is the collect → decide → act loop that sizes the pool:
//     the load of every replica, the autoscaler's decision, pool.Scale;
//   - KeepWarm pings the Lambda of a function with no ready worker
//     (CLOUD_KEEP_WARM) through the cloud budget, so its next call finds a
//     warm environment;
//   - Report assembles the status (status(), /status, /ui) and the pool's,
//     the cloud's and the replicas' metrics.
//
// Each loop is an owner: Run(ctx) runs it until ctx ends or Close, which
// stops it and waits for it. Every part reads the pool, the cloud, the
// replicas and the gateway through the small interfaces it declares, and
// time through a Clock, so tests drive them with fakes and a hand-moved
// clock. cmd/lb wires the real ones.
package control

import (
	"context"
	"sync"
	"time"
)

// Clock is the time the loops read and wait on; nil in a part's
// dependencies means the real clock.
type Clock interface {
	Now() time.Time
	// After delivers once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func clockOr(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

// loop is one owner's goroutine: run blocks in body until ctx ends or close
// is called; close stops it and waits for it. A loop runs at most once, and
// never after close.
type loop struct {
	mu     sync.Mutex // guards the fields below
	cancel context.CancelFunc
	done   chan struct{} // closed when body returned
	closed bool
}

func (l *loop) run(ctx context.Context, body func(ctx context.Context)) {
	l.mu.Lock()
	if l.closed || l.done != nil {
		l.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	l.cancel, l.done = cancel, make(chan struct{})
	l.mu.Unlock()
	defer close(l.done)
	defer cancel()
	body(ctx)
}

func (l *loop) close() {
	l.mu.Lock()
	l.closed = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
