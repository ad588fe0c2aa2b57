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
	}
	return c.validateModel()
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
	c := newCore(cfg.Config)
	c.maxCalls, c.cap = cfg.Calls, max(total, cfg.Functions*cfg.Servers)
	c.cold = coldRule{on: cfg.zero(), coldWait: cfg.ColdWait, coldDecide: cfg.ColdDecide, keepWarmEvery: cfg.KeepWarmEvery}
	if sh.Static == "" {
		c.ledger = share.NewRule(total, sh.Rule, c.at)
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
	p := Policy{Offload: cfg.Offload, Autoscaler: cfg.Autoscaler, Scheduler: cfg.Scheduler}
	c.fns = make([]fn, 0, cfg.Functions)
	for i := range cfg.Functions {
		name := fmt.Sprintf("fn%03d", i)
		b := &bursts{rng: c.rngTrace, base: cfg.Rate * weights[i] / sum, factor: cfg.BurstFactor, on: cfg.BurstOn.Seconds()}
		b.per = cfg.BurstEvery.Seconds() * (0.5 + rngFn.Float64())
		b.phase = b.per * rngFn.Float64()
		hi := cfg.Max
		if limits != nil {
			hi = limits[i]
		}
		if err := c.addFn(name, p, hi, cfg.ScaleToZeroAfter, b); err != nil {
			return ManyResult{}, err
		}
		if c.ledger != nil {
			c.ledger.Join(name, cfg.Servers, cfg.Max)
		}
		// Each function's loop ticks on its own, at its own phase.
		c.open(int32(i), int64(rngFn.Float64()*float64(cfg.Tick)))
	}
	if err := c.run(); err != nil {
		return ManyResult{}, err
	}
	t := &c.t
	r := ManyResult{
		Sharing: sh.Name, Total: total,
		Calls: t.calls, Local: t.local, Cloud: t.cloud,
		CloudColdStarts: t.cloudColdStarts, WorkerStarts: t.added, CloudCostUSD: t.cloudCostUSD, WorkerSeconds: t.workerSeconds,
		PeakWorkers: t.peak, OverCap: t.overCap, Taken: t.taken,
		ColdCalls: t.coldCalls, ScaledToZero: t.toZero, Pings: t.pings, PingCostUSD: t.pingCostUSD,
		SimSeconds: float64(c.now) / 1e9, Events: t.events,
	}
	if r.Calls > 0 {
		r.Offloaded = float64(r.Cloud) / float64(r.Calls)
		r.MeanMs = c.hist.Mean() / 1000
		r.P50Ms, r.P99Ms, r.P999Ms = ms(c.hist, 50), ms(c.hist, 99), ms(c.hist, 99.9)
	}
	if r.ColdCalls > 0 {
		r.ColdP50Ms, r.ColdP99Ms, r.ColdMaxMs = ms(c.coldHist, 50), ms(c.coldHist, 99), float64(c.coldHist.Max())/1000
	}
	r.WallSec = time.Since(start).Seconds()
	return r, nil
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

// bursts is one function's arrivals in a many-function run: Poisson at
// base calls/s, and at base × factor during bursts of on seconds, one every
// per seconds, at its phase.
type bursts struct {
	rng                          *rand.Rand
	base, factor, on, per, phase float64
}

var _ process = (*bursts)(nil)

// next draws the arrival after t. The rate is constant within each burst
// and each gap between bursts, so the process is Poisson piece by piece:
// draw at the piece's rate, and past the piece's end start again from
// there (no draws are thrown away).
func (b *bursts) next(t float64) (float64, bool) {
	k := math.Floor((t + b.phase) / b.per) // the burst cycle t is in
	for {
		start := k*b.per - b.phase
		var rate, end float64
		switch {
		case t < start+b.on:
			rate, end = b.base*b.factor, start+b.on
		case t < start+b.per:
			rate, end = b.base, start+b.per
		default:
			k++
			continue
		}
		if next := t + b.rng.ExpFloat64()/rate; next < end {
			return next, true
		}
		t = end
	}
}
