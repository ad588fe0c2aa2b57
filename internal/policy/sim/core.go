package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/share"
)

// The event core both simulators run on: each function's state and the
// handlers of its events (arrivals, queueing, dispatch, local completions
// and timeouts, cloud calls, worker starts and stops, elasticity ticks,
// scale to zero), driven by one loop. A simulator says only what differs:
// its functions and where their arrivals come from, how they share workers
// (a fixed size each, or a share.Ledger), and what it reads of the counts.

// process is one function's arrivals: next is the first arrival after now
// (seconds since the start of the run), false when there are no more.
type process interface {
	next(now float64) (float64, bool)
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
	pos      int32 // index in its function's members while ready, else -1
	f        int32
	started  int64
}

type call struct {
	arrive int64
	enq    int64   // when it was queued, then when its cloud call started
	svc    float64 // intrinsic local service time, seconds
	gen    uint32
	f      int32
	queued bool
	cold   bool // it found its function with no ready worker
}

type env struct{ freeAt int64 }

// fn is one function: its settings, policies and pool.
type fn struct {
	name  string
	arr   process
	limit int // its fixed size when there is no ledger

	sched policy.Scheduler
	off   policy.Offloader
	scale policy.Autoscaler
	est   *policy.Estimator

	queue    []int32 // FIFO of call slots; entries whose call left are skipped
	qHead    int
	queued   int // live entries in queue
	members  []policy.Member
	memberW  []int32 // members[k] is workers[memberW[k]]
	free     int     // free slots on ready members
	running  int
	starting int
	cloudIn  int
	envs     []env // idle Lambda environments, most recently freed last
	arrTick  int   // arrivals since its last tick
	lastCall int64 // the last arrival, ns, if called
	called   bool
	lastPing int64 // the last keep-warm ping, ns, if pinged
	pinged   bool
}

// coldRule is how a function with min 0 meets a call that finds no ready
// worker (ManyConfig's fields of the same names); off in single-function
// runs.
type coldRule struct {
	on            bool
	coldWait      bool
	coldDecide    bool
	keepWarmEvery time.Duration
}

// tally is what the core counts for the simulators' results.
type tally struct {
	events, calls, local, cloud int64
	reasons                     map[string]int64 // cloud calls by reason
	cloudColdStarts             int64
	cloudCostUSD                float64
	workerSeconds               float64

	scaleUps, scaleDowns int // scalings that grew, shrank a pool
	added, removed       int // workers started, removed by scalings
	peak                 int // the most members (starting included) at once
	overCap              int64
	taken                int // workers the ledger took below what an autoscaler would keep

	coldCalls, toZero, pings int64
	pingCostUSD              float64
}

// core is one run's state. It is single-goroutine; the policies it drives
// are the real, concurrency-safe ones.
type core struct {
	cfg      Config
	base     time.Time
	maxCalls int64         // arrivals stop after this many (0: when the processes end)
	cap      int           // members above this are counted in overCap (0: none)
	ledger   *share.Ledger // nil: each function has its fixed limit
	cold     coldRule
	// readyCloses closes the worker-seconds interval when a worker becomes
	// ready, as the single-function simulator always has: the pool's size
	// does not change, but the float sum rounds otherwise, and its
	// published figures were made so.
	readyCloses bool
	// ticked, if set, is called after each elasticity tick of function i.
	ticked func(i int32)

	rngTrace *rand.Rand // arrivals and per-call service times: equal across policies
	rngSys   *rand.Rand // cold starts and network spread
	mu, sig  float64    // lognormal service parameters

	now      int64
	h        eventHeap
	fns      []fn
	calls    []call
	freeCall []int32
	workers  []worker
	arrived  int64
	done     bool // arrivals are over

	members  int // all pools' members, starting included
	pool     int // members plus draining
	lastPool int64

	err      error // an invariant broke; the run stops
	hist     *hdrhistogram.Histogram
	coldHist *hdrhistogram.Histogram // the cold calls' latencies
	t        tally
}

func newCore(cfg Config) *core {
	c := &core{cfg: cfg, base: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.rngTrace = rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	c.rngSys = rand.New(rand.NewPCG(cfg.Seed, 0xc10d))
	if cfg.ServiceCV > 0 {
		c.sig = math.Sqrt(math.Log(1 + cfg.ServiceCV*cfg.ServiceCV))
		c.mu = math.Log(cfg.Service.Seconds()) - c.sig*c.sig/2
	}
	c.hist = hdrhistogram.New(1, 3_600_000_000, 3) // microseconds up to an hour
	c.coldHist = hdrhistogram.New(1, 3_600_000_000, 3)
	c.t.reasons = map[string]int64{}
	return c
}

// addFn adds a function with its own policies p, a pool of cfg.Servers to
// hi workers (zero after zeroAfter idle, for min 0) and arrivals arr. Its
// fixed limit, without a ledger, is hi.
func (c *core) addFn(name string, p Policy, hi int, zeroAfter time.Duration, arr process) error {
	cfg := c.cfg
	f := fn{name: name, arr: arr, limit: hi}
	var err error
	if f.sched, err = policy.NewScheduler(p.Scheduler); err != nil {
		return err
	}
	if f.off, err = policy.NewOffloader(p.Offload, policy.OffloadConfig{
		QueueTimeout: cfg.QueueTimeout, CloudMaxRPS: cfg.CloudMaxRPS, CloudMaxCostPerHour: cfg.CloudMaxCostPerHour,
		LambdaMemoryMB: cfg.LambdaMemoryMB, PricePerGBSecond: cfg.PricePerGBSecond, PricePerRequest: cfg.PricePerRequest,
		WaitWeight: cfg.WaitWeight, BudgetBurst: cfg.BudgetBurst,
	}); err != nil {
		return err
	}
	if f.scale, err = policy.NewAutoscaler(p.Autoscaler, policy.ScaleConfig{
		N: cfg.Servers, Max: max(1, hi), ZeroAfter: zeroAfter, Concurrency: cfg.Concurrency,
		ScaleDownDelay: cfg.ScaleDownDelay, Tick: cfg.Tick, TargetUtilization: cfg.TargetUtilization,
	}); err != nil {
		return err
	}
	f.est = policy.NewEstimator(policy.EstimatorConfig{CloudKeepAlive: cfg.CloudKeepAlive})
	c.fns = append(c.fns, f)
	return nil
}

// open starts function i: its cfg.Servers workers are ready now, its first
// arrival is drawn and its first tick comes at tickAt (ns).
func (c *core) open(i int32, tickAt int64) {
	for range c.cfg.Servers {
		c.makeReady(c.addWorker(i))
	}
	c.schedule(i)
	c.h.push(event{t: tickAt, kind: evTick, f: i})
}

// run handles events until there are none; the run ends when the last
// call is done and every function's loop has stopped.
func (c *core) run() error {
	for c.h.len() > 0 && c.err == nil {
		ev := c.h.pop()
		c.now = ev.t
		c.t.events++
		switch ev.kind {
		case evArrival:
			c.arrive(ev.f)
		case evLocalDone:
			c.localDone(ev.a, ev.b, false)
		case evLocalTimeout:
			c.localDone(ev.a, ev.b, true)
		case evCloudDone:
			c.cloudDone(ev.a, ev.b != 0)
		case evWorkerReady:
			c.workerReady(ev.a)
		case evTick:
			c.tick(ev.f)
		case evRedecide:
			c.redecide(ev.a, uint32(ev.b))
		}
	}
	if c.err != nil {
		return c.err
	}
	c.poolChange()
	return nil
}

func (c *core) at() time.Time { return c.base.Add(time.Duration(c.now)) }

func (c *core) after(d float64) int64 { return c.now + int64(d*1e9) }

// schedule draws function i's next arrival.
func (c *core) schedule(i int32) {
	t, ok := c.fns[i].arr.next(float64(c.now) / 1e9)
	if !ok {
		c.done = true
		return
	}
	c.h.push(event{t: int64(t * 1e9), kind: evArrival, f: i})
}

func (c *core) serviceTime() float64 {
	if c.sig == 0 {
		return c.cfg.Service.Seconds()
	}
	return math.Exp(c.mu + c.sig*c.rngTrace.NormFloat64())
}

// slots is function f's local ceiling for its offload policy: its fixed
// size, or what the ledger says it may have now.
func (c *core) slots(f *fn) int {
	if c.ledger == nil {
		return f.limit * c.cfg.Concurrency
	}
	return c.ledger.Limit(f.name) * c.cfg.Concurrency
}

// target is the size function f's pool takes when its autoscaler wants
// want and it has have: want itself, or what the ledger grants.
func (c *core) target(f *fn, want, have int) int {
	if c.ledger == nil {
		return want
	}
	return c.ledger.Target(f.name, want, have, f.running)
}

func (c *core) input(f *fn, waited time.Duration, queuedAhead int) policy.OffloadInput {
	now := c.at()
	return policy.OffloadInput{
		Now: now, InFlight: f.running, Queued: queuedAhead, CloudInFlight: f.cloudIn,
		MaxSlots: c.slots(f), ReadySlots: len(f.members) * c.cfg.Concurrency,
		StartingSlots: f.starting * c.cfg.Concurrency, FreeSlots: f.free,
		CloudAvailable: !c.cfg.CloudOff, Waited: waited, Estimates: f.est.Estimates(now),
	}
}

// Calls.

func (c *core) arrive(i int32) {
	if c.maxCalls > 0 && c.arrived >= c.maxCalls {
		return // the run has all its calls; this function's arrivals stop
	}
	c.arrived++
	if c.arrived == c.maxCalls {
		c.done = true
	}
	c.schedule(i)
	f := &c.fns[i]
	f.arrTick++
	f.est.ObserveArrival(c.at())
	if c.ledger != nil {
		c.ledger.Arrived(f.name)
	}
	var id int32
	if n := len(c.freeCall); n > 0 {
		id = c.freeCall[n-1]
		c.freeCall = c.freeCall[:n-1]
	} else {
		c.calls = append(c.calls, call{})
		id = int32(len(c.calls) - 1)
	}
	cl := &c.calls[id]
	cl.arrive, cl.svc, cl.queued, cl.f, cl.cold = c.now, c.serviceTime(), false, i, false
	c.t.calls++
	f.lastCall, f.called = c.now, true
	if c.cold.on && len(f.members) == 0 {
		c.coldCall(i, id)
		return
	}
	d := f.off.Decide(c.input(f, 0, f.queued))
	if d.Route == spillway.RouteCloud {
		c.startCloud(id, d.Reason)
		return
	}
	if f.free > 0 && f.queued == 0 {
		c.dispatch(id)
		return
	}
	c.enqueue(id, d.MaxWait)
	c.drainQueue(i)
}

func (c *core) enqueue(id int32, maxWait time.Duration) {
	cl := &c.calls[id]
	f := &c.fns[cl.f]
	cl.queued, cl.enq = true, c.now
	f.queue = append(f.queue, id)
	f.queued++
	if maxWait > 0 {
		c.h.push(event{t: c.now + maxWait.Nanoseconds(), kind: evRedecide, a: id, b: int32(cl.gen)})
	}
}

func (c *core) redecide(id int32, gen uint32) {
	cl := &c.calls[id]
	if cl.gen != gen || !cl.queued {
		return // already running or finished
	}
	f := &c.fns[cl.f]
	d := f.off.Decide(c.input(f, time.Duration(c.now-cl.enq), f.queued-1))
	if d.Route == spillway.RouteCloud {
		cl.queued = false
		f.queued--
		c.startCloud(id, d.Reason)
		return
	}
	if d.MaxWait > 0 {
		c.h.push(event{t: c.now + d.MaxWait.Nanoseconds(), kind: evRedecide, a: id, b: int32(gen)})
	}
}

func (c *core) drainQueue(i int32) {
	f := &c.fns[i]
	for f.free > 0 && f.queued > 0 {
		id := f.queue[f.qHead]
		f.qHead++
		if !c.calls[id].queued {
			continue
		}
		c.calls[id].queued = false
		f.queued--
		c.dispatch(id)
	}
	if f.qHead > 256 && f.qHead*2 > len(f.queue) { // compact
		n := copy(f.queue, f.queue[f.qHead:])
		f.queue = f.queue[:n]
		f.qHead = 0
	}
}

func (c *core) dispatch(id int32) {
	cl := &c.calls[id]
	f := &c.fns[cl.f]
	k := f.sched.Pick(f.members)
	if k < 0 || k >= len(f.members) || f.members[k].InFlight >= f.members[k].Capacity {
		c.err = fmt.Errorf("%s: scheduler picked %d of %d members with %d free slots counted", f.name, k, len(f.members), f.free)
		return
	}
	w := f.memberW[k]
	f.members[k].InFlight++
	c.workers[w].inFlight++
	f.free--
	f.running++
	if lt := c.cfg.LocalTimeout.Seconds(); lt > 0 && cl.svc > lt {
		c.h.push(event{t: c.after(lt), kind: evLocalTimeout, a: w, b: id})
		return
	}
	c.h.push(event{t: c.after(cl.svc), kind: evLocalDone, a: w, b: id})
}

func (c *core) localDone(w, id int32, timedOut bool) {
	wk := &c.workers[w]
	f := &c.fns[wk.f]
	wk.inFlight--
	f.running--
	switch wk.state {
	case wReady:
		f.members[wk.pos].InFlight--
		f.free++
	case wDraining:
		if wk.inFlight == 0 {
			c.poolChange()
			wk.state = wGone
			c.pool--
		}
	}
	cl := &c.calls[id]
	if timedOut {
		f.est.Observe(spillway.RouteLocal, c.cfg.LocalTimeout, false, c.at())
		c.startCloud(id, spillway.ReasonTimeout)
	} else {
		f.est.Observe(spillway.RouteLocal, time.Duration(cl.svc*1e9), false, c.at())
		c.t.local++
		c.record(id)
	}
	c.drainQueue(wk.f)
}

// record takes a finished call's latency and frees its slot.
func (c *core) record(id int32) {
	cl := &c.calls[id]
	us := max((c.now-cl.arrive)/1000, 1)
	_ = c.hist.RecordValue(us) // clamped by the histogram's range
	if cl.cold {
		_ = c.coldHist.RecordValue(us)
	}
	cl.gen++
	c.freeCall = append(c.freeCall, id)
}

func (c *core) startCloud(id int32, reason spillway.Reason) {
	cl := &c.calls[id]
	f := &c.fns[cl.f]
	f.cloudIn++
	f.est.ObserveCloudStart(f.cloudIn, c.at())
	c.t.reasons[string(reason)]++
	cold := true
	if n := len(f.envs); n > 0 {
		if c.now-f.envs[n-1].freeAt <= c.cfg.CloudKeepAlive.Nanoseconds() {
			cold = false
			f.envs = f.envs[:n-1]
		} else {
			f.envs = f.envs[:0] // the most recent is expired, so are all
		}
	}
	run := cl.svc * c.cfg.CloudSpeed
	var coldFlag int32
	if cold {
		run += c.cfg.CloudColdStart.Seconds()
		c.t.cloudColdStarts++
		coldFlag = 1
	}
	billed := math.Ceil(run*1000) / 1000
	c.t.cloudCostUSD += policy.CallCost(time.Duration(billed*1e9), c.cfg.LambdaMemoryMB, c.cfg.PricePerGBSecond, c.cfg.PricePerRequest)
	net := c.cfg.CloudOverhead.Seconds() * (0.75 + 0.25*c.rngSys.ExpFloat64())
	cl.enq = c.now
	c.h.push(event{t: c.after(run + net), kind: evCloudDone, a: id, b: coldFlag})
}

func (c *core) cloudDone(id int32, cold bool) {
	cl := &c.calls[id]
	f := &c.fns[cl.f]
	f.cloudIn--
	f.envs = append(f.envs, env{freeAt: c.now})
	f.est.Observe(spillway.RouteCloud, time.Duration(c.now-cl.enq), cold, c.at())
	c.t.cloud++
	c.record(id)
}

// Pools.

// poolChange accounts worker-seconds up to now; call it before a change.
func (c *core) poolChange() {
	c.t.workerSeconds += float64(c.pool) * float64(c.now-c.lastPool) / 1e9
	c.lastPool = c.now
}

func (c *core) addWorker(i int32) int32 {
	c.poolChange()
	c.workers = append(c.workers, worker{state: wStarting, pos: -1, f: i, started: c.now})
	c.fns[i].starting++
	c.members++
	c.pool++
	c.t.peak = max(c.t.peak, c.members)
	if c.cap > 0 && c.members > c.cap {
		c.t.overCap++
	}
	return int32(len(c.workers) - 1)
}

func (c *core) workerReady(w int32) {
	wk := &c.workers[w]
	if wk.state != wStarting {
		return // removed while it started
	}
	c.makeReady(w)
	c.fns[wk.f].est.ObserveWorkerStart(time.Duration(c.now-wk.started), c.at())
	c.drainQueue(wk.f)
}

func (c *core) makeReady(w int32) {
	if c.readyCloses {
		c.poolChange()
	}
	wk := &c.workers[w]
	f := &c.fns[wk.f]
	if wk.state == wStarting {
		f.starting--
	}
	wk.state = wReady
	wk.pos = int32(len(f.members))
	f.members = append(f.members, policy.Member{Name: strconv.Itoa(int(w)), Capacity: c.cfg.Concurrency})
	f.memberW = append(f.memberW, w)
	f.free += c.cfg.Concurrency
}

// removeMember takes function f's ready member k out of rotation.
func (c *core) removeMember(f *fn, k int) {
	w := f.memberW[k]
	f.free -= c.cfg.Concurrency - int(c.workers[w].inFlight)
	f.members = append(f.members[:k], f.members[k+1:]...)
	f.memberW = append(f.memberW[:k], f.memberW[k+1:]...)
	for j := k; j < len(f.memberW); j++ {
		c.workers[f.memberW[j]].pos = int32(j)
	}
	c.workers[w].pos = -1
	c.members--
}

// scaleTo moves function i's pool to desired members, as internal/pool does:
// new workers start at once; removed ones are the newest idle members, then
// starting ones, then busy members, which drain.
func (c *core) scaleTo(i int32, desired int) {
	f := &c.fns[i]
	cur := len(f.members) + f.starting
	if desired > cur {
		for range desired - cur {
			w := c.addWorker(i)
			jit := 0.8 + 0.4*c.rngSys.Float64()
			c.h.push(event{t: c.after(c.cfg.WorkerColdStart.Seconds() * jit), kind: evWorkerReady, a: w})
		}
		c.t.scaleUps++
		c.t.added += desired - cur
		return
	}
	if desired >= cur {
		return
	}
	c.poolChange()
	n := cur - desired
	c.t.scaleDowns++
	c.t.removed += n
	for k := len(f.members) - 1; k >= 0 && n > 0; k-- {
		if w := f.memberW[k]; c.workers[w].inFlight == 0 {
			c.removeMember(f, k)
			c.workers[w].state = wGone
			c.pool--
			n--
		}
	}
	for w := len(c.workers) - 1; w >= 0 && n > 0 && f.starting > 0; w-- {
		if wk := &c.workers[w]; wk.f == i && wk.state == wStarting {
			wk.state = wGone
			f.starting--
			c.members--
			c.pool--
			n--
		}
	}
	for k := len(f.members) - 1; k >= 0 && n > 0; k-- {
		w := f.memberW[k]
		c.removeMember(f, k)
		c.workers[w].state = wDraining
		n--
	}
}

// tick is function i's elasticity loop: its autoscaler's wish, bounded by
// the ledger if there is one. A function with min 0 goes to zero when its
// autoscaler says so (SCALE_TO_ZERO_AFTER after its last call); while it
// has no worker it is pinged (keep-warm), as lb does.
func (c *core) tick(i int32) {
	f := &c.fns[i]
	now := c.at()
	est := f.est.Estimates(now)
	have := len(f.members) + f.starting
	snap := policy.ScaleSnapshot{
		Now: now, Members: have, Ready: len(f.members),
		InFlight: f.running, Queued: f.queued, ArrivalRate: est.ArrivalRate,
		ServiceTime: est.LocalService, ColdStart: est.WorkerColdStart,
	}
	if f.called {
		snap.LastCall = c.base.Add(time.Duration(f.lastCall))
	}
	d := f.scale.Decide(snap)
	size := c.target(f, d.Desired, have)
	if keep := min(d.Desired, have); size < keep {
		c.t.taken += keep - size
	}
	if have > 0 && size == 0 {
		c.t.toZero++
	}
	c.scaleTo(i, size)
	if c.cold.on && len(f.members)+f.starting == 0 {
		c.ping(i)
	}
	if c.ticked != nil {
		c.ticked(i)
	}
	f.arrTick = 0
	if !c.done || f.running > 0 || f.queued > 0 || f.cloudIn > 0 {
		c.h.push(event{t: c.now + c.cfg.Tick.Nanoseconds(), kind: evTick, f: i})
	}
}

// Scale to zero.

// coldCall places a call that found function i with no ready worker: a
// worker starts at once if none is starting (within the function's share),
// and the call waits for it (coldWait, or no cloud) or goes to the cloud
// with reason cold; with coldDecide the offload policy places it instead.
func (c *core) coldCall(i, id int32) {
	f := &c.fns[i]
	c.calls[id].cold = true
	c.t.coldCalls++
	if f.starting == 0 {
		c.scaleTo(i, c.target(f, 1, 0))
	}
	var maxWait time.Duration
	switch {
	case c.cold.coldDecide:
		d := f.off.Decide(c.input(f, 0, f.queued))
		if d.Route == spillway.RouteCloud {
			c.startCloud(id, d.Reason)
			return
		}
		maxWait = d.MaxWait
	case !c.cold.coldWait && !c.cfg.CloudOff:
		c.startCloud(id, spillway.ReasonCold)
		return
	}
	c.enqueue(id, maxWait)
}

// ping sends function i's keep-warm ping, as control.KeepWarm does, once
// keepWarmEvery has passed since its last one: it takes the Lambda's most
// recently used environment if one is still warm (a new one otherwise) and
// keeps it warm from now. It is billed as a 1ms call, plus the cold start
// when it made a new environment.
func (c *core) ping(i int32) {
	f := &c.fns[i]
	every := c.cold.keepWarmEvery
	if every <= 0 || c.cfg.CloudOff || f.pinged && c.now-f.lastPing < every.Nanoseconds() {
		return
	}
	f.pinged, f.lastPing = true, c.now
	c.t.pings++
	billed := time.Millisecond
	n := len(f.envs)
	if n > 0 && c.now-f.envs[n-1].freeAt <= c.cfg.CloudKeepAlive.Nanoseconds() {
		f.envs[n-1].freeAt = c.now
	} else {
		billed += c.cfg.CloudColdStart
		c.t.cloudColdStarts++
		f.envs = append(f.envs[:0], env{freeAt: c.now + c.cfg.CloudColdStart.Nanoseconds()})
	}
	usd := policy.CallCost(billed, c.cfg.LambdaMemoryMB, c.cfg.PricePerGBSecond, c.cfg.PricePerRequest)
	c.t.cloudCostUSD += usd
	c.t.pingCostUSD += usd
	f.est.ObserveKeepWarm(c.at()) // as lb's KeepWarm tells its estimator
}

// ms is the histogram's q-th percentile in milliseconds.
func ms(h *hdrhistogram.Histogram, q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1000 }
