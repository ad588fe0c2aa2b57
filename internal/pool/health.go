package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/spillway-faas/spillway/internal/workerapi"
)

// ExitWatcher is optionally implemented by a Backend: it calls died with
// the id of each worker container of the pool that exits, until ctx ends.
// The pool ejects such a member before any call or probe notices.
type ExitWatcher interface {
	Watch(ctx context.Context, died func(id string)) error
}

// Probe pacing while a worker starts: the first probe goes at once, the
// next after startProbeFirst, each wait doubling up to startProbeMax. A
// refused connect costs the worker nothing, and the gap between the worker
// listening and the pool noticing is on every cold call's path.
const (
	startProbeFirst = 5 * time.Millisecond
	startProbeMax   = 25 * time.Millisecond
)

// waitHealthy probes m until it answers health() ready, or ctx ends.
func (p *Pool) waitHealthy(ctx context.Context, m *member) error {
	h, err := p.waitReady(ctx, m.client, m.name, m.sha256)
	if err != nil {
		return err
	}
	p.mu.Lock()
	m.completed, m.coldStarts = h.Completed, h.ColdStarts
	p.mu.Unlock()
	return nil
}

// waitReady probes the worker name on c until it answers health() ready,
// or ctx ends; sha256 is the function its label names.
func (p *Pool) waitReady(ctx context.Context, c WorkerConn, name, sha256 string) (workerapi.Health, error) {
	var last error
	wait := startProbeFirst
	for {
		h, err := p.probe(ctx, c)
		switch {
		case err == nil && h.Ready:
			if h.SHA256 != "" && sha256 != "" && h.SHA256 != sha256 {
				p.log.Warn("worker reports another function sha256 than its label", "worker", name, "reported", h.SHA256, "label", sha256)
			}
			return h, nil
		case err == nil:
			last = errors.New("health() says not ready")
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return workerapi.Health{}, fmt.Errorf("%w (last probe: %v)", ctx.Err(), last)
		case <-time.After(wait):
		}
		wait = min(2*wait, startProbeMax)
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
		var later deferred
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
				p.failLocked(m, fmt.Errorf("missed %d health probes: %w", m.healthFail, results[i]), &later)
			}
		}
		p.mu.Unlock()
		later.run()
	}
}

// watchLoop ejects members whose container the backend reports dead. It
// re-subscribes after errors until the pool closes.
func (p *Pool) watchLoop(w ExitWatcher) {
	defer p.wg.Done()
	for p.ctx.Err() == nil {
		err := w.Watch(p.ctx, func(id string) {
			p.spareDied(id)
			var later deferred
			p.mu.Lock()
			for _, m := range p.members {
				if m.id == id && (m.state == StateReady || m.state == StateStarting) {
					p.failLocked(m, errors.New("container exited"), &later)
				}
			}
			p.mu.Unlock()
			later.run()
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
