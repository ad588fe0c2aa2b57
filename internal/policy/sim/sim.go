// Package sim is a deterministic discrete-event simulator that replays an
// arrival trace against the real policy code (scheduler, offloader,
// autoscaler, estimator) with modelled local service times, worker cold
// starts, cloud round trips with Lambda cold starts and keep-alive, and Lambda
// pricing. Runs are deterministic for a seed; every policy of one comparison
// sees the same arrivals and the same per-call service times.
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/policy"
)

// Config is one simulated system; the policies to compare are given apart.
type Config struct {
	Seed     uint64
	Duration time.Duration // how long arrivals come; the run ends when the last call finishes
	Trace    Trace

	Servers        int           // NUMBER_OF_SERVERS
	Max            int           // MAX_SERVERS
	Concurrency    int           // WORKER_CONCURRENCY
	Tick           time.Duration // ELASTICITY_SLEEP
	ScaleDownDelay time.Duration // SCALE_DOWN_DELAY
	LocalTimeout   time.Duration // LOCAL_TIMEOUT: a longer local run is re-run in the cloud
	QueueTimeout   time.Duration // QUEUE_TIMEOUT

	Service   time.Duration // mean local service time
	ServiceCV float64       // its coefficient of variation (lognormal; 0 = constant)

	WorkerColdStart time.Duration // start to ready of a new worker (±20% uniform)

	CloudOff       bool          // CLOUD=off
	CloudOverhead  time.Duration // network + API Gateway per call (mean, exponential spread of 25%)
	CloudSpeed     float64       // Lambda run time = local service time × CloudSpeed
	CloudColdStart time.Duration // added to a call that gets a new execution environment
	CloudKeepAlive time.Duration // idle environments live this long

	LambdaMemoryMB      int
	PricePerGBSecond    float64
	PricePerRequest     float64
	CloudMaxRPS         float64
	CloudMaxCostPerHour float64

	// lb's settings the simulator does not vary: OFFLOAD_WAIT_WEIGHT,
	// CLOUD_BUDGET_BURST, SCALE_TARGET_UTILIZATION (DefaultConfig takes
	// lb's defaults).
	WaitWeight        float64
	BudgetBurst       time.Duration
	TargetUtilization float64
}

// DefaultConfig is an elastic pool (N=2, MAX=16) in front of a 100ms
// function, hit by 20s bursts of 200 calls/s every 2 minutes over a base of
// 5 calls/s: longer gaps than SCALE_DOWN_DELAY, so each burst meets a pool
// shrunk back to N.
func DefaultConfig() Config {
	lb := config.Defaults()
	return Config{
		Seed:     1,
		Duration: 30 * time.Minute,
		Trace:    Trace{Kind: TraceBursts, Rate: 5, Peak: 200, Period: 2 * time.Minute, On: 20 * time.Second, StepAt: 30 * time.Second},

		Servers: 2, Max: 16, Concurrency: 1,
		Tick: time.Second, ScaleDownDelay: 30 * time.Second, LocalTimeout: 5 * time.Second,

		Service: 100 * time.Millisecond, ServiceCV: 0.5,

		WorkerColdStart: 2 * time.Second,

		CloudOverhead: 80 * time.Millisecond, CloudSpeed: 1.2,
		CloudColdStart: 800 * time.Millisecond, CloudKeepAlive: 5 * time.Minute,

		LambdaMemoryMB:   int(lb.Cloud.LambdaMemory),
		PricePerGBSecond: policy.DefaultPricePerGBSecond,
		PricePerRequest:  policy.DefaultPricePerRequest,

		WaitWeight:        lb.OffloadWaitWeight,
		BudgetBurst:       lb.CloudBudgetBurst,
		TargetUtilization: lb.ScaleTargetUtil,
	}
}

// Validate reports a configuration the simulator cannot run.
func (c Config) Validate() error {
	if err := c.Trace.Validate(); err != nil {
		return err
	}
	switch {
	case c.Duration <= 0 && c.Trace.Kind != TraceCSV:
		return fmt.Errorf("--duration must be positive")
	case c.Servers < 1 || c.Max < c.Servers || c.Concurrency < 1:
		return fmt.Errorf("need 1 <= --servers <= --max and --concurrency >= 1")
	case c.Tick <= 0:
		return fmt.Errorf("--tick must be positive")
	case c.Service < 0 || c.ServiceCV < 0 || c.WorkerColdStart < 0:
		return fmt.Errorf("service time, its cv and the worker cold start must not be negative")
	case c.CloudOverhead < 0 || c.CloudSpeed <= 0 || c.CloudColdStart < 0 || c.CloudKeepAlive < 0:
		return fmt.Errorf("cloud overhead, cold start and keep-alive must not be negative, cloud speed positive")
	}
	return nil
}

// Policy names the policies of one simulated run.
type Policy struct {
	Offload    string // OFFLOAD_POLICY
	Autoscaler string // AUTOSCALER
	Scheduler  string // SCHEDULER
}

// ParsePolicy reads "offload[/autoscaler[/scheduler]]"; missing parts take
// the given defaults.
func ParsePolicy(s, autoscaler, scheduler string) Policy {
	parts := strings.SplitN(s, "/", 3)
	p := Policy{Offload: parts[0], Autoscaler: autoscaler, Scheduler: scheduler}
	if len(parts) > 1 && parts[1] != "" {
		p.Autoscaler = parts[1]
	}
	if len(parts) > 2 && parts[2] != "" {
		p.Scheduler = parts[2]
	}
	return p
}

func (p Policy) String() string { return p.Offload + "/" + p.Autoscaler + "/" + p.Scheduler }

// Result is what one run measured.
type Result struct {
	Policy string `json:"policy"`

	Calls     int64            `json:"calls"`
	Local     int64            `json:"local"`
	Cloud     int64            `json:"cloud"`
	Offloaded float64          `json:"offloaded"` // Cloud / Calls
	Reasons   map[string]int64 `json:"reasons"`   // cloud calls by reason

	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P95Ms  float64 `json:"p95_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`

	CloudColdStarts int64   `json:"cloud_cold_starts"`
	CloudCostUSD    float64 `json:"cloud_cost_usd"`
	WorkerSeconds   float64 `json:"worker_seconds"` // integral of the pool size (incl. starting, draining)

	PoolMin  int     `json:"pool_min"`
	PoolMean float64 `json:"pool_mean"`
	PoolMax  int     `json:"pool_max"`
	// Timeline is the pool size (members incl. starting) at every tick,
	// down-sampled to at most 120 points by taking each bucket's maximum.
	Timeline     []int   `json:"timeline"`
	TimelineStep float64 `json:"timeline_step_s"`

	ScaleUps      int `json:"scale_ups"`   // ticks that grew the pool
	ScaleDowns    int `json:"scale_downs"` // ticks that shrank it
	WorkersAdded  int `json:"workers_added"`
	WorkersRemove int `json:"workers_removed"`
	// UnderTicks counts ticks that ended with fewer members than the load
	// needed (ceil(true rate × mean service / concurrency) in [N, MAX]);
	// MaxLagTicks is the longest run of such ticks: how many ticks the pool
	// needs to catch up with a step in load.
	UnderTicks  int `json:"under_ticks"`
	MaxLagTicks int `json:"max_lag_ticks"`

	Events  int64   `json:"events"`
	WallSec float64 `json:"wall_s"`
}

// Worker states.
const (
	wStarting uint8 = iota
	wReady
	wDraining
	wGone
)

type worker struct {
	state    uint8
	inFlight int32
	pos      int32 // index in members while ready, else -1
	started  int64
}

type call struct {
	arrive int64
	enq    int64
	svc    float64 // intrinsic local service time, seconds
	gen    uint32
	queued bool
}

type env struct{ freeAt int64 }

// engine is one run's state. It is single-goroutine; the policies it drives
// are the real, concurrency-safe ones.
type engine struct {
	cfg  Config
	pol  Policy
	base time.Time

	sched policy.Scheduler
	off   policy.Offloader
	scale policy.Autoscaler
	est   *policy.Estimator

	rngTrace *rand.Rand // arrivals and per-call service times: equal across policies
	rngSys   *rand.Rand // cold starts and network spread
	arr      *arrivals
	mu, sig  float64 // lognormal service parameters

	now int64
	h   eventHeap

	calls    []call
	freeCall []int32
	queue    []int32 // FIFO of call slots; entries whose call left are skipped
	qHead    int
	queued   int // live entries in queue

	workers   []worker
	members   []policy.Member
	memberW   []int32 // members[i] is workers[memberW[i]]
	freeSlots int
	running   int
	starting  int
	draining  int

	cloudIn  int
	envs     []env // idle Lambda environments, most recently freed last
	arrTick  int   // arrivals since the last tick (csv traces' load estimate)
	lastPool int64 // time of the last pool-size change
	done     bool  // arrivals are over

	err    error // an engine invariant broke; the run stops
	hist   *hdrhistogram.Histogram
	res    Result
	ticks  []int
	lagRun int
}

// Run simulates cfg under p.
func Run(cfg Config, p Policy) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	start := time.Now()
	e := &engine{cfg: cfg, pol: p, base: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	var err error
	if e.sched, err = policy.NewScheduler(p.Scheduler); err != nil {
		return Result{}, err
	}
	if e.off, err = policy.NewOffloader(p.Offload, policy.OffloadConfig{
		QueueTimeout: cfg.QueueTimeout, CloudMaxRPS: cfg.CloudMaxRPS, CloudMaxCostPerHour: cfg.CloudMaxCostPerHour,
		LambdaMemoryMB: cfg.LambdaMemoryMB, PricePerGBSecond: cfg.PricePerGBSecond, PricePerRequest: cfg.PricePerRequest,
		WaitWeight: cfg.WaitWeight, BudgetBurst: cfg.BudgetBurst,
	}); err != nil {
		return Result{}, err
	}
	if e.scale, err = policy.NewAutoscaler(p.Autoscaler, policy.ScaleConfig{
		N: cfg.Servers, Max: cfg.Max, Concurrency: cfg.Concurrency,
		ScaleDownDelay: cfg.ScaleDownDelay, Tick: cfg.Tick, TargetUtilization: cfg.TargetUtilization,
	}); err != nil {
		return Result{}, err
	}
	e.est = policy.NewEstimator(policy.EstimatorConfig{CloudKeepAlive: cfg.CloudKeepAlive})
	e.rngTrace = rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	e.rngSys = rand.New(rand.NewPCG(cfg.Seed, 0xc10d))
	e.arr = newArrivals(cfg.Trace, e.rngTrace, cfg.Duration)
	if cfg.ServiceCV > 0 {
		e.sig = math.Sqrt(math.Log(1 + cfg.ServiceCV*cfg.ServiceCV))
		e.mu = math.Log(cfg.Service.Seconds()) - e.sig*e.sig/2
	}
	e.hist = hdrhistogram.New(1, 3_600_000_000, 3) // microseconds up to an hour
	e.res = Result{Policy: p.String(), Reasons: map[string]int64{}, PoolMin: math.MaxInt}

	// The initial pool is ready at time 0.
	for range cfg.Servers {
		w := e.addWorker()
		e.makeReady(w)
	}
	e.scheduleArrival()
	e.h.push(event{t: cfg.Tick.Nanoseconds(), kind: evTick})
	for e.h.len() > 0 && e.err == nil {
		ev := e.h.pop()
		e.now = ev.t
		e.res.Events++
		switch ev.kind {
		case evArrival:
			e.arrive()
		case evLocalDone:
			e.localDone(ev.a, ev.b, false)
		case evLocalTimeout:
			e.localDone(ev.a, ev.b, true)
		case evCloudDone:
			e.cloudDone(ev.a, ev.b != 0)
		case evWorkerReady:
			if e.workers[ev.a].state == wStarting {
				e.makeReady(ev.a)
				e.est.ObserveWorkerStart(time.Duration(e.now-e.workers[ev.a].started), e.at())
				e.drainQueue()
			}
		case evTick:
			e.tick()
		case evRedecide:
			e.redecide(ev.a, uint32(ev.b))
		}
	}
	if e.err != nil {
		return Result{}, e.err
	}
	e.poolChange()
	e.finish()
	e.res.WallSec = time.Since(start).Seconds()
	return e.res, nil
}

func (e *engine) at() time.Time { return e.base.Add(time.Duration(e.now)) }

func (e *engine) after(d float64) int64 { return e.now + int64(d*1e9) }

func (e *engine) scheduleArrival() {
	t, ok := e.arr.next()
	if !ok {
		e.done = true
		return
	}
	e.h.push(event{t: int64(t * 1e9), kind: evArrival})
}

func (e *engine) serviceTime() float64 {
	if e.sig == 0 {
		return e.cfg.Service.Seconds()
	}
	return math.Exp(e.mu + e.sig*e.rngTrace.NormFloat64())
}

func (e *engine) input(waited time.Duration, queuedAhead int) policy.OffloadInput {
	now := e.at()
	ready := len(e.members)
	return policy.OffloadInput{
		Now: now, InFlight: e.running, Queued: queuedAhead, CloudInFlight: e.cloudIn,
		MaxSlots: e.cfg.Max * e.cfg.Concurrency, ReadySlots: ready * e.cfg.Concurrency,
		StartingSlots: e.starting * e.cfg.Concurrency, FreeSlots: e.freeSlots,
		CloudAvailable: !e.cfg.CloudOff, Waited: waited, Estimates: e.est.Estimates(now),
	}
}

func (e *engine) arrive() {
	e.scheduleArrival()
	e.arrTick++
	e.est.ObserveArrival(e.at())
	var id int32
	if n := len(e.freeCall); n > 0 {
		id = e.freeCall[n-1]
		e.freeCall = e.freeCall[:n-1]
	} else {
		e.calls = append(e.calls, call{})
		id = int32(len(e.calls) - 1)
	}
	c := &e.calls[id]
	c.arrive, c.svc, c.queued = e.now, e.serviceTime(), false
	e.res.Calls++
	d := e.off.Decide(e.input(0, e.queued))
	if d.Route == spillway.RouteCloud {
		e.startCloud(id, d.Reason)
		return
	}
	if e.freeSlots > 0 && e.queued == 0 {
		e.dispatch(id)
		return
	}
	e.enqueue(id, d.MaxWait)
	e.drainQueue()
}

func (e *engine) enqueue(id int32, maxWait time.Duration) {
	c := &e.calls[id]
	c.queued, c.enq = true, e.now
	e.queue = append(e.queue, id)
	e.queued++
	if maxWait > 0 {
		e.h.push(event{t: e.now + maxWait.Nanoseconds(), kind: evRedecide, a: id, b: int32(c.gen)})
	}
}

func (e *engine) redecide(id int32, gen uint32) {
	c := &e.calls[id]
	if c.gen != gen || !c.queued {
		return // already running or finished
	}
	d := e.off.Decide(e.input(time.Duration(e.now-c.enq), e.queued-1))
	if d.Route == spillway.RouteCloud {
		c.queued = false
		e.queued--
		e.startCloud(id, d.Reason)
		return
	}
	if d.MaxWait > 0 {
		e.h.push(event{t: e.now + d.MaxWait.Nanoseconds(), kind: evRedecide, a: id, b: int32(gen)})
	}
}

func (e *engine) drainQueue() {
	for e.freeSlots > 0 && e.queued > 0 {
		id := e.queue[e.qHead]
		e.qHead++
		if !e.calls[id].queued {
			continue
		}
		e.calls[id].queued = false
		e.queued--
		e.dispatch(id)
	}
	if e.qHead > 1024 && e.qHead*2 > len(e.queue) { // compact
		n := copy(e.queue, e.queue[e.qHead:])
		e.queue = e.queue[:n]
		e.qHead = 0
	}
}

func (e *engine) dispatch(id int32) {
	i := e.sched.Pick(e.members)
	if i < 0 || i >= len(e.members) || e.members[i].InFlight >= e.members[i].Capacity {
		e.err = fmt.Errorf("scheduler %s picked %d of %d members with %d free slots counted", e.pol.Scheduler, i, len(e.members), e.freeSlots)
		return
	}
	w := e.memberW[i]
	e.members[i].InFlight++
	e.workers[w].inFlight++
	e.freeSlots--
	e.running++
	s := e.calls[id].svc
	if lt := e.cfg.LocalTimeout.Seconds(); lt > 0 && s > lt {
		e.h.push(event{t: e.after(lt), kind: evLocalTimeout, a: w, b: id})
		return
	}
	e.h.push(event{t: e.after(s), kind: evLocalDone, a: w, b: id})
}

func (e *engine) localDone(w, id int32, timedOut bool) {
	wk := &e.workers[w]
	wk.inFlight--
	e.running--
	switch wk.state {
	case wReady:
		e.members[wk.pos].InFlight--
		e.freeSlots++
	case wDraining:
		if wk.inFlight == 0 {
			e.poolChange()
			wk.state = wGone
			e.draining--
		}
	}
	c := &e.calls[id]
	if timedOut {
		e.est.Observe(spillway.RouteLocal, e.cfg.LocalTimeout, false, e.at())
		e.startCloud(id, spillway.ReasonTimeout)
	} else {
		e.est.Observe(spillway.RouteLocal, time.Duration(c.svc*1e9), false, e.at())
		e.res.Local++
		e.record(id)
	}
	e.drainQueue()
}

func (e *engine) record(id int32) {
	c := &e.calls[id]
	us := (e.now - c.arrive) / 1000
	if us < 1 {
		us = 1
	}
	_ = e.hist.RecordValue(us) // values beyond an hour are clamped by the caller's config
	c.gen++
	e.freeCall = append(e.freeCall, id)
}

func (e *engine) startCloud(id int32, reason spillway.Reason) {
	e.cloudIn++
	e.est.ObserveCloudStart(e.cloudIn, e.at())
	e.res.Reasons[string(reason)]++
	cold := true
	if n := len(e.envs); n > 0 {
		if e.now-e.envs[n-1].freeAt <= e.cfg.CloudKeepAlive.Nanoseconds() {
			cold = false
			e.envs = e.envs[:n-1]
		} else {
			e.envs = e.envs[:0] // the most recent is expired, so are all
		}
	}
	run := e.calls[id].svc * e.cfg.CloudSpeed
	if cold {
		run += e.cfg.CloudColdStart.Seconds()
		e.res.CloudColdStarts++
	}
	billed := math.Ceil(run*1000) / 1000
	e.res.CloudCostUSD += policy.CallCost(time.Duration(billed*1e9), e.cfg.LambdaMemoryMB, e.cfg.PricePerGBSecond, e.cfg.PricePerRequest)
	net := e.cfg.CloudOverhead.Seconds() * (0.75 + 0.25*e.rngSys.ExpFloat64())
	var coldFlag int32
	if cold {
		coldFlag = 1
	}
	e.calls[id].enq = e.now // reused as the cloud start time
	e.h.push(event{t: e.after(run + net), kind: evCloudDone, a: id, b: coldFlag})
}

func (e *engine) cloudDone(id int32, cold bool) {
	e.cloudIn--
	e.envs = append(e.envs, env{freeAt: e.now})
	c := &e.calls[id]
	e.est.Observe(spillway.RouteCloud, time.Duration(e.now-c.enq), cold, e.at())
	e.res.Cloud++
	e.record(id)
}

// Pool changes.

func (e *engine) poolSize() int { return len(e.members) + e.starting + e.draining }

// poolChange accounts worker-seconds up to now; call it before the size changes.
func (e *engine) poolChange() {
	e.res.WorkerSeconds += float64(e.poolSize()) * float64(e.now-e.lastPool) / 1e9
	e.lastPool = e.now
}

func (e *engine) addWorker() int32 {
	e.poolChange()
	e.workers = append(e.workers, worker{state: wStarting, pos: -1, started: e.now})
	e.starting++
	return int32(len(e.workers) - 1)
}

func (e *engine) makeReady(w int32) {
	e.poolChange()
	wk := &e.workers[w]
	if wk.state == wStarting {
		e.starting--
	}
	wk.state = wReady
	wk.pos = int32(len(e.members))
	e.members = append(e.members, policy.Member{Name: fmt.Sprint(w), Capacity: e.cfg.Concurrency})
	e.memberW = append(e.memberW, w)
	e.freeSlots += e.cfg.Concurrency
}

// removeMember takes ready member at index i out of rotation.
func (e *engine) removeMember(i int) {
	w := e.memberW[i]
	e.freeSlots -= e.cfg.Concurrency - int(e.workers[w].inFlight)
	e.members = append(e.members[:i], e.members[i+1:]...)
	e.memberW = append(e.memberW[:i], e.memberW[i+1:]...)
	for j := i; j < len(e.memberW); j++ {
		e.workers[e.memberW[j]].pos = int32(j)
	}
	e.workers[w].pos = -1
}

func (e *engine) scaleTo(desired int) {
	cur := len(e.members) + e.starting
	if desired > cur {
		for range desired - cur {
			w := e.addWorker()
			jit := 0.8 + 0.4*e.rngSys.Float64()
			e.h.push(event{t: e.after(e.cfg.WorkerColdStart.Seconds() * jit), kind: evWorkerReady, a: w})
		}
		e.res.ScaleUps++
		e.res.WorkersAdded += desired - cur
		return
	}
	if desired >= cur {
		return
	}
	e.poolChange()
	n := cur - desired
	e.res.ScaleDowns++
	e.res.WorkersRemove += n
	// Newest idle ready members first, then starting ones, then drain busy ones.
	for i := len(e.members) - 1; i >= 0 && n > 0; i-- {
		if w := e.memberW[i]; e.workers[w].inFlight == 0 {
			e.removeMember(i)
			e.workers[w].state = wGone
			n--
		}
	}
	for w := len(e.workers) - 1; w >= 0 && n > 0 && e.starting > 0; w-- {
		if e.workers[w].state == wStarting {
			e.workers[w].state = wGone
			e.starting--
			n--
		}
	}
	for i := len(e.members) - 1; i >= 0 && n > 0; i-- {
		w := e.memberW[i]
		e.removeMember(i)
		e.workers[w].state = wDraining
		e.draining++
		n--
	}
}

func (e *engine) tick() {
	now := e.at()
	est := e.est.Estimates(now)
	d := e.scale.Decide(policy.ScaleSnapshot{
		Now: now, Members: len(e.members) + e.starting, Ready: len(e.members),
		InFlight: e.running, Queued: e.queued, ArrivalRate: est.ArrivalRate,
		ServiceTime: est.LocalService, ColdStart: est.WorkerColdStart,
	})
	e.scaleTo(d.Desired)
	size := len(e.members) + e.starting
	e.ticks = append(e.ticks, size)

	// Did the pool keep up with the load?
	rate, known := e.cfg.Trace.RateAt(float64(e.now) / 1e9)
	if !known {
		rate = float64(e.arrTick) / e.cfg.Tick.Seconds()
	}
	e.arrTick = 0
	need := int(math.Ceil(rate*e.cfg.Service.Seconds()/float64(e.cfg.Concurrency) - 1e-9))
	need = min(max(need, e.cfg.Servers), e.cfg.Max)
	if size < need {
		e.res.UnderTicks++
		e.lagRun++
		e.res.MaxLagTicks = max(e.res.MaxLagTicks, e.lagRun)
	} else {
		e.lagRun = 0
	}
	if !e.done || e.running > 0 || e.queued > 0 || e.cloudIn > 0 {
		e.h.push(event{t: e.now + e.cfg.Tick.Nanoseconds(), kind: evTick})
	}
}

func (e *engine) finish() {
	r := &e.res
	ms := func(q float64) float64 { return float64(e.hist.ValueAtQuantile(q)) / 1000 }
	if r.Calls > 0 {
		r.Offloaded = float64(r.Cloud) / float64(r.Calls)
		r.MeanMs = e.hist.Mean() / 1000
		r.P50Ms, r.P95Ms, r.P99Ms, r.P999Ms = ms(50), ms(95), ms(99), ms(99.9)
		r.MaxMs = float64(e.hist.Max()) / 1000
	}
	if len(e.ticks) == 0 {
		r.PoolMin = e.cfg.Servers
		return
	}
	sum := 0
	for _, s := range e.ticks {
		r.PoolMin = min(r.PoolMin, s)
		r.PoolMax = max(r.PoolMax, s)
		sum += s
	}
	r.PoolMean = float64(sum) / float64(len(e.ticks))
	per := (len(e.ticks) + 119) / 120
	for i := 0; i < len(e.ticks); i += per {
		m := 0
		for _, s := range e.ticks[i:min(i+per, len(e.ticks))] {
			m = max(m, s)
		}
		r.Timeline = append(r.Timeline, m)
	}
	r.TimelineStep = float64(per) * e.cfg.Tick.Seconds()
}
