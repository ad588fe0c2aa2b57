package control

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
)

// PingBilled is what one keep-warm ping is priced at in the cloud budget:
// a call billed 1 ms (the shim answers a ping in about that; Lambda bills
// by the millisecond).
const PingBilled = time.Millisecond

// CountedPool is the part of the worker pool KeepWarm reads
// (internal/pool.Pool).
type CountedPool interface {
	Counts() spillway.PoolCounts
}

// Pinger sends the keep-warm ping (internal/cloud.Offloader).
type Pinger interface {
	// Ready reports whether a call sent now would go: deployed, breaker
	// not open.
	Ready() bool
	Ping(ctx context.Context) (cloud.PingResult, error)
}

var _ Pinger = (*cloud.Offloader)(nil)

// CloudBudget is the cloud budget every path to the cloud spends from
// (internal/policy.Budget).
type CloudBudget interface {
	Take(now time.Time, roundTrip time.Duration) bool
}

// Controllers tells whether this lb replica acts for the pool
// (internal/cluster.Replica).
type Controllers interface {
	Controller() bool
}

// KeepWarmConfig sets the loop.
type KeepWarmConfig struct {
	Every time.Duration // CLOUD_KEEP_WARM_EVERY: at most one ping this often
	// Tick is how often it looks whether the function has a ready worker
	// (ELASTICITY_SLEEP); 0 means Every.
	Tick time.Duration
	// Timeout bounds one ping, a cold start included; 0 means 30s.
	Timeout time.Duration
}

// KeepWarmDeps are what the loop reads and acts on.
type KeepWarmDeps struct {
	Pool  CountedPool
	Cloud Pinger
	// Budget, when set, is spent before each ping; a ping it refuses is
	// not sent (and is tried again at the next tick).
	Budget CloudBudget
	// Peers: only the controller pings, so several lb replicas do not
	// multiply the pings; nil means a lone lb.
	Peers Controllers
	// Warmed learns each answered ping (internal/policy.Estimator's
	// ObserveKeepWarm: the cloud has a warm environment); nil tells no one.
	Warmed func(now time.Time)
	Log    *slog.Logger
	Clock  Clock
}

// KeepWarmStats are the loop's counters since it was built.
type KeepWarmStats struct {
	Pings      int64     // pings answered
	ColdStarts int64     // of which started a new environment
	Failed     int64     // pings that failed (the cloud's error is logged)
	NoBudget   int64     // pings the cloud budget refused
	Last       time.Time // the last ping sent; zero: none
}

// KeepWarm keeps one cloud execution environment warm for a function with
// no ready worker (scaled to zero, CLOUD_KEEP_WARM=true): each tick, on the
// controller, if the pool has no ready worker and the last ping is Every
// old (or there was none since the function last had a worker), it sends
// one ping through the cloud budget. A call that finds the pool at zero
// then goes to a warm Lambda instead of waiting for its cold start.
type KeepWarm struct {
	cfg   KeepWarmConfig
	d     KeepWarmDeps
	log   *slog.Logger
	clock Clock
	loop  loop

	mu    sync.Mutex // guards the fields below
	stats KeepWarmStats
	// last is the last ping sent while at zero; zero once the function
	// had a ready worker again, so that reaching zero pings at once.
	last time.Time
}

// NewKeepWarm builds the loop; Run runs it.
func NewKeepWarm(cfg KeepWarmConfig, d KeepWarmDeps) *KeepWarm {
	if cfg.Tick <= 0 {
		cfg.Tick = cfg.Every
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	k := &KeepWarm{cfg: cfg, d: d, log: d.Log, clock: clockOr(d.Clock)}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	return k
}

// Run ticks until ctx ends or Close.
func (k *KeepWarm) Run(ctx context.Context) {
	k.loop.run(ctx, func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-k.clock.After(k.cfg.Tick):
			}
			k.step(ctx, k.clock.Now())
		}
	})
}

// Close stops the loop and waits for it (and for a ping in flight).
func (k *KeepWarm) Close() { k.loop.close() }

// Stats returns the counters.
func (k *KeepWarm) Stats() KeepWarmStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stats
}

// due decides whether to ping now: the function has no ready worker, this
// replica acts for the pool, and no ping was sent in the last Every since
// it reached zero.
func (k *KeepWarm) due(now time.Time) bool {
	if k.d.Peers != nil && !k.d.Peers.Controller() {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.d.Pool.Counts().Ready > 0 {
		k.last = time.Time{}
		return false
	}
	return k.last.IsZero() || now.Sub(k.last) >= k.cfg.Every
}

// step is one tick: decide, then ping.
func (k *KeepWarm) step(ctx context.Context, now time.Time) {
	if !k.due(now) || !k.d.Cloud.Ready() {
		return
	}
	if k.d.Budget != nil && !k.d.Budget.Take(now, PingBilled) {
		k.mu.Lock()
		k.stats.NoBudget++
		k.mu.Unlock()
		k.log.Debug("keep-warm ping skipped: the cloud budget is spent")
		return
	}
	k.mu.Lock()
	k.last, k.stats.Last = now, now
	k.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	res, err := k.d.Cloud.Ping(pctx)
	k.mu.Lock()
	if err != nil {
		k.stats.Failed++
	} else {
		k.stats.Pings++
		if res.ColdStart {
			k.stats.ColdStarts++
		}
	}
	k.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			k.log.Warn("keep-warm ping failed", "err", err)
		}
		return
	}
	k.log.Debug("keep-warm ping", "cold_start", res.ColdStart, "latency", res.Latency)
	if k.d.Warmed != nil {
		k.d.Warmed(k.clock.Now())
	}
}
