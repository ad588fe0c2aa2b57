package sim

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/share"
)

// ManyConfig is many functions behind one lb sharing MAX_TOTAL_WORKERS.
// Every function has the pool, offload policy, autoscaler and estimator of
// Config (Servers is each one's --min, Max its --max), its own Lambda, and
// its own arrivals: Zipf-like popularity (the function of rank r gets a
// share of Rate proportional to r^-Zipf) times bursts of BurstFactor for
// BurstOn, about every BurstEvery, at a phase of its own.
type ManyConfig struct {
	Config
	Functions   int           // how many functions
	Calls       int64         // arrivals stop after this many
	Rate        float64       // all functions' base rate together, calls/s
	Zipf        float64       // popularity exponent (0: all equal)
	BurstFactor float64       // a function's rate during its bursts, × its base (1: no bursts)
	BurstOn     time.Duration // a burst's length
	BurstEvery  time.Duration // mean time between one function's bursts (each its own period, 0.5–1.5×)
	Offload     string        // OFFLOAD_POLICY of every function
	Autoscaler  string        // AUTOSCALER of every function
	Scheduler   string        // SCHEDULER of every function

	// Scale to zero, for functions with Servers (--min) 0: a function
	// loses its last worker after ScaleToZeroAfter without calls
	// (SCALE_TO_ZERO_AFTER, the autoscaler's ZeroAfter). A call that finds no ready worker starts one
	// at once and either waits for it (ColdWait, as Knative's activator
	// does) or goes to the cloud with reason cold (lb). With KeepWarmEvery
	// set (CLOUD_KEEP_WARM_EVERY), each function at zero workers pings its
	// Lambda that often, at a phase of its own, keeping one environment warm.
	ScaleToZeroAfter time.Duration
	ColdWait         bool
	KeepWarmEvery    time.Duration
	// ColdDecide lets the offload policy place a call with no ready worker
	// (after the worker is started) instead of the fixed rule: the
	// latency-aware policy weighs the worker's start against the cloud.
	ColdDecide bool
}

// DefaultManyConfig is 100 functions (min 1, max 16, a 100ms function each)
// taking 1M calls: 300 calls/s together at base, the most popular function
// about a fifth of them, and each function bursting to 10× its rate for 20s
// about every 5 minutes.
func DefaultManyConfig() ManyConfig {
	c := DefaultConfig()
	c.Servers, c.Max = 1, 16
	return ManyConfig{
		Config: c, Functions: 100, Calls: 1_000_000, Rate: 300, Zipf: 1,
		BurstFactor: 10, BurstOn: 20 * time.Second, BurstEvery: 5 * time.Minute,
		Offload: policy.OffloadOverflow, Autoscaler: policy.AutoscalerPredictive, Scheduler: policy.SchedulerRoundRobin,
	}
}

// Validate reports a configuration the simulator cannot run.
func (c ManyConfig) Validate() error {
	switch {
	case c.Functions < 1 || c.Calls < 1 || c.Rate <= 0:
		return fmt.Errorf("need --functions >= 1, --calls >= 1 and --rate > 0")
	case c.Zipf < 0 || c.BurstFactor < 1 || c.BurstOn < 0 || c.BurstEvery <= 0 || c.BurstOn > c.BurstEvery:
		return fmt.Errorf("need --zipf >= 0, --burst >= 1 and 0 <= --burst-on <= --burst-every")
	case c.Servers < 0 || c.Max < max(1, c.Servers) || c.Concurrency < 1:
		return fmt.Errorf("need 0 <= --servers <= --max, --max >= 1 and --concurrency >= 1")
	case c.Servers == 0 && c.ScaleToZeroAfter <= 0:
		return fmt.Errorf("--servers 0 needs a positive --scale-to-zero-after")
	case c.KeepWarmEvery < 0:
		return fmt.Errorf("--keep-warm-every must not be negative")
	case c.Tick <= 0:
		return fmt.Errorf("--tick must be positive")
	case c.Service < 0 || c.ServiceCV < 0 || c.WorkerColdStart < 0:
		return fmt.Errorf("service time, its cv and the worker cold start must not be negative")
	case c.CloudOverhead < 0 || c.CloudSpeed <= 0 || c.CloudColdStart < 0 || c.CloudKeepAlive < 0:
		return fmt.Errorf("cloud overhead, cold start and keep-alive must not be negative, cloud speed positive")
	}
	return nil
}

// zero reports whether functions scale to zero in this run.
func (c ManyConfig) zero() bool { return c.Servers == 0 }

// Sharing names how the functions share the cap in one run:
//
//	static-even   each function may have total/N (at least its min), fixed
//	static-load   its min plus the rest in proportion to its mean load (an
//	              oracle: it knows the popularity in advance), fixed
//	shared        one pool for all under the cap, first come first served;
//	              workers come back only through each autoscaler's scale-down
//	take:IDLE:MOVES[:busy]
//	              shared, and a needy function takes up to MOVES workers
//	              ("all": its whole deficit) per decision from functions
//	              idle at least IDLE (policy.ShareRule)
//	default       lb's rule, policy.DefaultShareRule
type Sharing struct {
	Name   string
	Static string // "even", "load" or "" (the ledger)
	Rule   policy.ShareRule
}

// ParseSharing reads one of the names above.
func ParseSharing(s string) (Sharing, error) {
	switch s {
	case "static-even":
		return Sharing{Name: s, Static: "even"}, nil
	case "static-load":
		return Sharing{Name: s, Static: "load"}, nil
	case "shared":
		return Sharing{Name: s}, nil
	case "default":
		return Sharing{Name: s, Rule: policy.DefaultShareRule}, nil
	}
	parts := strings.Split(s, ":")
	if parts[0] != "take" || len(parts) < 3 || len(parts) > 4 || len(parts) == 4 && parts[3] != "busy" {
		return Sharing{}, fmt.Errorf("sharing %q: want static-even, static-load, shared, default or take:IDLE:MOVES[:busy]", s)
	}
	idle, err := time.ParseDuration(parts[1])
	if err != nil || idle < 0 {
		return Sharing{}, fmt.Errorf("sharing %q: idle time %q: want a duration like 5s", s, parts[1])
	}
	r := policy.ShareRule{IdleAfter: idle, TakeBusy: len(parts) == 4}
	if parts[2] == "all" {
		r.Moves = policy.DefaultShareRule.Moves
	} else if r.Moves, err = strconv.Atoi(parts[2]); err != nil || r.Moves < 1 {
		return Sharing{}, fmt.Errorf("sharing %q: moves %q: want a number >= 1 or all", s, parts[2])
	}
	return Sharing{Name: s, Rule: r}, nil
}

// ManyResult is what one many-function run measured.
type ManyResult struct {
	Sharing string `json:"sharing"`
	Total   int    `json:"max_total_workers"`
	// Variant names the way idle functions were treated in a
	// scale-to-zero comparison (ZeroVariant.Name); "" otherwise.
	Variant string `json:"variant,omitempty"`

	Calls     int64   `json:"calls"`
	Local     int64   `json:"local"`
	Cloud     int64   `json:"cloud"`
	Offloaded float64 `json:"offloaded"`
	MeanMs    float64 `json:"mean_ms"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`

	CloudColdStarts int64   `json:"cloud_cold_starts"`
	WorkerStarts    int     `json:"worker_starts"` // local cold starts
	CloudCostUSD    float64 `json:"cloud_cost_usd"`
	WorkerSeconds   float64 `json:"worker_seconds"` // all pools, starting and draining included
	// PeakWorkers is the most members (starting included) all pools had at
	// once; OverCap counts the times they exceeded the cap (or the sum of
	// the mins, when higher): always 0.
	PeakWorkers int   `json:"peak_workers"`
	OverCap     int64 `json:"over_cap"`
	// Taken counts workers the rule took from a function below what its
	// own autoscaler would keep.
	Taken int `json:"taken"`

	// ColdCalls are the calls that found their function with no ready
	// worker (scaled to zero, or its first worker still starting); Cold…Ms
	// their latency. ScaledToZero counts the times a function lost its
	// last worker; Pings the keep-warm pings sent, costed in CloudCostUSD
	// and apart in PingCostUSD.
	ColdCalls    int64   `json:"cold_calls"`
	ColdP50Ms    float64 `json:"cold_p50_ms"`
	ColdP99Ms    float64 `json:"cold_p99_ms"`
	ColdMaxMs    float64 `json:"cold_max_ms"`
	ScaledToZero int64   `json:"scaled_to_zero"`
	Pings        int64   `json:"pings"`
	PingCostUSD  float64 `json:"ping_cost_usd"`

	SimSeconds float64 `json:"sim_s"`
	Events     int64   `json:"events"`
	WallSec    float64 `json:"wall_s"`
}

// fn is one function's state in a many-function run.
type fn struct {
	name  string
	base  float64 // base arrival rate, calls/s
	per   float64 // burst period, s
	phase float64 // burst phase, s
	limit int     // static split: its fixed size

	sched policy.Scheduler
	off   policy.Offloader
	scale policy.Autoscaler
	est   *policy.Estimator

	queue    []int32
	qHead    int
	queued   int
	members  []policy.Member
	memberW  []int32
	free     int
	running  int
	starting int
	cloudIn  int
	envs     []env
	lastCall int64 // the last arrival, ns, if called (scale to zero)
	called   bool
	lastPing int64 // the last keep-warm ping, ns, if pinged
	pinged   bool
}

type mworker struct {
	state    uint8
	inFlight int32
	pos      int32
	f        int32
	started  int64
}

type mcall struct {
	arrive int64
	enq    int64
	svc    float64
	gen    uint32
	f      int32
	queued bool
	cold   bool // it found no ready worker
}

// many is one many-function run's state.
type many struct {
	cfg   ManyConfig
	sh    Sharing
	total int
	base  time.Time

	ledger *share.Ledger
	fns    []fn

	rngTrace *rand.Rand
	rngSys   *rand.Rand
	mu, sig  float64

	now      int64
	h        eventHeap
	calls    []mcall
	freeCall []int32
	workers  []mworker
	arrived  int64

	members  int // all pools' members, starting included
	pool     int // members plus draining
	lastPool int64
	mins     int

	err      error
	hist     *hdrhistogram.Histogram
	coldHist *hdrhistogram.Histogram // the cold calls' latencies
	res      ManyResult
}

// RunMany simulates cfg with the functions sharing total workers as sh says.
// Every sharing of one comparison sees the same arrivals and service times.
func RunMany(cfg ManyConfig, total int, sh Sharing) (ManyResult, error) {
	if err := cfg.Validate(); err != nil {
		return ManyResult{}, err
	}
	if total < 1 {
		return ManyResult{}, fmt.Errorf("MAX_TOTAL_WORKERS %d: want at least 1", total)
	}
	start := time.Now()
	m := &many{cfg: cfg, sh: sh, total: total, base: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	m.rngTrace = rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	m.rngSys = rand.New(rand.NewPCG(cfg.Seed, 0xc10d))
	if cfg.ServiceCV > 0 {
		m.sig = math.Sqrt(math.Log(1 + cfg.ServiceCV*cfg.ServiceCV))
		m.mu = math.Log(cfg.Service.Seconds()) - m.sig*m.sig/2
	}
	m.hist = hdrhistogram.New(1, 3_600_000_000, 3)
	m.coldHist = hdrhistogram.New(1, 3_600_000_000, 3)
	m.res = ManyResult{Sharing: sh.Name, Total: total}
	if sh.Static == "" {
		m.ledger = share.NewRule(total, sh.Rule, m.at)
	}

	// Popularity and bursts come from their own stream, so they are the
	// same whatever the sharing.
	rngFn := rand.New(rand.NewPCG(cfg.Seed, 0xf0))
	weights := make([]float64, cfg.Functions)
	sum := 0.0
	for i := range weights {
		weights[i] = math.Pow(float64(i+1), -cfg.Zipf)
		sum += weights[i]
	}
	limits := staticSplit(sh.Static, total, cfg.Servers, cfg.Max, weights)
	m.fns = make([]fn, cfg.Functions)
	for i := range m.fns {
		f := &m.fns[i]
		f.name = fmt.Sprintf("fn%03d", i)
		f.base = cfg.Rate * weights[i] / sum
		f.per = cfg.BurstEvery.Seconds() * (0.5 + rngFn.Float64())
		f.phase = f.per * rngFn.Float64()
		hi := cfg.Max
		if limits != nil {
			f.limit, hi = limits[i], limits[i]
		}
		var err error
		if f.sched, err = policy.NewScheduler(cfg.Scheduler); err != nil {
			return ManyResult{}, err
		}
		if f.off, err = policy.NewOffloader(cfg.Offload, policy.OffloadConfig{
			QueueTimeout: cfg.QueueTimeout, CloudMaxRPS: cfg.CloudMaxRPS, CloudMaxCostPerHour: cfg.CloudMaxCostPerHour,
			LambdaMemoryMB: cfg.LambdaMemoryMB, PricePerGBSecond: cfg.PricePerGBSecond, PricePerRequest: cfg.PricePerRequest,
			WaitWeight: cfg.WaitWeight, BudgetBurst: cfg.BudgetBurst,
		}); err != nil {
			return ManyResult{}, err
		}
		if f.scale, err = policy.NewAutoscaler(cfg.Autoscaler, policy.ScaleConfig{
			N: cfg.Servers, Max: max(1, hi), ZeroAfter: cfg.ScaleToZeroAfter, Concurrency: cfg.Concurrency,
			ScaleDownDelay: cfg.ScaleDownDelay, Tick: cfg.Tick, TargetUtilization: cfg.TargetUtilization,
		}); err != nil {
			return ManyResult{}, err
		}
		f.est = policy.NewEstimator(policy.EstimatorConfig{CloudKeepAlive: cfg.CloudKeepAlive})
		if m.ledger != nil {
			m.ledger.Join(f.name, cfg.Servers, cfg.Max)
		}
		m.mins += cfg.Servers
		for range cfg.Servers { // the mins are ready at time 0
			m.makeReady(m.addWorker(int32(i)))
		}
		m.scheduleArrival(int32(i), 0)
		// Each function's loop ticks on its own, at its own phase.
		m.h.push(event{t: int64(rngFn.Float64() * float64(cfg.Tick)), kind: evTick, f: int32(i)})
	}
	m.res.WorkerStarts = 0 // the initial mins do not count as cold starts
	for m.h.len() > 0 && m.err == nil {
		ev := m.h.pop()
		m.now = ev.t
		m.res.Events++
		switch ev.kind {
		case evArrival:
			m.arrive(ev.f)
		case evLocalDone:
			m.localDone(ev.a, ev.b, false)
		case evLocalTimeout:
			m.localDone(ev.a, ev.b, true)
		case evCloudDone:
			m.cloudDone(ev.a, ev.b != 0)
		case evWorkerReady:
			if w := &m.workers[ev.a]; w.state == wStarting {
				m.makeReady(ev.a)
				m.fns[w.f].est.ObserveWorkerStart(time.Duration(m.now-w.started), m.at())
				m.drainQueue(w.f)
			}
		case evTick:
			m.tick(ev.f)
		case evRedecide:
			m.redecide(ev.a, uint32(ev.b))
		}
	}
	if m.err != nil {
		return ManyResult{}, m.err
	}
	m.poolChange()
	m.finish()
	m.res.WallSec = time.Since(start).Seconds()
	return m.res, nil
}

// staticSplit returns each function's fixed size under a static split, or
// nil for the ledger. Each gets its min (lo); what the mins leave of total
// is split evenly (the odd workers to functions spread over the popularity
// ranks, so the split knows nothing of popularity) or in proportion to the
// weights (largest remainders first), none above hi.
func staticSplit(kind string, total, lo, hi int, weights []float64) []int {
	n := len(weights)
	rest := total - lo*n
	quota := make([]float64, n)
	switch kind {
	case "even":
		for i := range quota {
			quota[i] = float64(rest) / float64(n)
		}
		if rem := max(rest, 0) % n; rem > 0 {
			for k := range rem { // evenly spaced ranks get the odd workers
				quota[k*n/rem] += 0.5
			}
		}
	case "load":
		sum := 0.0
		for _, w := range weights {
			sum += w
		}
		for i, w := range weights {
			quota[i] = float64(rest) * w / sum
		}
	default:
		return nil
	}
	out := make([]int, n)
	given := 0
	for i, q := range quota {
		out[i] = min(lo+max(0, int(q)), max(lo, hi))
		given += out[i] - lo
	}
	// Hand out what flooring left, largest remainder first.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Compare(quota[b]-math.Floor(quota[b]), quota[a]-math.Floor(quota[a]))
	})
	for given < rest {
		gave := false
		for _, i := range order {
			if given < rest && out[i] < hi {
				out[i]++
				given++
				gave = true
			}
		}
		if !gave {
			break
		}
	}
	return out
}

func clampInt(v, lo, hi int) int { return max(lo, min(v, hi)) }

func (m *many) at() time.Time { return m.base.Add(time.Duration(m.now)) }

func (m *many) after(d float64) int64 { return m.now + int64(d*1e9) }

// scheduleArrival draws function i's next arrival after t seconds. Its
// rate is constant within each burst and each gap between bursts, so the
// process is Poisson piece by piece: draw at the piece's rate, and past the
// piece's end start again from there (no draws are thrown away).
func (m *many) scheduleArrival(i int32, t float64) {
	f := &m.fns[i]
	on := m.cfg.BurstOn.Seconds()
	k := math.Floor((t + f.phase) / f.per) // the burst cycle t is in
	for {
		start := k*f.per - f.phase
		var rate, end float64
		switch {
		case t < start+on:
			rate, end = f.base*m.cfg.BurstFactor, start+on
		case t < start+f.per:
			rate, end = f.base, start+f.per
		default:
			k++
			continue
		}
		if next := t + m.rngTrace.ExpFloat64()/rate; next < end {
			m.h.push(event{t: int64(next * 1e9), kind: evArrival, f: i})
			return
		}
		t = end
	}
}

func (m *many) serviceTime() float64 {
	if m.sig == 0 {
		return m.cfg.Service.Seconds()
	}
	return math.Exp(m.mu + m.sig*m.rngTrace.NormFloat64())
}

// slots is function i's local ceiling for its offload policy: its static
// size, or what the ledger says it may have now.
func (m *many) slots(i int32) int {
	if m.ledger == nil {
		return m.fns[i].limit * m.cfg.Concurrency
	}
	return m.ledger.Limit(m.fns[i].name) * m.cfg.Concurrency
}

func (m *many) input(i int32, waited time.Duration, queuedAhead int) policy.OffloadInput {
	f := &m.fns[i]
	now := m.at()
	return policy.OffloadInput{
		Now: now, InFlight: f.running, Queued: queuedAhead, CloudInFlight: f.cloudIn,
		MaxSlots: m.slots(i), ReadySlots: len(f.members) * m.cfg.Concurrency,
		StartingSlots: f.starting * m.cfg.Concurrency, FreeSlots: f.free,
		CloudAvailable: !m.cfg.CloudOff, Waited: waited, Estimates: f.est.Estimates(now),
	}
}

func (m *many) arrive(i int32) {
	if m.arrived >= m.cfg.Calls {
		return // the run has all its calls; this function's arrivals stop
	}
	m.arrived++
	m.scheduleArrival(i, float64(m.now)/1e9)
	f := &m.fns[i]
	f.est.ObserveArrival(m.at())
	if m.ledger != nil {
		m.ledger.Arrived(f.name)
	}
	var id int32
	if n := len(m.freeCall); n > 0 {
		id = m.freeCall[n-1]
		m.freeCall = m.freeCall[:n-1]
	} else {
		m.calls = append(m.calls, mcall{})
		id = int32(len(m.calls) - 1)
	}
	c := &m.calls[id]
	c.arrive, c.svc, c.queued, c.f, c.cold = m.now, m.serviceTime(), false, i, false
	m.res.Calls++
	f.lastCall, f.called = m.now, true
	if m.cfg.zero() && len(f.members) == 0 {
		m.coldCall(i, id)
		return
	}
	d := f.off.Decide(m.input(i, 0, f.queued))
	if d.Route == spillway.RouteCloud {
		m.startCloud(id, d.Reason)
		return
	}
	if f.free > 0 && f.queued == 0 {
		m.dispatch(id)
		return
	}
	c.queued, c.enq = true, m.now
	f.queue = append(f.queue, id)
	f.queued++
	if d.MaxWait > 0 {
		m.h.push(event{t: m.now + d.MaxWait.Nanoseconds(), kind: evRedecide, a: id, b: int32(c.gen)})
	}
	m.drainQueue(i)
}

// coldCall places a call that found function i with no ready worker: a
// worker starts at once if none is starting (within the function's share),
// and the call waits for it (ColdWait, or no cloud) or goes to the cloud
// with reason cold.
func (m *many) coldCall(i, id int32) {
	f := &m.fns[i]
	c := &m.calls[id]
	c.cold = true
	m.res.ColdCalls++
	if f.starting == 0 {
		size := 1
		if m.ledger != nil {
			size = m.ledger.Target(f.name, 1, 0, f.running)
		}
		m.scaleTo(i, size)
	}
	var maxWait time.Duration
	switch {
	case m.cfg.ColdDecide:
		d := f.off.Decide(m.input(i, 0, f.queued))
		if d.Route == spillway.RouteCloud {
			m.startCloud(id, d.Reason)
			return
		}
		maxWait = d.MaxWait
	case !m.cfg.ColdWait && !m.cfg.CloudOff:
		m.startCloud(id, spillway.ReasonCold)
		return
	}
	c.queued, c.enq = true, m.now
	f.queue = append(f.queue, id)
	f.queued++
	if maxWait > 0 {
		m.h.push(event{t: m.now + maxWait.Nanoseconds(), kind: evRedecide, a: id, b: int32(c.gen)})
	}
}

// ping sends function i's keep-warm ping, as control.KeepWarm does, once
// KeepWarmEvery has passed since its last one: it takes the Lambda's most
// recently used environment if one is still warm (a new one otherwise) and
// keeps it warm from now. It is billed as a 1ms call, plus the cold start
// when it made a new environment.
func (m *many) ping(i int32) {
	f := &m.fns[i]
	if m.cfg.KeepWarmEvery <= 0 || m.cfg.CloudOff || f.pinged && m.now-f.lastPing < m.cfg.KeepWarmEvery.Nanoseconds() {
		return
	}
	f.pinged, f.lastPing = true, m.now
	m.res.Pings++
	billed := time.Millisecond
	n := len(f.envs)
	if n > 0 && m.now-f.envs[n-1].freeAt <= m.cfg.CloudKeepAlive.Nanoseconds() {
		f.envs[n-1].freeAt = m.now
	} else {
		billed += m.cfg.CloudColdStart
		m.res.CloudColdStarts++
		f.envs = append(f.envs[:0], env{freeAt: m.now + m.cfg.CloudColdStart.Nanoseconds()})
	}
	usd := policy.CallCost(billed, m.cfg.LambdaMemoryMB, m.cfg.PricePerGBSecond, m.cfg.PricePerRequest)
	m.res.CloudCostUSD += usd
	m.res.PingCostUSD += usd
	f.est.ObserveKeepWarm(m.at()) // as lb's KeepWarm tells its estimator
}

func (m *many) redecide(id int32, gen uint32) {
	c := &m.calls[id]
	if c.gen != gen || !c.queued {
		return
	}
	f := &m.fns[c.f]
	d := f.off.Decide(m.input(c.f, time.Duration(m.now-c.enq), f.queued-1))
	if d.Route == spillway.RouteCloud {
		c.queued = false
		f.queued--
		m.startCloud(id, d.Reason)
		return
	}
	if d.MaxWait > 0 {
		m.h.push(event{t: m.now + d.MaxWait.Nanoseconds(), kind: evRedecide, a: id, b: int32(gen)})
	}
}

func (m *many) drainQueue(i int32) {
	f := &m.fns[i]
	for f.free > 0 && f.queued > 0 {
		id := f.queue[f.qHead]
		f.qHead++
		if !m.calls[id].queued {
			continue
		}
		m.calls[id].queued = false
		f.queued--
		m.dispatch(id)
	}
	if f.qHead > 256 && f.qHead*2 > len(f.queue) {
		n := copy(f.queue, f.queue[f.qHead:])
		f.queue = f.queue[:n]
		f.qHead = 0
	}
}

func (m *many) dispatch(id int32) {
	c := &m.calls[id]
	f := &m.fns[c.f]
	k := f.sched.Pick(f.members)
	if k < 0 || k >= len(f.members) || f.members[k].InFlight >= f.members[k].Capacity {
		m.err = fmt.Errorf("%s: scheduler picked %d of %d members with %d free slots counted", f.name, k, len(f.members), f.free)
		return
	}
	w := f.memberW[k]
	f.members[k].InFlight++
	m.workers[w].inFlight++
	f.free--
	f.running++
	if lt := m.cfg.LocalTimeout.Seconds(); lt > 0 && c.svc > lt {
		m.h.push(event{t: m.after(lt), kind: evLocalTimeout, a: w, b: id})
		return
	}
	m.h.push(event{t: m.after(c.svc), kind: evLocalDone, a: w, b: id})
}

func (m *many) localDone(w, id int32, timedOut bool) {
	wk := &m.workers[w]
	f := &m.fns[wk.f]
	wk.inFlight--
	f.running--
	switch wk.state {
	case wReady:
		f.members[wk.pos].InFlight--
		f.free++
	case wDraining:
		if wk.inFlight == 0 {
			m.poolChange()
			wk.state = wGone
			m.pool--
		}
	}
	c := &m.calls[id]
	if timedOut {
		f.est.Observe(spillway.RouteLocal, m.cfg.LocalTimeout, false, m.at())
		m.startCloud(id, spillway.ReasonTimeout)
	} else {
		f.est.Observe(spillway.RouteLocal, time.Duration(c.svc*1e9), false, m.at())
		m.res.Local++
		m.record(id)
	}
	m.drainQueue(wk.f)
}

func (m *many) record(id int32) {
	c := &m.calls[id]
	us := max((m.now-c.arrive)/1000, 1)
	_ = m.hist.RecordValue(us) // clamped by the histogram's range
	if c.cold {
		_ = m.coldHist.RecordValue(us)
	}
	c.gen++
	m.freeCall = append(m.freeCall, id)
}

func (m *many) startCloud(id int32, reason spillway.Reason) {
	c := &m.calls[id]
	f := &m.fns[c.f]
	f.cloudIn++
	f.est.ObserveCloudStart(f.cloudIn, m.at())
	cold := true
	if n := len(f.envs); n > 0 {
		if m.now-f.envs[n-1].freeAt <= m.cfg.CloudKeepAlive.Nanoseconds() {
			cold = false
			f.envs = f.envs[:n-1]
		} else {
			f.envs = f.envs[:0]
		}
	}
	run := c.svc * m.cfg.CloudSpeed
	var coldFlag int32
	if cold {
		run += m.cfg.CloudColdStart.Seconds()
		m.res.CloudColdStarts++
		coldFlag = 1
	}
	billed := math.Ceil(run*1000) / 1000
	m.res.CloudCostUSD += policy.CallCost(time.Duration(billed*1e9), m.cfg.LambdaMemoryMB, m.cfg.PricePerGBSecond, m.cfg.PricePerRequest)
	net := m.cfg.CloudOverhead.Seconds() * (0.75 + 0.25*m.rngSys.ExpFloat64())
	c.enq = m.now
	m.h.push(event{t: m.after(run + net), kind: evCloudDone, a: id, b: coldFlag})
}

func (m *many) cloudDone(id int32, cold bool) {
	c := &m.calls[id]
	f := &m.fns[c.f]
	f.cloudIn--
	f.envs = append(f.envs, env{freeAt: m.now})
	f.est.Observe(spillway.RouteCloud, time.Duration(m.now-c.enq), cold, m.at())
	m.res.Cloud++
	m.record(id)
}

// poolChange accounts worker-seconds up to now; call it before a change.
func (m *many) poolChange() {
	m.res.WorkerSeconds += float64(m.pool) * float64(m.now-m.lastPool) / 1e9
	m.lastPool = m.now
}

func (m *many) addWorker(i int32) int32 {
	m.poolChange()
	m.workers = append(m.workers, mworker{state: wStarting, pos: -1, f: i, started: m.now})
	m.fns[i].starting++
	m.members++
	m.pool++
	m.res.WorkerStarts++
	m.res.PeakWorkers = max(m.res.PeakWorkers, m.members)
	if m.members > max(m.total, m.mins) {
		m.res.OverCap++
	}
	return int32(len(m.workers) - 1)
}

func (m *many) makeReady(w int32) {
	wk := &m.workers[w]
	f := &m.fns[wk.f]
	if wk.state == wStarting {
		f.starting--
	}
	wk.state = wReady
	wk.pos = int32(len(f.members))
	f.members = append(f.members, policy.Member{Name: strconv.Itoa(int(w)), Capacity: m.cfg.Concurrency})
	f.memberW = append(f.memberW, w)
	f.free += m.cfg.Concurrency
}

func (m *many) removeMember(f *fn, k int) {
	w := f.memberW[k]
	f.free -= m.cfg.Concurrency - int(m.workers[w].inFlight)
	f.members = append(f.members[:k], f.members[k+1:]...)
	f.memberW = append(f.memberW[:k], f.memberW[k+1:]...)
	for j := k; j < len(f.memberW); j++ {
		m.workers[f.memberW[j]].pos = int32(j)
	}
	m.workers[w].pos = -1
	m.members--
}

// scaleTo moves function i's pool to desired members, as internal/pool does:
// new workers start at once; removed ones are the newest idle members, then
// starting ones, then busy members, which drain.
func (m *many) scaleTo(i int32, desired int) {
	f := &m.fns[i]
	cur := len(f.members) + f.starting
	if desired > cur {
		for range desired - cur {
			w := m.addWorker(i)
			jit := 0.8 + 0.4*m.rngSys.Float64()
			m.h.push(event{t: m.after(m.cfg.WorkerColdStart.Seconds() * jit), kind: evWorkerReady, a: w})
		}
		return
	}
	if desired >= cur {
		return
	}
	m.poolChange()
	n := cur - desired
	for k := len(f.members) - 1; k >= 0 && n > 0; k-- {
		if w := f.memberW[k]; m.workers[w].inFlight == 0 {
			m.removeMember(f, k)
			m.workers[w].state = wGone
			m.pool--
			n--
		}
	}
	for w := len(m.workers) - 1; w >= 0 && n > 0 && f.starting > 0; w-- {
		if wk := &m.workers[w]; wk.f == i && wk.state == wStarting {
			wk.state = wGone
			f.starting--
			m.members--
			m.pool--
			n--
		}
	}
	for k := len(f.members) - 1; k >= 0 && n > 0; k-- {
		w := f.memberW[k]
		m.removeMember(f, k)
		m.workers[w].state = wDraining
		n--
	}
}

// tick is function i's elasticity loop: its autoscaler's wish, bounded by
// the ledger (or fixed by the static split). A function with min 0 goes to
// zero when its autoscaler says so (SCALE_TO_ZERO_AFTER after its last
// call); while it has no worker it is pinged (keep-warm), as lb does.
func (m *many) tick(i int32) {
	f := &m.fns[i]
	now := m.at()
	est := f.est.Estimates(now)
	have := len(f.members) + f.starting
	snap := policy.ScaleSnapshot{
		Now: now, Members: have, Ready: len(f.members),
		InFlight: f.running, Queued: f.queued, ArrivalRate: est.ArrivalRate,
		ServiceTime: est.LocalService, ColdStart: est.WorkerColdStart,
	}
	if f.called {
		snap.LastCall = m.base.Add(time.Duration(f.lastCall))
	}
	d := f.scale.Decide(snap)
	size := d.Desired
	if m.ledger != nil {
		size = m.ledger.Target(f.name, d.Desired, have, f.running)
		if keep := min(d.Desired, have); size < keep {
			m.res.Taken += keep - size
		}
	}
	if have > 0 && size == 0 {
		m.res.ScaledToZero++
	}
	m.scaleTo(i, size)
	if m.cfg.zero() && len(f.members)+f.starting == 0 {
		m.ping(i)
	}
	if m.arrived < m.cfg.Calls || f.running > 0 || f.queued > 0 || f.cloudIn > 0 {
		m.h.push(event{t: m.now + m.cfg.Tick.Nanoseconds(), kind: evTick, f: i})
	}
}

func (m *many) finish() {
	r := &m.res
	r.SimSeconds = float64(m.now) / 1e9
	if r.Calls > 0 {
		ms := func(q float64) float64 { return float64(m.hist.ValueAtQuantile(q)) / 1000 }
		r.Offloaded = float64(r.Cloud) / float64(r.Calls)
		r.MeanMs = m.hist.Mean() / 1000
		r.P50Ms, r.P99Ms, r.P999Ms = ms(50), ms(99), ms(99.9)
	}
	if r.ColdCalls > 0 {
		cms := func(q float64) float64 { return float64(m.coldHist.ValueAtQuantile(q)) / 1000 }
		r.ColdP50Ms, r.ColdP99Ms, r.ColdMaxMs = cms(50), cms(99), float64(m.coldHist.Max())/1000
	}
}
