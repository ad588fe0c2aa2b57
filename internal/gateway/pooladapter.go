package gateway

import (
	"context"

	"github.com/spillway-faas/spillway/internal/pool"
)

// PoolOf adapts *pool.Pool to the gateway's Pool.
func PoolOf(p *pool.Pool) Pool { return poolAdapter{p: p} }

type poolAdapter struct{ p *pool.Pool }

var (
	_ Pool  = poolAdapter{}
	_ Lease = (*pool.Lease)(nil)
)

func (a poolAdapter) Acquire(ctx context.Context) (Lease, error) {
	l, err := a.p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (a poolAdapter) TryAcquire() (Lease, bool) {
	l, ok := a.p.TryAcquire()
	if !ok {
		return nil, false
	}
	return l, true
}

func (a poolAdapter) Counts() PoolCounts { return PoolCounts(a.p.Counts()) }
