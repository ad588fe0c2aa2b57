package gateway

import (
	"context"
	"sync"

	"github.com/spillway-faas/spillway/internal/pool"
)

// PoolOf adapts *pool.Pool to the gateway's Pool.
func PoolOf(p *pool.Pool) Pool { return &poolAdapter{p: p} }

type poolAdapter struct {
	p *pool.Pool
	// served holds the workers that have had a lease, so a worker's first call
	// is reported as its cold start. Container names are unique per start, so
	// the set grows only by the workers ever started.
	served sync.Map
}

var _ Pool = (*poolAdapter)(nil)

func (a *poolAdapter) Acquire(ctx context.Context) (Lease, error) {
	l, err := a.p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return a.lease(l), nil
}

func (a *poolAdapter) TryAcquire() (Lease, bool) {
	l, ok := a.p.TryAcquire()
	if !ok {
		return nil, false
	}
	return a.lease(l), true
}

func (a *poolAdapter) lease(l *pool.Lease) Lease {
	_, seen := a.served.LoadOrStore(l.Worker(), struct{}{})
	return &poolLease{Lease: l, cold: !seen}
}

func (a *poolAdapter) Counts() PoolCounts {
	s := a.p.Snapshot()
	c := PoolCounts{Members: len(s.Members), Ready: s.Ready, ReadySlots: s.Capacity, Desired: s.Desired}
	for _, m := range s.Members {
		switch m.State {
		case pool.StateStarting:
			c.StartingSlots += m.Capacity
		case pool.StateReady:
			if free := m.Capacity - m.InFlight; free > 0 {
				c.FreeSlots += free
			}
		}
	}
	return c
}

type poolLease struct {
	*pool.Lease
	cold bool
}

func (l *poolLease) ColdStart() bool { return l.cold }
