package policy

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
)

// Offload policy names accepted by NewOffloader (env OFFLOAD_POLICY).
const (
	OffloadOverflow     = "overflow"
	OffloadNever        = "never"
	OffloadAlways       = "always"
	OffloadLatencyAware = "latency-aware"
)

// Lambda list prices (us-east-1, x86) used for the cost estimate and budget.
const (
	DefaultPricePerGBSecond = 0.0000166667
	DefaultPricePerRequest  = 0.0000002
)

// OffloadConfig configures an Offloader. internal/config builds it
// (config.Config.OffloadConfig) from the variables named on the fields; a
// zero cap or QueueTimeout means "off", and the zero prices, which no
// variable sets, are the Lambda list prices.
type OffloadConfig struct {
	// QueueTimeout (QUEUE_TIMEOUT) bounds how long a call waits in the local
	// queue before the policy is asked again; with the cloud available a
	// re-asked overflow call then goes to the cloud. 0: overflow waits for a
	// local slot (the reference), latency-aware re-decides after twice its
	// estimated wait.
	QueueTimeout time.Duration
	// CloudMaxRPS (CLOUD_MAX_RPS) caps calls per second the policy sends to the
	// cloud; 0 means no cap.
	CloudMaxRPS float64
	// CloudMaxCostPerHour (CLOUD_MAX_COST_PER_HOUR, USD) caps the estimated
	// Lambda spend; 0 means no cap.
	CloudMaxCostPerHour float64
	// BudgetBurst (CLOUD_BUDGET_BURST) is how much of either budget may be
	// spent at once: the token buckets hold this many seconds of their rate
	// (at least one call). A cap needs it positive.
	BudgetBurst time.Duration
	// WaitWeight (OFFLOAD_WAIT_WEIGHT) is how many seconds of
	// latency-aware's comparison one estimated second of local queue wait
	// counts for. 1 compares plain expected completion times; above 1 the
	// policy queues only where the wait is clearly short, because the wait is
	// the least certain part of the estimate and its misses make the tail
	// (the simulator's comparison in BENCHMARKS.md chose 4: lower p99 than
	// overflow on every trace tried, still with fewer calls offloaded).
	WaitWeight float64
	// LambdaMemoryMB (LAMBDA_MEMORY) sizes the GB-second cost.
	LambdaMemoryMB int
	// PricePerGBSecond and PricePerRequest default to the Lambda list prices.
	PricePerGBSecond float64
	PricePerRequest  float64
	// Budget, when set, is the cloud budget the policy spends from, shared
	// with lb's other paths to the cloud (forced, timeout, retry, fallback);
	// nil makes the policy a budget of its own from the caps above.
	Budget *Budget
}

// Validate reports the first field that breaks the policy's own
// invariants, by its environment variable. The variables' ranges are
// internal/config's to check.
func (c OffloadConfig) Validate() error {
	switch {
	case c.QueueTimeout < 0:
		return fmt.Errorf("QUEUE_TIMEOUT=%v: must not be negative", c.QueueTimeout)
	case c.CloudMaxRPS < 0 || math.IsNaN(c.CloudMaxRPS) || math.IsInf(c.CloudMaxRPS, 0):
		return fmt.Errorf("CLOUD_MAX_RPS=%v: want a number >= 0", c.CloudMaxRPS)
	case c.CloudMaxCostPerHour < 0 || math.IsNaN(c.CloudMaxCostPerHour) || math.IsInf(c.CloudMaxCostPerHour, 0):
		return fmt.Errorf("CLOUD_MAX_COST_PER_HOUR=%v: want a number >= 0", c.CloudMaxCostPerHour)
	case c.WaitWeight < 0 || math.IsNaN(c.WaitWeight) || math.IsInf(c.WaitWeight, 0):
		return fmt.Errorf("OFFLOAD_WAIT_WEIGHT=%v: want a number > 0", c.WaitWeight)
	case c.BudgetBurst < 0 || (c.BudgetBurst == 0 && (c.CloudMaxRPS > 0 || c.CloudMaxCostPerHour > 0)):
		return fmt.Errorf("CLOUD_BUDGET_BURST=%v: a cloud budget needs a positive burst", c.BudgetBurst)
	case c.LambdaMemoryMB < 0 || (c.LambdaMemoryMB == 0 && c.CloudMaxCostPerHour > 0):
		return fmt.Errorf("LAMBDA_MEMORY=%d: a cost budget needs the Lambda memory", c.LambdaMemoryMB)
	case c.PricePerGBSecond < 0 || c.PricePerRequest < 0:
		return fmt.Errorf("lambda prices must not be negative")
	}
	return nil
}

func (c OffloadConfig) withDefaults() OffloadConfig {
	if c.PricePerGBSecond <= 0 {
		c.PricePerGBSecond = DefaultPricePerGBSecond
	}
	if c.PricePerRequest <= 0 {
		c.PricePerRequest = DefaultPricePerRequest
	}
	return c
}

// CallCost is the estimated Lambda cost in USD of one call billed for d at
// memoryMB (GB-seconds plus the per-request price).
func CallCost(d time.Duration, memoryMB int, perGBSecond, perRequest float64) float64 {
	if d < 0 {
		d = 0
	}
	return float64(memoryMB)/1024*d.Seconds()*perGBSecond + perRequest
}

// OffloadInput is what the lb knows when a call arrives (or when a queued
// call's MaxWait ran out and it asks again).
type OffloadInput struct {
	Now time.Time
	// InFlight is the number of calls running on local workers; Queued the
	// number waiting for a local slot, not counting this call.
	InFlight int
	Queued   int
	// CloudInFlight is the number of calls running in the cloud (informational).
	CloudInFlight int
	// MaxSlots is MAX_SERVERS × WORKER_CONCURRENCY; ReadySlots the slots of
	// ready members; StartingSlots the slots of members still starting;
	// FreeSlots the free slots of ready members.
	MaxSlots      int
	ReadySlots    int
	StartingSlots int
	FreeSlots     int
	// CloudAvailable is false when CLOUD=off or the cloud's breaker is open.
	CloudAvailable bool
	// Waited is how long this call has already waited in the local queue (0 on
	// arrival).
	Waited time.Duration
	// Estimates are the Estimator's numbers as of Now.
	Estimates Estimates
}

// OffloadDecision says where a call runs.
type OffloadDecision struct {
	Route  spillway.Route  // RouteLocal or RouteCloud
	Reason spillway.Reason // ReasonOverflow or ReasonPolicy for the cloud, ReasonNone locally
	// MaxWait is, for a local call that finds no free slot, how long it may
	// wait in the queue before the lb calls Decide again with Waited set.
	// 0 means wait for a slot however long it takes.
	MaxWait time.Duration
}

// Offloader decides where each call runs.
type Offloader interface {
	Decide(in OffloadInput) OffloadDecision
}

// NewOffloader returns the policy called name ("" means overflow). The result
// is safe for concurrent use. Every policy stays local when the cloud is
// unavailable; every policy but never is bounded by the cloud budget, if one is
// configured, and stays local when it is spent.
func NewOffloader(name string, cfg OffloadConfig) (Offloader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b := newBudget(cfg)
	if cfg.Budget != nil {
		b = cfg.Budget.b
	}
	switch name {
	case "", OffloadOverflow:
		return &Overflow{cfg: cfg, budget: b}, nil
	case OffloadNever:
		return Never{}, nil
	case OffloadAlways:
		return &Always{cfg: cfg, budget: b}, nil
	case OffloadLatencyAware:
		if cfg.WaitWeight <= 0 {
			return nil, fmt.Errorf("OFFLOAD_WAIT_WEIGHT=%v: latency-aware needs a weight above 0", cfg.WaitWeight)
		}
		return &LatencyAware{cfg: cfg, budget: b}, nil
	}
	return nil, fmt.Errorf("unknown OFFLOAD_POLICY %q (want %s, %s, %s or %s)", name,
		OffloadOverflow, OffloadLatencyAware, OffloadNever, OffloadAlways)
}

var local = OffloadDecision{Route: spillway.RouteLocal}

// Never runs every call locally, waiting as long as it takes.
type Never struct{}

var _ Offloader = Never{}

// Decide implements Offloader.
func (Never) Decide(OffloadInput) OffloadDecision { return local }

// Always runs every call in the cloud while it is available and the budget
// lasts.
type Always struct {
	cfg    OffloadConfig
	budget *budget
}

var _ Offloader = (*Always)(nil)

// Decide implements Offloader.
func (a *Always) Decide(in OffloadInput) OffloadDecision {
	if !in.CloudAvailable {
		return local
	}
	cost := callCost(a.cfg, in.Estimates.CloudRoundTrip)
	if a.budget.take(in.Now, cost) {
		return OffloadDecision{Route: spillway.RouteCloud, Reason: spillway.ReasonPolicy}
	}
	return budgetSpent(in, a.cfg, a.budget, cost)
}

func callCost(cfg OffloadConfig, d time.Duration) float64 {
	return CallCost(d, cfg.LambdaMemoryMB, cfg.PricePerGBSecond, cfg.PricePerRequest)
}

// budgetSpent keeps a call local because the cloud budget is spent. Without a
// free slot it may wait until enough budget is back for it and the calls
// queued ahead of it (or QueueTimeout, whichever is sooner) and is then
// decided again, so waiters do not all wake for the same token.
func budgetSpent(in OffloadInput, cfg OffloadConfig, b *budget, cost float64) OffloadDecision {
	if in.FreeSlots > 0 {
		return local
	}
	mw := b.refill(in.Now, cost, max(0, in.Queued)+1)
	if cfg.QueueTimeout > 0 && cfg.QueueTimeout < mw {
		mw = cfg.QueueTimeout
	}
	return OffloadDecision{Route: spillway.RouteLocal, MaxWait: mw}
}

// Overflow is the reference rule: a call goes to the cloud once the calls
// running and waiting locally reach MaxSlots (MAX_SERVERS ×
// WORKER_CONCURRENCY); below that it waits for a local slot: indefinitely by
// default (the reference), at most QueueTimeout when set, after which it goes
// to the cloud.
type Overflow struct {
	cfg    OffloadConfig
	budget *budget
}

var _ Offloader = (*Overflow)(nil)

// Decide implements Offloader.
func (o *Overflow) Decide(in OffloadInput) OffloadDecision {
	if !in.CloudAvailable {
		return local
	}
	full := in.InFlight+in.Queued >= in.MaxSlots
	timedOut := o.cfg.QueueTimeout > 0 && in.Waited >= o.cfg.QueueTimeout && in.FreeSlots == 0
	if full || timedOut {
		cost := callCost(o.cfg, in.Estimates.CloudRoundTrip)
		if o.budget.take(in.Now, cost) {
			return OffloadDecision{Route: spillway.RouteCloud, Reason: spillway.ReasonOverflow}
		}
		return budgetSpent(in, o.cfg, o.budget, cost)
	}
	if in.FreeSlots > 0 {
		return local
	}
	return OffloadDecision{Route: spillway.RouteLocal, MaxWait: o.cfg.QueueTimeout}
}

// LatencyAware sends a call where it is expected to finish sooner: locally
// after its wait for a slot plus the service time, or in the cloud after the
// learned round trip (cold starts included, see CloudRoundTrip). The local
// wait has two parts (see LocalWaitParts): the start of a worker, when no
// ready slot can serve the call sooner, counted as the learned
// WorkerColdStart; and the queue wait (queue position × service time per
// slot), weighted by WaitWeight because it is the least certain part of the
// estimate. A pool at zero (no ready slot) thus compares starting a worker
// with the cloud, and the cloud, chosen there, gives the reason cold. Ties
// stay local. The cloud budget bounds it.
type LatencyAware struct {
	cfg    OffloadConfig
	budget *budget
}

var _ Offloader = (*LatencyAware)(nil)

// Decide implements Offloader.
func (l *LatencyAware) Decide(in OffloadInput) OffloadDecision {
	if in.FreeSlots > 0 && in.Queued == 0 {
		return local // a slot is free now: nothing can beat it
	}
	start, queue := LocalWaitParts(in)
	if !in.CloudAvailable {
		return local
	}
	est := in.Estimates
	cloud := CloudRoundTrip(in)
	w := float64(start) + float64(queue)*l.cfg.WaitWeight
	if w < float64(cloud) && w+float64(est.LocalService) <= float64(cloud) {
		return OffloadDecision{Route: spillway.RouteLocal, MaxWait: l.maxWait(start + queue)}
	}
	cost := callCost(l.cfg, cloud)
	if l.budget.take(in.Now, cost) {
		why := spillway.ReasonPolicy
		if in.ReadySlots == 0 {
			why = spillway.ReasonCold
		}
		return OffloadDecision{Route: spillway.RouteCloud, Reason: why}
	}
	return budgetSpent(in, l.cfg, l.budget, cost)
}

// maxWait lets a local call wait twice its estimated wait (at least 10ms,
// at most QueueTimeout when set) before it is decided again.
func (l *LatencyAware) maxWait(wait time.Duration) time.Duration {
	mw := 2 * wait
	if mw < 10*time.Millisecond {
		mw = 10 * time.Millisecond
	}
	if l.cfg.QueueTimeout > 0 && mw > l.cfg.QueueTimeout {
		mw = l.cfg.QueueTimeout
	}
	return mw
}

// CloudRoundTrip is the expected round trip of a call sent to the cloud now:
// the warm round trip while fewer calls are in flight there than it keeps
// environments for, the cold one beyond that, and the blended
// Estimates.CloudRoundTrip when the environment count is unknown.
func CloudRoundTrip(in OffloadInput) time.Duration {
	est := in.Estimates
	switch {
	case est.CloudEnvs <= 0:
		return est.CloudRoundTrip
	case in.CloudInFlight < est.CloudEnvs:
		return est.CloudWarm
	}
	return max(est.CloudCold, est.CloudWarm)
}

// LocalWait estimates how long a call arriving with in would wait for a local
// slot: the sum of LocalWaitParts, or math.MaxInt64 when no slot can ever
// serve the call.
func LocalWait(in OffloadInput) time.Duration {
	start, queue := LocalWaitParts(in)
	if start == math.MaxInt64 || queue == math.MaxInt64 {
		return math.MaxInt64
	}
	return start + queue
}

// LocalWaitParts splits the local wait of a call arriving with in into the
// time until a starting worker serves it (start: one WorkerColdStart when
// the call will be served by a slot not ready yet, 0 otherwise) and its wait
// in line behind other calls (queue). The call is number p = Queued+1 in line
// (counting those already running beyond the free slots). Ready slots free
// one every LocalService/ReadySlots on average; the slots still missing up to
// MaxSlots (starting members and those the autoscaler will add, or the one
// the controller starts for a pool at zero) are assumed to open all at once
// after one WorkerColdStart and then serve at the same pace. queue is
// math.MaxInt64 when no slot can ever serve the call.
func LocalWaitParts(in OffloadInput) (start, queue time.Duration) {
	p := float64(in.Queued + 1 - in.FreeSlots)
	if p <= 0 {
		return 0, 0
	}
	s := in.Estimates.LocalService.Seconds()
	c := in.Estimates.WorkerColdStart.Seconds()
	r := float64(in.ReadySlots)
	extra := float64(in.MaxSlots - in.ReadySlots)
	if extra < float64(in.StartingSlots) {
		extra = float64(in.StartingSlots)
	}
	if extra < 0 {
		extra = 0
	}
	if s <= 0 {
		if r > 0 {
			return 0, 0
		}
		if extra > 0 {
			return seconds(c), 0
		}
		return 0, math.MaxInt64
	}
	// Served by ready slots before any new slot opens?
	if r > 0 && p <= r*c/s {
		return 0, seconds(p * s / r)
	}
	if extra == 0 {
		if r == 0 {
			return 0, math.MaxInt64
		}
		return 0, seconds(p * s / r)
	}
	// At c, the ready slots have served r*c/s calls and extra slots open.
	left := p - r*c/s - extra
	if left <= 0 {
		return seconds(c), 0
	}
	return seconds(c), seconds(left * s / (r + extra))
}

// Budget is the cloud budget (CLOUD_MAX_RPS, CLOUD_MAX_COST_PER_HOUR) that
// binds every path to the cloud: the offload policy spends from it when it
// chooses the cloud (OffloadConfig.Budget), and lb spends from it before any
// other call it sends there. Safe for concurrent use; a Budget without caps,
// or a nil *Budget, allows everything.
type Budget struct {
	cfg OffloadConfig
	b   *budget // nil: no caps
}

// NewBudget builds the budget from cfg's caps, burst and prices.
func NewBudget(cfg OffloadConfig) (*Budget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Budget{cfg: cfg, b: newBudget(cfg)}, nil
}

// Limited reports whether a cap is set.
func (b *Budget) Limited() bool { return b != nil && b.b != nil }

// Take spends one call to the cloud expected to take roundTrip (priced at
// the configured Lambda memory) if the budget has it now, and reports
// whether it did.
func (b *Budget) Take(now time.Time, roundTrip time.Duration) bool {
	if b == nil || b.b == nil {
		return true
	}
	return b.b.take(now, callCost(b.cfg, roundTrip))
}

// BudgetUse is what a capped budget has allowed, for operators.
type BudgetUse struct {
	MaxRPS         float64 // CLOUD_MAX_RPS, 0 when not capped
	MaxCostPerHour float64 // CLOUD_MAX_COST_PER_HOUR in USD, 0 when not capped
	Calls          int64   // cloud calls allowed since start
	SpentUSD       float64 // their estimated cost
	// Used is the fuller of the two buckets' spent share at the time asked
	// (0: the whole burst is available, 1: calls wait for the budget).
	Used float64
}

// Use reports what the budget allowed; ok is false when no cap is set.
func (b *Budget) Use(now time.Time) (use BudgetUse, ok bool) {
	if !b.Limited() {
		return BudgetUse{}, false
	}
	k := b.b
	k.mu.Lock()
	defer k.mu.Unlock()
	use = BudgetUse{Calls: k.allowed, SpentUSD: k.spent}
	if k.calls.on {
		k.calls.fill(now)
		use.MaxRPS = k.calls.rate
		use.Used = math.Max(use.Used, 1-k.calls.level/k.calls.max)
	}
	if k.cost.on {
		k.cost.fill(now)
		use.MaxCostPerHour = k.cost.rate * 3600
		use.Used = math.Max(use.Used, 1-k.cost.level/k.cost.max)
	}
	return use, true
}

// budget is two token buckets: cloud calls per second and USD per hour. A nil
// *budget allows everything.
type budget struct {
	mu      sync.Mutex // guards the buckets and the totals
	calls   bucket     // tokens are calls
	cost    bucket     // tokens are USD
	allowed int64      // calls taken since start
	spent   float64    // their estimated USD
}

type bucket struct {
	on    bool
	rate  float64 // tokens per second
	max   float64
	level float64
	last  time.Time
}

func newBudget(cfg OffloadConfig) *budget {
	b := &budget{}
	burst := cfg.BudgetBurst.Seconds()
	if cfg.CloudMaxRPS > 0 {
		b.calls = bucket{on: true, rate: cfg.CloudMaxRPS, max: math.Max(1, cfg.CloudMaxRPS*burst)}
		b.calls.level = b.calls.max
	}
	if cfg.CloudMaxCostPerHour > 0 {
		r := cfg.CloudMaxCostPerHour / 3600
		b.cost = bucket{on: true, rate: r, max: r * burst}
		b.cost.level = b.cost.max
	}
	if !b.calls.on && !b.cost.on {
		return nil
	}
	return b
}

func (k *bucket) fill(now time.Time) {
	if !k.last.IsZero() {
		if dt := now.Sub(k.last).Seconds(); dt > 0 {
			k.level = math.Min(k.max, k.level+dt*k.rate)
		}
	}
	if now.After(k.last) {
		k.last = now
	}
}

// take spends one call costing usd if both buckets have it.
func (b *budget) take(now time.Time, usd float64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.calls.on {
		b.calls.fill(now)
		if b.calls.level < 1 {
			return false
		}
	}
	if b.cost.on {
		b.cost.fill(now)
		// A single call dearer than the whole bucket may go when it is full.
		if b.cost.level < math.Min(usd, b.cost.max) {
			return false
		}
	}
	if b.calls.on {
		b.calls.level--
	}
	if b.cost.on {
		b.cost.level -= usd
	}
	b.allowed++
	b.spent += usd
	return true
}

// refill is how long until n calls costing usd each would be allowed (at
// least 1ms).
func (b *budget) refill(now time.Time, usd float64, n int) time.Duration {
	if b == nil {
		return time.Millisecond
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var d float64
	if b.calls.on {
		b.calls.fill(now)
		if need := float64(n); b.calls.level < need {
			d = (need - b.calls.level) / b.calls.rate
		}
	}
	if b.cost.on {
		b.cost.fill(now)
		if need := math.Min(usd, b.cost.max) * float64(n); b.cost.level < need {
			d = math.Max(d, (need-b.cost.level)/b.cost.rate)
		}
	}
	w := seconds(d)
	if w < time.Millisecond {
		w = time.Millisecond
	}
	return w
}
