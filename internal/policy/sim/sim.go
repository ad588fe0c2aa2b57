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
	"strings"
	"time"

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
	}
	return c.validateModel()
}

// validateModel reports a tick, service time or cloud the simulator cannot
// model; single- and many-function runs share these checks.
func (c Config) validateModel() error {
	switch {
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

// Run simulates cfg under p: one function fed by cfg.Trace, with its pool
// between cfg.Servers and cfg.Max.
func Run(cfg Config, p Policy) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	start := time.Now()
	c := newCore(cfg)
	c.readyCloses = true
	if err := c.addFn("fn", p, cfg.Max, 0, newArrivals(cfg.Trace, c.rngTrace, cfg.Duration)); err != nil {
		return Result{}, err
	}
	o := &one{c: c, res: Result{Policy: p.String(), PoolMin: math.MaxInt}}
	c.ticked = o.ticked
	c.open(0, cfg.Tick.Nanoseconds())
	if err := c.run(); err != nil {
		return Result{}, err
	}
	o.finish()
	o.res.WallSec = time.Since(start).Seconds()
	return o.res, nil
}

// one is what a single-function run keeps beside the core: the pool's size
// at every tick and whether it kept up with the load.
type one struct {
	c      *core
	ticks  []int
	lagRun int
	res    Result
}

// ticked records the pool's size after a tick, and whether it had the
// members the load needed.
func (o *one) ticked(i int32) {
	c, f := o.c, &o.c.fns[i]
	size := len(f.members) + f.starting
	o.ticks = append(o.ticks, size)

	// Did the pool keep up with the load?
	rate, known := c.cfg.Trace.RateAt(float64(c.now) / 1e9)
	if !known {
		rate = float64(f.arrTick) / c.cfg.Tick.Seconds()
	}
	need := int(math.Ceil(rate*c.cfg.Service.Seconds()/float64(c.cfg.Concurrency) - 1e-9))
	need = min(max(need, c.cfg.Servers), c.cfg.Max)
	if size < need {
		o.res.UnderTicks++
		o.lagRun++
		o.res.MaxLagTicks = max(o.res.MaxLagTicks, o.lagRun)
	} else {
		o.lagRun = 0
	}
}

func (o *one) finish() {
	c, r, t := o.c, &o.res, &o.c.t
	r.Calls, r.Local, r.Cloud, r.Reasons = t.calls, t.local, t.cloud, t.reasons
	r.CloudColdStarts, r.CloudCostUSD, r.WorkerSeconds = t.cloudColdStarts, t.cloudCostUSD, t.workerSeconds
	r.ScaleUps, r.ScaleDowns, r.WorkersAdded, r.WorkersRemove = t.scaleUps, t.scaleDowns, t.added, t.removed
	r.Events = t.events
	if r.Calls > 0 {
		r.Offloaded = float64(r.Cloud) / float64(r.Calls)
		r.MeanMs = c.hist.Mean() / 1000
		r.P50Ms, r.P95Ms, r.P99Ms, r.P999Ms = ms(c.hist, 50), ms(c.hist, 95), ms(c.hist, 99), ms(c.hist, 99.9)
		r.MaxMs = float64(c.hist.Max()) / 1000
	}
	if len(o.ticks) == 0 {
		r.PoolMin = c.cfg.Servers
		return
	}
	sum := 0
	for _, s := range o.ticks {
		r.PoolMin = min(r.PoolMin, s)
		r.PoolMax = max(r.PoolMax, s)
		sum += s
	}
	r.PoolMean = float64(sum) / float64(len(o.ticks))
	per := (len(o.ticks) + 119) / 120
	for i := 0; i < len(o.ticks); i += per {
		m := 0
		for _, s := range o.ticks[i:min(i+per, len(o.ticks))] {
			m = max(m, s)
		}
		r.Timeline = append(r.Timeline, m)
	}
	r.TimelineStep = float64(per) * c.cfg.Tick.Seconds()
}
