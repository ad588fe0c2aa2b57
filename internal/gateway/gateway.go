// Package gateway is lb's request path: it places each call on a local worker
// or in the cloud through the policies, retries a call whose worker failed,
// hands a call that ran past LOCAL_TIMEOUT to the cloud, keeps the call
// counters and metrics, and serves lb's port (handler.go). It knows the pool
// and the cloud only through the small interfaces below; what runs beside
// the calls (rollout, elasticity, status) is internal/control's.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
)

// Config is what the request path needs of lb's configuration.
type Config struct {
	FunctionName string        // the function this gateway serves: its metrics' function label
	LocalTimeout time.Duration // LOCAL_TIMEOUT: a local call's deadline
	// CloudTimeout (LAMBDA_TIMEOUT) bounds a cloud run: a call never
	// outlives LocalTimeout + CloudTimeout + 5s.
	CloudTimeout    time.Duration
	LocalSlots      int    // MAX_SERVERS × WORKER_CONCURRENCY: the offload policy's MaxSlots
	MaxQueued       int    // MAX_QUEUED: calls that may wait for a worker at once (0: no limit)
	MaxRequestBytes int64  // LB_MAX_REQUEST_BYTES
	AuthToken       string // LB_AUTH_TOKEN: required of every caller but /healthz when set
	Pprof           bool   // LB_PPROF: serve /debug/pprof/
}

// Pool is the part of the worker pool the gateway needs (internal/pool.Pool).
type Pool interface {
	// Acquire waits for a free slot on a ready worker, or for ctx to end.
	Acquire(ctx context.Context) (spillway.Lease, error)
	// TryAcquire takes a free slot if there is one now.
	TryAcquire() (spillway.Lease, bool)
	// Counts is a cheap snapshot of the pool's sizes and slots.
	Counts() spillway.PoolCounts
}

// countingPool is a Pool that takes a free slot and the counts the
// placement decision reads under one lock (internal/pool's does): the
// counts are from before the lease.
type countingPool interface {
	TryAcquireCounts() (spillway.Lease, spillway.PoolCounts, bool)
}

// Cloud is the offload client (internal/cloud.Offloader).
type Cloud interface {
	Invoke(ctx context.Context, c spillway.CloudCall) (spillway.CloudResult, error)
	// Ready is false when the cloud is off, not deployed, or its breaker is open.
	Ready() bool
}

// Deps are the gateway's collaborators, built by cmd/lb.
type Deps struct {
	Pool      Pool
	Cloud     Cloud // nil when CLOUD=off
	Offloader policy.Offloader
	// Budget is the cloud budget every path to the cloud spends from; the
	// Offloader must share it (policy.OffloadConfig.Budget). nil: no caps.
	Budget    *policy.Budget
	Estimator *policy.Estimator
	// Function is the function the workers run now (its Idempotent flag
	// decides what may be retried); nil means the zero Function.
	Function func() spillway.Function
	// CloudCurrent reports whether the cloud runs the code the workers run;
	// while it does not (a deploy of a new version failed or is under way)
	// no call is sent to the cloud. nil means always.
	CloudCurrent func() bool
	// Metrics is the registry the gateway's instruments join (lb's
	// /metrics); nil gives the gateway one of its own.
	Metrics *prometheus.Registry
	// LocalSlots, when set, is the offload policy's MaxSlots now in place
	// of Config.LocalSlots: the slots of the workers the function may have
	// under its share of MAX_TOTAL_WORKERS, so that calls the cap keeps
	// from a local worker follow the offload policy instead of waiting.
	LocalSlots func() int
	// Wake, when set, is called by a call that finds no ready worker: it
	// asks for a worker at once and reports whether the function scales
	// to zero (its min is 0). If it does, the call goes to the cloud with
	// reason cold while the worker starts, or waits for it when a frozen
	// spare is there to thaw or the cloud cannot take the call; otherwise
	// the offload policy places it as usual.
	Wake func() bool
	// PolicyWeighsStarts says the offload policy weighs a worker's start
	// against the cloud itself (latency-aware): a call that finds no
	// ready worker still wakes one, but the policy places it.
	PolicyWeighsStarts bool
	// Arrived learns of every call as it arrives (the function's share of
	// MAX_TOTAL_WORKERS reads when it was last used); nil for no one.
	Arrived func()
	Log     *slog.Logger
	Now     func() time.Time // nil means time.Now
}

// Gateway answers calls. Build it with New.
type Gateway struct {
	cfg     Config
	d       Deps
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	inFlight      atomic.Int64 // accepted, not yet answered
	localInFlight atomic.Int64 // holding a worker slot
	cloudInFlight atomic.Int64
	queued        atomic.Int64 // waiting for a worker slot
	lastCall      atomic.Int64 // unix nanos of the last arrival; 0: none
	localTimeout  atomic.Int64 // LOCAL_TIMEOUT or the function's --timeout, nanoseconds (SetLocalTimeout)
	closing       atomic.Bool
	ready         atomic.Bool

	countsMu sync.Mutex // guards counts
	counts   spillway.Counters
}

// timeoutMargin lets the worker's own timeout fault arrive before lb gives up
// on the call, so a slow function is told apart from a hung worker.
const timeoutMargin = 500 * time.Millisecond

// maxLocalAttempts bounds retries of a call whose worker failed.
const maxLocalAttempts = 3

// New builds a gateway.
func New(cfg Config, d Deps) *Gateway {
	g := &Gateway{cfg: cfg, d: d, log: d.Log, now: d.Now, metrics: newMetrics(d.Metrics, cfg.FunctionName)}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.localTimeout.Store(int64(cfg.LocalTimeout))
	g.counts.Reasons = map[string]int64{}
	g.counts.ErrorsByFault = map[string]int64{}
	return g
}

// Metrics is the registry behind /metrics (the operator page reads the
// latency histogram from it).
func (g *Gateway) Metrics() prometheus.Gatherer { return g.metrics.registry }

// SetLocalTimeout changes a local call's deadline (the function was
// published again with another --timeout); calls already running keep
// theirs.
func (g *Gateway) SetLocalTimeout(d time.Duration) { g.localTimeout.Store(int64(d)) }

func (g *Gateway) timeout() time.Duration { return time.Duration(g.localTimeout.Load()) }

// UnregisterMetrics takes the function's series off /metrics (it is no
// longer served).
func (g *Gateway) UnregisterMetrics() { g.metrics.unregister() }

// SetReady marks the gateway ready (or not) for /healthz.
func (g *Gateway) SetReady(ok bool) { g.ready.Store(ok) }

// Ready reports whether lb serves calls.
func (g *Gateway) Ready() bool { return g.ready.Load() && !g.closing.Load() }

// Drain refuses new calls and waits until in-flight ones finish or ctx ends.
func (g *Gateway) Drain(ctx context.Context) error {
	g.closing.Store(true)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for g.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain with %d calls in flight: %w", g.inFlight.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Invoke runs one call and reports where and how it ran.
func (g *Gateway) Invoke(ctx context.Context, param any, opts InvokeOptions) (spillway.Invocation, error) {
	if g.closing.Load() {
		return spillway.Invocation{}, fmt.Errorf("lb is shutting down: %w", spillway.ErrUnavailable)
	}
	start := g.now()
	g.inFlight.Add(1)
	g.metrics.inFlight.Inc()
	defer func() {
		g.inFlight.Add(-1)
		g.metrics.inFlight.Dec()
	}()
	if g.d.Estimator != nil {
		g.d.Estimator.ObserveArrival(start)
	}
	g.lastCall.Store(start.UnixNano())
	if g.d.Arrived != nil {
		g.d.Arrived()
	}
	// A call never outlives a local attempt plus a full cloud attempt.
	budget := g.timeout() + g.cfg.CloudTimeout + 5*time.Second
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()

	c := &call{id: newCallID(), param: param}
	if g.d.Function != nil {
		c.fn = g.d.Function()
	}
	inv, err := g.place(ctx, c, opts, start)
	inv.Duration = g.now().Sub(start)
	g.record(inv, err)
	if err != nil {
		if !isFunctionError(err) {
			// The details (worker names, addresses, URLs) stay here; the
			// caller's fault carries only the call id.
			g.log.Warn("call failed", "call_id", c.id, "route", inv.Route, "reason", inv.Reason,
				"worker", inv.Worker, "fault", spillway.FaultCode(err), "err", err)
		}
		err = &CallError{ID: c.id, Err: err}
	}
	return inv, err
}

// call is one accepted call on its way through the gateway.
type call struct {
	id    string // sent to the cloud and logged with every re-run and failure
	param any
	fn    spillway.Function // what the workers ran when the call arrived
}

// newCallID is 16 hex digits.
func newCallID() string {
	const hex = "0123456789abcdef"
	var b [16]byte
	n := rand.Uint64()
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = hex[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

// CallError is a failed call with the id its log lines carry.
type CallError struct {
	ID  string
	Err error
}

func (e *CallError) Error() string { return e.Err.Error() + " (call id " + e.ID + ")" }
func (e *CallError) Unwrap() error { return e.Err }

// rerun counts and logs one more run of a call that provably did not
// complete where it was sent before.
func (g *Gateway) rerun(c *call, reason string, err error) {
	g.metrics.reruns.WithLabelValues(reason).Inc()
	g.log.Warn("running a call again", "call_id", c.id, "reason", reason, "err", err)
}

func (g *Gateway) place(ctx context.Context, c *call, opts InvokeOptions, start time.Time) (spillway.Invocation, error) {
	switch opts.Route {
	case spillway.RouteLocal:
		lease, err := g.acquire(ctx, 0)
		if err != nil {
			return spillway.Invocation{Route: spillway.RouteLocal, Reason: spillway.ReasonForced}, err
		}
		return g.runLocal(ctx, c, lease, spillway.ReasonForced, false)
	case spillway.RouteCloud:
		return g.runCloud(ctx, c, spillway.ReasonForced, false)
	}

	waited := time.Duration(0)
	// The first decision reads the counts taken with a free slot, if there
	// is one, under the pool's one lock; the slot goes back if the policy
	// sends the call to the cloud.
	var (
		lease spillway.Lease
		dec   policy.OffloadDecision
	)
	var pc spillway.PoolCounts
	if cp, ok := g.d.Pool.(countingPool); ok {
		lease, pc, _ = cp.TryAcquireCounts()
	} else {
		pc = g.d.Pool.Counts()
	}
	if lease == nil && pc.ReadySlots == 0 && g.d.Wake != nil && g.d.Wake() && !g.d.PolicyWeighsStarts {
		// Scaled to zero (or not yet up from it): a worker was asked for
		// at once, and the call goes to the cloud while it starts; with
		// the cloud off, not current, refusing or over budget, it waits
		// for the worker within its deadline (the loop below).
		// A frozen spare joins in tens of milliseconds, sooner than any
		// cloud call: then the call waits for it.
		if pc.SpareSlots == 0 && g.cloudReady() && g.cloudCurrent() && g.takeBudget() {
			dec = policy.OffloadDecision{Route: spillway.RouteCloud, Reason: spillway.ReasonCold}
		} else {
			dec = policy.OffloadDecision{Route: spillway.RouteLocal}
		}
	} else {
		dec = g.decideFrom(pc, waited)
	}
	for {
		if dec.Route == spillway.RouteCloud {
			if lease != nil {
				lease.Release()
				lease = nil
			}
			// The policy took this call's share of the budget.
			inv, err := g.runCloud(ctx, c, dec.Reason, true)
			if err == nil || !errors.Is(err, spillway.ErrCloudUnavailable) || ctx.Err() != nil {
				return inv, err
			}
			if !errors.Is(err, spillway.ErrCloudNotRun) && !c.fn.Idempotent {
				// A 5xx or a lost answer: the function may have run, and it
				// runs at most once unless published --idempotent.
				return inv, err
			}
			// The cloud did not run the call (throttled, breaker open, not
			// deployed), or the function may run twice: a call the policy
			// chose to offload can still wait for a local worker.
			lease, aerr := g.acquire(ctx, 0)
			if aerr != nil {
				return inv, err
			}
			g.rerun(c, "cloud_refused", err)
			return g.runLocal(ctx, c, lease, spillway.ReasonNone, false)
		}
		var err error
		if lease == nil {
			lease, err = g.acquire(ctx, dec.MaxWait)
		}
		if err == nil {
			inv, err := g.runLocal(ctx, c, lease, spillway.ReasonNone, true)
			if !errors.Is(err, errPlaceAgain) {
				return inv, err
			}
			lease = nil
			waited = g.now().Sub(start)
			dec = g.decide(waited)
			continue
		}
		if !errors.Is(err, errWaitExpired) {
			return spillway.Invocation{Route: spillway.RouteLocal}, err
		}
		// The policy let the call wait this long: ask it again.
		waited = g.now().Sub(start)
		dec = g.decide(waited)
	}
}

func (g *Gateway) decide(waited time.Duration) policy.OffloadDecision {
	return g.decideFrom(g.d.Pool.Counts(), waited)
}

func (g *Gateway) decideFrom(pc spillway.PoolCounts, waited time.Duration) policy.OffloadDecision {
	now := g.now()
	in := policy.OffloadInput{
		Now:            now,
		InFlight:       int(g.localInFlight.Load()),
		Queued:         int(g.queued.Load()),
		CloudInFlight:  int(g.cloudInFlight.Load()),
		MaxSlots:       g.localSlots(),
		ReadySlots:     pc.ReadySlots,
		StartingSlots:  pc.StartingSlots,
		FreeSlots:      pc.FreeSlots,
		CloudAvailable: g.cloudReady(),
		Waited:         waited,
	}
	if g.d.Estimator != nil {
		in.Estimates = g.d.Estimator.Estimates(now)
	}
	return g.d.Offloader.Decide(in)
}

func (g *Gateway) localSlots() int {
	if g.d.LocalSlots != nil {
		return g.d.LocalSlots()
	}
	return g.cfg.LocalSlots
}

// errPlaceAgain says the worker a call was placed on answered busy: the
// policy decides again (another worker, wait, or the cloud).
var errPlaceAgain = errors.New("worker busy: place the call again")

// ErrQueueFull is the error of a call that found MAX_QUEUED calls already
// waiting for a worker; it is a -32008 fault (HTTP 503 on plain HTTP).
var ErrQueueFull = fmt.Errorf("lb's wait queue is full: %w", spillway.ErrUnavailable)

// errWaitExpired says a call waited its MaxWait for a slot without getting one.
var errWaitExpired = errors.New("local wait expired")

// acquire takes a worker slot, waiting at most maxWait (0: until ctx ends).
// At most MAX_QUEUED calls wait at once; past that a call fails at once.
func (g *Gateway) acquire(ctx context.Context, maxWait time.Duration) (spillway.Lease, error) {
	if lease, ok := g.d.Pool.TryAcquire(); ok {
		return lease, nil
	}
	if n := g.queued.Add(1); g.cfg.MaxQueued > 0 && n > int64(g.cfg.MaxQueued) {
		g.queued.Add(-1)
		g.metrics.queueFull.Inc()
		return nil, fmt.Errorf("%d calls already wait for a local worker (MAX_QUEUED=%d): %w", n-1, g.cfg.MaxQueued, ErrQueueFull)
	}
	g.metrics.queued.Inc()
	defer func() {
		g.queued.Add(-1)
		g.metrics.queued.Dec()
	}()
	wctx := ctx
	if maxWait > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, maxWait)
		defer cancel()
	}
	lease, err := g.d.Pool.Acquire(wctx)
	if err == nil {
		return lease, nil
	}
	if ctx.Err() == nil && wctx.Err() != nil {
		return nil, errWaitExpired
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("no local worker became free before the call's deadline: %w", spillway.ErrTimeout)
	}
	return nil, fmt.Errorf("wait for a local worker: %w", err)
}

// runLocal runs the call on lease's worker. A failed worker is retried on
// another one (or the cloud); a call past LOCAL_TIMEOUT goes to the cloud when
// fallback is allowed.
//
// Both are re-runs of a call that did not complete: the worker died or was
// cut off mid-call (spillway.ErrWorkerFailed), or killed the call at its
// deadline (spillway.ErrTimeout); each is counted in spillway_reruns_total.
func (g *Gateway) runLocal(ctx context.Context, c *call, lease spillway.Lease, reason spillway.Reason, fallback bool) (spillway.Invocation, error) {
	for attempt := 1; ; attempt++ {
		inv := spillway.Invocation{Route: spillway.RouteLocal, Worker: lease.Worker(), Reason: reason, ColdStart: lease.ColdStart()}
		result, err := g.callWorker(ctx, lease, c.param)
		if err == nil {
			inv.Result = result
			return inv, nil
		}
		switch {
		case errors.Is(err, spillway.ErrTimeout):
			if fallback && g.cloudReady() && ctx.Err() == nil {
				g.rerun(c, "timeout", err)
				return g.runCloud(ctx, c, spillway.ReasonTimeout, false)
			}
			return inv, err
		case errors.Is(err, spillway.ErrWorkerBusy) && ctx.Err() == nil:
			// Another lb replica fills that worker: not a failure, and the
			// worker stays in rotation (the pool skips it for a moment).
			g.metrics.busy.Inc()
			g.countsMu.Lock()
			g.counts.Busy++
			g.countsMu.Unlock()
			if fallback {
				return inv, errPlaceAgain
			}
			next, aerr := g.acquire(ctx, 0)
			if aerr != nil {
				return inv, aerr
			}
			lease = next
		case errors.Is(err, spillway.ErrWorkerFailed) && ctx.Err() == nil:
			reason = spillway.ReasonRetry
			if attempt >= maxLocalAttempts {
				if fallback && g.cloudReady() {
					g.rerun(c, "worker_failed", err)
					return g.runCloud(ctx, c, spillway.ReasonRetry, false)
				}
				return inv, err
			}
			// Another worker, or the cloud if none frees up soon.
			wait := time.Duration(0)
			if fallback && g.cloudReady() {
				wait = g.timeout()
			}
			next, aerr := g.acquire(ctx, wait)
			if aerr != nil {
				if errors.Is(aerr, errWaitExpired) {
					g.rerun(c, "worker_failed", err)
					return g.runCloud(ctx, c, spillway.ReasonRetry, false)
				}
				return inv, err
			}
			g.rerun(c, "worker_failed", err)
			lease = next
		default:
			return inv, err
		}
	}
}

// callWorker runs one attempt and releases the lease.
func (g *Gateway) callWorker(ctx context.Context, lease spillway.Lease, param any) (any, error) {
	g.localInFlight.Add(1)
	start := g.now()
	wctx, cancel := context.WithTimeout(ctx, g.timeout()+timeoutMargin)
	result, err := lease.Call(wctx, param)
	hung := err != nil && ctx.Err() == nil && wctx.Err() != nil
	cancel()
	lease.Release()
	g.localInFlight.Add(-1)
	elapsed := g.now().Sub(start)
	if hung && !errors.Is(err, spillway.ErrTimeout) {
		// The worker did not even answer with its timeout fault.
		err = fmt.Errorf("worker %s did not answer within %v: %w", lease.Worker(), g.timeout(), spillway.ErrTimeout)
	}
	if g.d.Estimator != nil && (err == nil || errors.Is(err, spillway.ErrTimeout) || isFunctionError(err)) {
		g.d.Estimator.Observe(spillway.RouteLocal, elapsed, lease.ColdStart(), g.now())
	}
	return result, err
}

// cloudReady reports whether a call sent to the cloud now would run the
// workers' version there.
func (g *Gateway) cloudReady() bool {
	return g.d.Cloud != nil && g.d.Cloud.Ready() && g.cloudCurrent()
}

func (g *Gateway) cloudCurrent() bool { return g.d.CloudCurrent == nil || g.d.CloudCurrent() }

// takeBudget spends one cloud call from the budget.
func (g *Gateway) takeBudget() bool {
	if !g.d.Budget.Limited() {
		return true
	}
	now := g.now()
	var rt time.Duration
	if g.d.Estimator != nil {
		rt = g.d.Estimator.Estimates(now).CloudRoundTrip
	}
	return g.d.Budget.Take(now, rt)
}

// runCloud sends the call to the cloud. Every request it makes spends from
// the cloud budget: charged says the policy already took the first one's.
func (g *Gateway) runCloud(ctx context.Context, c *call, reason spillway.Reason, charged bool) (spillway.Invocation, error) {
	inv := spillway.Invocation{Route: spillway.RouteCloud, Reason: reason}
	if g.d.Cloud == nil {
		return inv, fmt.Errorf("call needs the cloud (%s) but CLOUD=off: %w: %w", reasonText(reason), spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	if !g.cloudCurrent() {
		err := fmt.Errorf("call needs the cloud (%s) but the cloud does not run the workers' version %d yet: %w: %w",
			reasonText(reason), c.fn.Version, spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
		return inv, g.timeoutOr(reason, err)
	}
	if !charged && !g.takeBudget() {
		g.metrics.budgetRefused.WithLabelValues(reasonText(reason)).Inc()
		err := fmt.Errorf("call needs the cloud (%s) but CLOUD_MAX_RPS / CLOUD_MAX_COST_PER_HOUR is spent: %w: %w",
			reasonText(reason), spillway.ErrBudgetExhausted, spillway.ErrCloudNotRun)
		return inv, g.timeoutOr(reason, err)
	}
	n := g.cloudInFlight.Add(1)
	if g.d.Estimator != nil {
		g.d.Estimator.ObserveCloudStart(int(n), g.now())
	}
	res, err := g.d.Cloud.Invoke(ctx, spillway.CloudCall{
		ID:         c.id,
		Param:      c.param,
		Idempotent: c.fn.Idempotent,
		Resend: func(why string) bool {
			if !g.takeBudget() {
				g.metrics.budgetRefused.WithLabelValues("cloud_" + why).Inc()
				return false
			}
			g.rerun(c, "cloud_"+why, nil)
			return true
		},
	})
	g.cloudInFlight.Add(-1)
	if err != nil {
		if reason == spillway.ReasonTimeout && errors.Is(err, spillway.ErrCloudUnavailable) {
			err = fmt.Errorf("call passed LOCAL_TIMEOUT=%v and the cloud could not take it over (%v): %w", g.timeout(), err, spillway.ErrTimeout)
		}
		return inv, err
	}
	if g.d.Estimator != nil {
		g.d.Estimator.Observe(spillway.RouteCloud, res.Latency, res.ColdStart, g.now())
	}
	inv.Result = res.Value
	inv.ColdStart = res.ColdStart
	return inv, nil
}

// timeoutOr words a cloud refusal of a call that passed LOCAL_TIMEOUT as
// the timeout it is for the caller.
func (g *Gateway) timeoutOr(reason spillway.Reason, err error) error {
	if reason != spillway.ReasonTimeout {
		return err
	}
	return fmt.Errorf("call passed LOCAL_TIMEOUT=%v and the cloud could not take it over (%v): %w", g.timeout(), err, spillway.ErrTimeout)
}

func reasonText(r spillway.Reason) string {
	if r == spillway.ReasonNone {
		return "policy"
	}
	return string(r)
}

func isFunctionError(err error) bool {
	var fe *spillway.FunctionError
	return errors.As(err, &fe)
}

// record updates counters and metrics for one answered call.
func (g *Gateway) record(inv spillway.Invocation, err error) {
	route := string(inv.Route)
	if route == "" {
		route = string(spillway.RouteLocal)
	}
	outcome := "ok"
	switch {
	case err == nil:
	case isFunctionError(err):
		outcome = "function_error"
	case errors.Is(err, spillway.ErrTimeout):
		outcome = "timeout"
	default:
		outcome = "error"
	}
	if route == string(spillway.RouteLocal) && inv.Reason == spillway.ReasonNone && outcome == "ok" {
		g.metrics.okLocal.Inc()
	} else {
		g.metrics.calls.WithLabelValues(route, string(inv.Reason), outcome).Inc()
	}
	switch route {
	case string(spillway.RouteLocal):
		g.metrics.latLocal.Observe(inv.Duration.Seconds())
	case string(spillway.RouteCloud):
		g.metrics.latCloud.Observe(inv.Duration.Seconds())
	default:
		g.metrics.latency.WithLabelValues(route).Observe(inv.Duration.Seconds())
	}
	if inv.ColdStart {
		g.metrics.coldStart.WithLabelValues(route).Inc()
	}

	g.countsMu.Lock()
	defer g.countsMu.Unlock()
	g.counts.Calls++
	if inv.Route == spillway.RouteCloud {
		g.counts.Cloud++
	} else {
		g.counts.Local++
	}
	if inv.Reason != spillway.ReasonNone {
		g.counts.Reasons[string(inv.Reason)]++
	}
	if inv.ColdStart {
		g.counts.ColdStarts++
	}
	if err != nil {
		g.counts.Errors++
		g.counts.ErrorsByFault[fmt.Sprint(spillway.FaultCode(err))]++
	}
}

// Calls are the gateway's calls: those in flight now and the totals.
func (g *Gateway) Calls() spillway.CallStats {
	st := spillway.CallStats{
		InFlight:      g.inFlight.Load(),
		LocalInFlight: g.localInFlight.Load(),
		CloudInFlight: g.cloudInFlight.Load(),
		Queued:        g.queued.Load(),
	}
	g.countsMu.Lock()
	st.Counters = g.counts
	st.Counters.Reasons = maps.Clone(g.counts.Reasons)
	st.Counters.ErrorsByFault = maps.Clone(g.counts.ErrorsByFault)
	g.countsMu.Unlock()
	return st
}

// Load is this lb's load of its function: the calls holding or waiting for
// a worker slot and their arrival rate, what the controller sizes the pool
// for.
func (g *Gateway) Load() spillway.Load {
	l := spillway.Load{InFlight: int(g.localInFlight.Load()), Queued: int(g.queued.Load())}
	if ns := g.lastCall.Load(); ns != 0 {
		l.LastCall = time.Unix(0, ns)
	}
	if g.d.Estimator != nil {
		l.ArrivalRate = g.d.Estimator.Estimates(g.now()).ArrivalRate
	}
	return l
}
