package control

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
)

// ScaledPool is the part of the worker pool the elasticity loop reads and
// resizes (internal/pool.Pool).
type ScaledPool interface {
	Counts() spillway.PoolCounts
	// Scale sets the desired size (clamped to the pool's bounds).
	Scale(desired int) int
}

// LoadSource is this lb's load of its function (internal/gateway.Gateway).
type LoadSource interface {
	Load() spillway.Load
}

// Estimator gives the arrival rate, service time and worker start time
// learned online (internal/policy.Estimator).
type Estimator interface {
	Estimates(now time.Time) policy.Estimates
}

// Peers is what the elasticity loop reads of the pool's other lb replicas
// (internal/cluster.Replica).
type Peers interface {
	// Controller reports whether this replica sizes the pool now.
	Controller() bool
	// OthersLoad sums the other live replicas' load of a function.
	OthersLoad(function string) spillway.Load
}

// ElasticityConfig sets the loop.
type ElasticityConfig struct {
	Function string        // FAAS_FUNCTION_NAME: whose load is summed over the replicas
	Tick     time.Duration // ELASTICITY_SLEEP
}

// ElasticityDeps are what the loop collects from and acts on.
type ElasticityDeps struct {
	Pool       ScaledPool
	Calls      LoadSource
	Autoscaler policy.Autoscaler
	Estimator  Estimator // nil: no rates or times learned
	// Peers are the pool's other lb replicas; nil means a lone lb, always
	// the controller.
	Peers Peers
	// Events learns each decision that changes the pool's size; nil tells
	// no one.
	Events spillway.EventSink
	// Share bounds the autoscaler's size by the function's share of
	// MAX_TOTAL_WORKERS (internal/share.Ledger.Target for this function):
	// it gets the wanted size, the workers now and the calls in flight, and
	// returns the size allowed now. nil: no bound beyond the pool's own.
	Share func(want, have, inFlight int) int
	Log   *slog.Logger
	Clock Clock
}

// Elasticity is the collect → decide → act loop: every tick, on the
// controller only, it snapshots the load of every replica, asks the
// autoscaler for a size and hands it to the pool.
type Elasticity struct {
	cfg   ElasticityConfig
	d     ElasticityDeps
	log   *slog.Logger
	clock Clock
	loop  loop

	kick chan struct{} // a step is wanted now (buffer 1)

	scalerMu sync.Mutex // guards scaler
	scaler   policy.Autoscaler

	mu        sync.Mutex // guards lastScale
	lastScale string
}

// NewElasticity builds the loop; Run runs it.
func NewElasticity(cfg ElasticityConfig, d ElasticityDeps) *Elasticity {
	e := &Elasticity{cfg: cfg, d: d, log: d.Log, clock: clockOr(d.Clock), kick: make(chan struct{}, 1), scaler: d.Autoscaler}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e
}

// Run ticks until ctx ends or Close.
func (e *Elasticity) Run(ctx context.Context) {
	e.loop.run(ctx, func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-e.clock.After(e.cfg.Tick):
			case <-e.kick:
			}
			e.step(e.clock.Now())
		}
	})
}

// Close stops the loop and waits for it.
func (e *Elasticity) Close() { e.loop.close() }

// SetAutoscaler replaces the autoscaler from the next step on (the
// function's --min or --max changed).
func (e *Elasticity) SetAutoscaler(a policy.Autoscaler) {
	e.scalerMu.Lock()
	e.scaler = a
	e.scalerMu.Unlock()
}

// Kick asks for a step now rather than at the next tick: a call found a
// function at zero workers, and its worker should start at once.
func (e *Elasticity) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// LastScale is the last change of the pool's size, when and why (status'
// counters.last_scale); "" before the first.
func (e *Elasticity) LastScale() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastScale
}

// step is one tick: collect, decide, act.
func (e *Elasticity) step(now time.Time) {
	if e.d.Peers != nil && !e.d.Peers.Controller() {
		return // another replica sizes the pool
	}
	pc := e.d.Pool.Counts()
	own := e.d.Calls.Load()
	snap := policy.ScaleSnapshot{
		Now:      now,
		Members:  pc.Members,
		Ready:    pc.Ready,
		InFlight: own.InFlight,
		Queued:   own.Queued,
		LastCall: own.LastCall,
	}
	if e.d.Estimator != nil {
		est := e.d.Estimator.Estimates(now)
		snap.ArrivalRate = est.ArrivalRate
		snap.ServiceTime = est.LocalService
		snap.ColdStart = est.WorkerColdStart
	}
	if e.d.Peers != nil {
		// The pool serves every replica: size it for their sum.
		o := e.d.Peers.OthersLoad(e.cfg.Function)
		snap.InFlight += o.InFlight
		snap.Queued += o.Queued
		snap.ArrivalRate += o.ArrivalRate
		if o.LastCall.After(snap.LastCall) {
			snap.LastCall = o.LastCall
		}
	}
	e.scalerMu.Lock()
	scaler := e.scaler
	e.scalerMu.Unlock()
	dec := scaler.Decide(snap)
	if e.d.Share != nil {
		if allowed := e.d.Share(dec.Desired, pc.Members, snap.InFlight); allowed != dec.Desired {
			dec.Reason = fmt.Sprintf("%s; %d allowed by the MAX_TOTAL_WORKERS share", dec.Reason, allowed)
			dec.Desired = allowed
		}
	}
	if dec.Desired != pc.Desired {
		e.log.Info("scale", "from", pc.Desired, "to", dec.Desired, "reason", dec.Reason,
			"in_flight", snap.InFlight, "queued", snap.Queued, "rate", fmt.Sprintf("%.1f/s", snap.ArrivalRate))
		e.mu.Lock()
		e.lastScale = fmt.Sprintf("%s %d->%d (%s)", now.UTC().Format(time.RFC3339), pc.Desired, dec.Desired, dec.Reason)
		e.mu.Unlock()
		if e.d.Events != nil {
			kind := spillway.EventScaleUp
			if dec.Desired < pc.Desired {
				kind = spillway.EventScaleDown
			}
			e.d.Events.Event(kind, fmt.Sprintf("%d → %d workers: %s (in flight %d, queued %d, %.1f calls/s)",
				pc.Desired, dec.Desired, dec.Reason, snap.InFlight, snap.Queued, snap.ArrivalRate))
		}
	}
	e.d.Pool.Scale(dec.Desired)
}
