package policy

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Autoscaler names accepted by NewAutoscaler (env AUTOSCALER).
const (
	AutoscalerReference  = "reference"
	AutoscalerPredictive = "predictive"
)

// Reasons an Autoscaler gives.
const (
	ScaleHold      = "hold"        // stay at the current size
	ScaleUp        = "scale-up"    // demand needs more workers
	ScaleWarm      = "warm-spares" // the arrival rate is rising: start spares now
	ScaleDown      = "scale-down"  // load stayed low for ScaleDownDelay
	ScaleDownWait  = "scale-down-pending"
	ScaleToMinimum = "minimum" // below N (e.g. after a worker died)
	ScaleFromZero  = "cold"    // min 0: a call arrived with no worker
	ScaleToZero    = "idle"    // min 0: no call for ZeroAfter
	ScaleToMaximum = "maximum" // above MAX (e.g. after MAX was lowered)
)

// ScaleConfig configures an Autoscaler.
type ScaleConfig struct {
	// N (NUMBER_OF_SERVERS, or the function's --min), >= 0. With 0 the
	// function scales to zero: it keeps one worker while it had a call
	// within ZeroAfter, none after.
	N           int
	Max         int // MAX_SERVERS, >= N
	Concurrency int // WORKER_CONCURRENCY, >= 1
	// ScaleDownDelay (SCALE_DOWN_DELAY): load must stay below the pool size
	// this long before the predictive autoscaler shrinks it.
	ScaleDownDelay time.Duration
	// Tick (ELASTICITY_SLEEP) is how often Decide is called; the predictive
	// autoscaler looks one tick plus one worker cold start ahead.
	Tick time.Duration
	// TargetUtilization (SCALE_TARGET_UTILIZATION, (0, 1]) is the
	// share of slots the steady arrival rate may keep busy.
	TargetUtilization float64
	// ZeroAfter (SCALE_TO_ZERO_AFTER): with N = 0, how long after the
	// last call the last worker goes.
	ZeroAfter time.Duration
}

// Validate reports the first field that breaks the autoscaler's own
// invariants (internal/config checks the variables' ranges).
func (c ScaleConfig) Validate() error {
	switch {
	case c.N < 0:
		return fmt.Errorf("NUMBER_OF_SERVERS=%d: must not be negative", c.N)
	case c.Max < 1:
		return fmt.Errorf("MAX_SERVERS=%d: must be at least 1", c.Max)
	case c.Max < c.N:
		return fmt.Errorf("MAX_SERVERS=%d: must be at least NUMBER_OF_SERVERS=%d", c.Max, c.N)
	case c.Concurrency < 1:
		return fmt.Errorf("autoscaler: Concurrency %d, want at least 1 call slot per worker", c.Concurrency)
	case c.ScaleDownDelay < 0:
		return fmt.Errorf("SCALE_DOWN_DELAY=%v: must not be negative", c.ScaleDownDelay)
	case c.N == 0 && c.ZeroAfter <= 0:
		return fmt.Errorf("SCALE_TO_ZERO_AFTER=%v: must be positive when the minimum is 0", c.ZeroAfter)
	case c.Tick < 0:
		return fmt.Errorf("ELASTICITY_SLEEP=%v: must not be negative", c.Tick)
	case c.TargetUtilization < 0 || c.TargetUtilization > 1 || math.IsNaN(c.TargetUtilization):
		return fmt.Errorf("SCALE_TARGET_UTILIZATION=%v: want 0..1", c.TargetUtilization)
	}
	return nil
}

// ScaleSnapshot is what the lb observed at one elasticity tick.
type ScaleSnapshot struct {
	Now time.Time
	// Members counts pool members including those starting; Ready only the
	// ready ones.
	Members int
	Ready   int
	// InFlight is the number of calls running locally, Queued the number
	// waiting for a local slot.
	InFlight int
	Queued   int
	// ArrivalRate is the recent arrival rate (calls/s) and ServiceTime the mean
	// local service time, both from the Estimator.
	ArrivalRate float64
	ServiceTime time.Duration
	// ColdStart is the recent worker cold start (from the Estimator); 0 means
	// one Tick.
	ColdStart time.Duration
	// LastCall is the last arrival at any replica, zero for none: with
	// N = 0 it decides whether the function keeps a worker.
	LastCall time.Time
}

// ScaleDecision is the pool size the lb should move to, in [N, Max].
type ScaleDecision struct {
	Desired int
	Reason  string
}

// Autoscaler decides the pool size at each elasticity tick.
type Autoscaler interface {
	Decide(snap ScaleSnapshot) ScaleDecision
}

// NewAutoscaler returns the autoscaler called name ("" means predictive).
// The result is safe for concurrent use, but its decisions depend on the
// sequence of snapshots: drive it from one loop.
func NewAutoscaler(name string, cfg ScaleConfig) (Autoscaler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch name {
	case AutoscalerReference:
		return &Reference{cfg: cfg}, nil
	case "", AutoscalerPredictive:
		if cfg.TargetUtilization <= 0 {
			return nil, fmt.Errorf("SCALE_TARGET_UTILIZATION=%v: the predictive autoscaler needs a share above 0", cfg.TargetUtilization)
		}
		return &Predictive{cfg: cfg}, nil
	}
	return nil, fmt.Errorf("unknown AUTOSCALER %q (want %s or %s)", name, AutoscalerPredictive, AutoscalerReference)
}

// floor is the fewest workers the pool may have now: N, or with N = 0 one
// while calls run or wait or the last call is within ZeroAfter, else none.
func (c ScaleConfig) floor(s ScaleSnapshot) int {
	if c.N > 0 {
		return c.N
	}
	if s.InFlight+s.Queued > 0 || (!s.LastCall.IsZero() && s.Now.Sub(s.LastCall) < c.ZeroAfter) {
		return 1
	}
	return 0
}

// clamp bounds n to [floor, Max] and names the bound it hit, if any.
func (c ScaleConfig) clamp(n int, s ScaleSnapshot) (int, string) {
	if lo := c.floor(s); n < lo {
		if c.N == 0 {
			return lo, ScaleFromZero
		}
		return lo, ScaleToMinimum
	}
	if n > c.Max {
		return c.Max, ScaleToMaximum
	}
	return n, ""
}

// ceilDiv is ceil(a/b) for a >= 0, b > 0.
func ceilDiv(a, b int) int { return (a + b - 1) / b }

// Reference is the reference system's rule: one worker more per tick while the
// calls at the lb (running and queued) need more slots than the pool has and
// it is below Max; one fewer per tick while they need fewer and it is above N.
// It keeps no state and ignores ScaleDownDelay.
type Reference struct {
	cfg ScaleConfig
}

var _ Autoscaler = (*Reference)(nil)

// Decide implements Autoscaler.
func (r *Reference) Decide(s ScaleSnapshot) ScaleDecision {
	cur := s.Members
	if n, why := r.cfg.clamp(cur, s); why != "" {
		return ScaleDecision{Desired: n, Reason: why}
	}
	need := ceilDiv(max(0, s.InFlight+s.Queued), r.cfg.Concurrency)
	switch {
	case need > cur && cur < r.cfg.Max:
		return ScaleDecision{Desired: cur + 1, Reason: ScaleUp}
	case need < cur && cur > r.cfg.floor(s):
		if cur == 1 {
			return ScaleDecision{Desired: 0, Reason: ScaleToZero}
		}
		return ScaleDecision{Desired: cur - 1, Reason: ScaleDown}
	}
	return ScaleDecision{Desired: cur, Reason: ScaleHold}
}

// Predictive sizes the pool for the demand in one step:
//
//	demand = max(InFlight + Queued, ArrivalRate × ServiceTime / TargetUtilization)
//	desired = ceil(demand / Concurrency), in [N, Max]
//
// (the second term is Little's law with headroom). When the arrival rate is
// rising it adds warm spares for the rate expected one tick plus one cold
// start ahead, so workers are ready when the load arrives. It scales up at
// once, but down only after the desired size stayed below the pool for
// ScaleDownDelay, and then to the largest size wanted during that time, so a
// dip does not make the pool flap.
type Predictive struct {
	cfg ScaleConfig

	mu        sync.Mutex // guards the fields below
	lastNow   time.Time
	lastRate  float64
	slope     float64   // smoothed d(rate)/dt, calls/s²
	lowSince  time.Time // zero while the pool is not above what is wanted
	lowPeak   int       // largest desired size seen since lowSince
	seenFirst bool
}

var _ Autoscaler = (*Predictive)(nil)

// Decide implements Autoscaler.
func (p *Predictive) Decide(s ScaleSnapshot) ScaleDecision {
	p.mu.Lock()
	defer p.mu.Unlock()
	cfg := p.cfg
	rate := max(0, s.ArrivalRate)
	if math.IsNaN(rate) || math.IsInf(rate, 0) {
		rate = 0
	}
	svc := max(0, s.ServiceTime.Seconds())

	// Trend of the arrival rate, smoothed over ticks.
	if p.seenFirst {
		if dt := s.Now.Sub(p.lastNow).Seconds(); dt > 0 {
			p.slope = 0.5*p.slope + 0.5*(rate-p.lastRate)/dt
		}
	}
	p.seenFirst, p.lastNow, p.lastRate = true, s.Now, rate

	now := max(0, s.InFlight+s.Queued)
	steady := rate * svc / cfg.TargetUtilization
	want := ceilDiv(max(now, int(math.Ceil(steady-1e-9))), cfg.Concurrency)
	reason := ScaleUp

	// Warm spares when the rate rises (more than noise: 5% of the rate per
	// tick, or one call per second).
	horizon := s.ColdStart
	if horizon <= 0 {
		horizon = cfg.Tick
	}
	horizon += cfg.Tick
	tick := cfg.Tick.Seconds()
	if tick <= 0 {
		tick = 1
	}
	if p.slope*tick > math.Max(0.05*rate, 1) && svc > 0 {
		ahead := math.Min(rate+p.slope*horizon.Seconds(), 2*rate+1)
		spare := int(math.Ceil(ahead*svc/cfg.TargetUtilization/float64(cfg.Concurrency) - 1e-9))
		if spare > want {
			want, reason = spare, ScaleWarm
		}
	}
	want, bound := cfg.clamp(want, s)

	cur := s.Members
	if want == 0 && cur > 0 && cur <= cfg.Max {
		// Min 0 and no call for ZeroAfter: the last workers go now (the
		// idle time already exceeds any SCALE_DOWN_DELAY worth waiting).
		p.lowSince = time.Time{}
		return ScaleDecision{Desired: 0, Reason: ScaleToZero}
	}
	switch {
	case want > cur:
		p.lowSince = time.Time{}
		if bound == ScaleToMinimum || bound == ScaleFromZero {
			reason = bound
		}
		return ScaleDecision{Desired: want, Reason: reason}
	case want == cur:
		p.lowSince = time.Time{}
		return ScaleDecision{Desired: cur, Reason: ScaleHold}
	}
	// want < cur.
	if cur > cfg.Max {
		p.lowSince = time.Time{}
		return ScaleDecision{Desired: cfg.Max, Reason: ScaleToMaximum}
	}
	if p.lowSince.IsZero() {
		p.lowSince, p.lowPeak = s.Now, want
	} else {
		p.lowPeak = max(p.lowPeak, want)
	}
	if s.Now.Sub(p.lowSince) >= cfg.ScaleDownDelay {
		d := p.lowPeak
		p.lowSince, p.lowPeak = time.Time{}, 0
		if d < cur {
			return ScaleDecision{Desired: d, Reason: ScaleDown}
		}
		return ScaleDecision{Desired: cur, Reason: ScaleHold}
	}
	return ScaleDecision{Desired: cur, Reason: ScaleDownWait}
}
