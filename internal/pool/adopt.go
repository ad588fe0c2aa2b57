package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

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
	if p.spare != nil {
		known[p.spare.w.ID] = true // this pool's own, frozen
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
			if w.Running && !w.Stopping && w.Addr != "" && w.Key() == Key(fn) && w.Function == fn.Name {
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
	var unused []WorkerConn // healthy workers not kept: their connections close after the unlock
	// started are the new workers of a service, made since the pool opened:
	// their starts are measured from the engine's creation of each.
	type start struct {
		w     Worker
		after time.Duration
	}
	var started []start
	p.mu.Lock()
	for _, v := range vs {
		if !v.keep || kept >= p.cfg.Max || p.closed {
			if v.c != nil && v.keep {
				unused = append(unused, v.c)
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
		kept++
		if p.svc != nil && v.w.Created.After(p.openedAt) {
			p.counters.Started++
			started = append(started, start{v.w, time.Since(v.w.Created)})
		} else {
			p.counters.Adopted++
		}
	}
	if kept > 0 {
		p.notifyLocked()
		p.grantLocked()
	}
	p.mu.Unlock()
	for _, c := range unused {
		c.CloseIdleConnections()
	}
	for _, s := range started {
		if p.log == nil {
			break
		}
		p.log.Info("worker ready", "worker", s.w.Name, "addr", s.w.Addr, "version", s.w.Version,
			"after", s.after.Round(time.Millisecond))
		if p.OnWorkerReady != nil {
			p.OnWorkerReady(s.after)
		}
	}

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
// short connect timeout). Call it without p.mu held.
func (p *Pool) connect(addr string) WorkerConn {
	if p.Connect != nil {
		return p.Connect(addr)
	}
	p.mu.Lock()
	concurrency := p.cfg.Concurrency // Reconfigure may change it
	p.mu.Unlock()
	return workerapi.NewClient(addr, workerapi.ClientOptions{
		DialTimeout:    p.cfg.DialTimeout,
		IdleConns:      concurrency + 2,
		MaxResultBytes: p.cfg.MaxResultBytes,
	})
}

func (p *Pool) baseCtx() context.Context {
	if p.ctx == nil {
		return context.Background()
	}
	return p.ctx
}
