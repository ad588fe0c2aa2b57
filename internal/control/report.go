package control

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
)

// CallSource is the request path's part of the status
// (internal/gateway.Gateway).
type CallSource interface {
	// Ready reports whether lb takes calls.
	Ready() bool
	Calls() spillway.CallStats
	Load() spillway.Load
}

// ReportedPool is what the status shows of the worker pool
// (internal/pool.Pool).
type ReportedPool interface {
	Snapshot() pool.Snapshot
	Counts() spillway.PoolCounts
	Function() spillway.Function
}

// ReportedCloud is the offload client's state (internal/cloud.Offloader).
type ReportedCloud interface {
	Ready() bool
	State() cloud.BreakerState
	Stats() cloud.Stats
}

// Replicas is what the status shows of the pool's lb replicas
// (internal/cluster.Replica).
type Replicas interface {
	ID() string
	Controller() bool
	// Peers are the other live replicas.
	Peers() []cluster.Report
}

// ReportConfig is the function and the effective settings its section of
// the status repeats.
type ReportConfig struct {
	Function    string        // the function reported on
	PoolMin     int           // its --min, or NUMBER_OF_SERVERS
	PoolMax     int           // its --max, or MAX_SERVERS
	Concurrency int           // its --concurrency, or WORKER_CONCURRENCY
	Timeout     time.Duration // its --timeout, or LOCAL_TIMEOUT
}

// ReportDeps are what the status and the metrics read.
type ReportDeps struct {
	Calls CallSource
	Pool  ReportedPool
	// Cloud is nil when CLOUD=off; CloudCurrent then is not read.
	Cloud        ReportedCloud
	CloudCurrent func() bool
	Budget       *policy.Budget // nil: no caps
	// LastScale is the autoscaler's last change (Elasticity.LastScale);
	// nil for none.
	LastScale func() string
	Clock     Clock
}

// Report assembles one function's part of lb's status (Board sums the
// functions' reports) and its pool's and cloud's metrics, from what each
// part already keeps.
type Report struct {
	setMu sync.Mutex // guards the settings in cfg (SetSettings)
	cfg   ReportConfig
	d     ReportDeps
	clock Clock
}

// NewReport builds a function's report.
func NewReport(cfg ReportConfig, d ReportDeps) *Report {
	return &Report{cfg: cfg, d: d, clock: clockOr(d.Clock)}
}

// SetSettings records the function's new effective settings (it was
// published again with others).
func (r *Report) SetSettings(min, max, concurrency int, timeout time.Duration) {
	r.setMu.Lock()
	r.cfg.PoolMin, r.cfg.PoolMax, r.cfg.Concurrency, r.cfg.Timeout = min, max, concurrency, timeout
	r.setMu.Unlock()
}

// config is cfg as it is now.
func (r *Report) config() ReportConfig {
	r.setMu.Lock()
	defer r.setMu.Unlock()
	return r.cfg
}

// Section is the function's part of status().
func (r *Report) Section() spillway.FunctionSection {
	cfg := r.config()
	calls := r.d.Calls.Calls()
	pc := r.d.Pool.Counts()
	fn := r.d.Pool.Function()
	s := spillway.FunctionSection{
		Name: r.cfg.Function, Version: fn.Version, SHA256: fn.SHA256, Style: string(fn.Style),
		Ready:    r.d.Calls.Ready(),
		PoolSize: pc.Members, PoolReady: pc.Ready, PoolDesired: pc.Desired,
		PoolMin: cfg.PoolMin, PoolMax: cfg.PoolMax, Concurrency: cfg.Concurrency,
		TimeoutSeconds: cfg.Timeout.Seconds(),
		InFlight:       calls.InFlight, LocalInFlight: calls.LocalInFlight, CloudInFlight: calls.CloudInFlight,
		Queued: calls.Queued, Counters: calls.Counters,
	}
	if r.d.LastScale != nil {
		s.Counters.LastScale = r.d.LastScale()
	}
	d := r.details(r.clock.Now())
	s.Cloud, s.Spare = d.Cloud, d.Pool.Spare != ""
	return s
}

// Info is the function's entry in functions().
func (r *Report) Info() spillway.FunctionInfo {
	cfg := r.config()
	pc := r.d.Pool.Counts()
	fn := r.d.Pool.Function()
	return spillway.FunctionInfo{
		Name: r.cfg.Function, Version: fn.Version, Style: string(fn.Style),
		Min: cfg.PoolMin, Max: cfg.PoolMax, Concurrency: cfg.Concurrency,
		TimeoutSeconds: cfg.Timeout.Seconds(), Workers: pc.Members, Ready: pc.Ready,
	}
}

// details are the pool's members and counters, its function and the cloud.
func (r *Report) details(now time.Time) *spillway.StatusDetails {
	snap := r.d.Pool.Snapshot()
	fn := r.d.Pool.Function()
	d := &spillway.StatusDetails{
		Members:  make([]spillway.MemberStatus, 0, len(snap.Members)),
		Function: spillway.FunctionStatus{Name: fn.Name, Version: fn.Version, SHA256: fn.SHA256, Style: string(fn.Style)},
		Pool: spillway.PoolStatus{
			Starting: snap.Starting, Draining: snap.Draining, Waiting: snap.Waiting,
			Started: snap.Counters.Started, Adopted: snap.Counters.Adopted, Failed: snap.Counters.Failed,
			Replacements: snap.Counters.Replacements, Removed: snap.Counters.Removed, StartFailed: snap.Counters.StartFailed,
			Spare: snap.Spare,
		},
	}
	for _, m := range snap.Members {
		d.Members = append(d.Members, spillway.MemberStatus{
			Name: m.Name, Addr: m.Addr, State: string(m.State), InFlight: m.InFlight, Capacity: m.Capacity,
			Version: m.Version, SHA256: m.SHA256, Completed: m.Completed, ColdStarts: m.ColdStarts,
		})
	}
	if r.d.Cloud != nil {
		st := r.d.Cloud.Stats()
		d.Cloud = &spillway.CloudStatus{
			Ready: r.d.Cloud.Ready(), Current: r.d.CloudCurrent == nil || r.d.CloudCurrent(), Breaker: st.Breaker.String(),
			Calls: st.Calls, Succeeded: st.Succeeded, Failed: st.Failed, Retries: st.Retries,
			Throttled: st.Throttled, Rejected: st.Rejected, ColdStarts: st.ColdStarts, Pings: st.Pings,
		}
		if use, ok := r.d.Budget.Use(now); ok {
			d.Cloud.Budget = &spillway.BudgetStatus{MaxRPS: use.MaxRPS, MaxCostPerHour: use.MaxCostPerHour,
				Calls: use.Calls, SpentUSD: use.SpentUSD, Used: use.Used}
		}
	}
	return d
}

// Collectors expose the function's pool and cloud state to /metrics, read
// at scrape time, each with the label function=<name>. The request path's
// own instruments are the gateway's; lb's own are LBCollectors'.
func (r *Report) Collectors() []prometheus.Collector {
	fn := prometheus.Labels{"function": r.cfg.Function}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: fn}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: fn}, f)
	}
	poolCounter := func(name, help string, f func(pool.Counters) uint64) prometheus.Collector {
		return counter(name, help, func() float64 { return float64(f(r.d.Pool.Snapshot().Counters)) })
	}
	cs := []prometheus.Collector{
		gauge("spillway_pool_workers", "Pool members, starting ones included.",
			func() float64 { return float64(r.d.Pool.Counts().Members) }),
		gauge("spillway_pool_ready_workers", "Pool members ready to take calls.",
			func() float64 { return float64(r.d.Pool.Counts().Ready) }),
		gauge("spillway_pool_desired_workers", "Pool size the autoscaler asked for.",
			func() float64 { return float64(r.d.Pool.Counts().Desired) }),
		poolCounter("spillway_worker_replacements_total", "Workers started to replace a failed one.",
			func(c pool.Counters) uint64 { return c.Replacements }),
		poolCounter("spillway_worker_failures_total", "Ready workers taken out of rotation (failed call, health probe, container died).",
			func(c pool.Counters) uint64 { return c.Failed }),
		poolCounter("spillway_worker_starts_total", "Workers that became ready after a start.",
			func(c pool.Counters) uint64 { return c.Started }),
		gauge("spillway_function_version", "Version of the function the pool runs.",
			func() float64 { return float64(r.d.Pool.Function().Version) }),
	}
	if c := r.d.Cloud; c != nil {
		cs = append(cs,
			gauge("spillway_cloud_circuit_state", "Offload circuit breaker: 0 closed, 1 half-open, 2 open.",
				func() float64 { return breakerValue(c.State()) }),
			gauge("spillway_cloud_ready", "1 when the function is deployed and the breaker lets calls through.",
				func() float64 { return bit(c.Ready()) }),
			counter("spillway_cloud_throttled_total", "429 answers from the cloud (each is retried within the call's deadline).",
				func() float64 { return float64(c.Stats().Throttled) }),
			counter("spillway_cloud_pings_total", "Keep-warm pings sent to the function's Lambda (CLOUD_KEEP_WARM).",
				func() float64 { return float64(c.Stats().Pings) }),
		)
	}
	return cs
}

// WorkerStartBuckets are the bounds (seconds) of
// spillway_worker_start_seconds: a thawed spare takes tens of
// milliseconds, a container started from nothing about a second.
var WorkerStartBuckets = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30}

// WorkerStartSeconds is the histogram spillway_worker_start_seconds of
// function: how long each new worker took from the pool's start (a
// container created, or the frozen spare thawed) to its first healthy
// health(). Feed it pool.OnWorkerReady; it exists before the pool opens,
// so the first workers count too.
func WorkerStartSeconds(function string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "spillway_worker_start_seconds",
		Help:        "Time from a worker's start (container created, or the frozen spare thawed) to its first healthy health().",
		ConstLabels: prometheus.Labels{"function": function},
		Buckets:     WorkerStartBuckets,
	})
}

// LBCollectors expose lb's own state: whether this replica controls the
// pool, how many replicas live, and the connections refused from the
// workers' network (refused nil: not exposed).
func LBCollectors(replicas Replicas, refused func() uint64) []prometheus.Collector {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spillway_lb_controller",
			Help: "1 when this lb replica holds the pool's lease (scales, rolls, deploys)."},
			func() float64 { return bit(replicas == nil || replicas.Controller()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spillway_lb_replicas",
			Help: "Live lb replicas of the pool, this one included."},
			func() float64 {
				if replicas == nil {
					return 1
				}
				return float64(1 + len(replicas.Peers()))
			}),
	}
	if refused != nil {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "spillway_lb_refused_connections_total",
			Help: "Connections and requests to lb refused because they came from the workers' network."},
			func() float64 { return float64(refused()) }))
	}
	return cs
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func breakerValue(s cloud.BreakerState) float64 {
	switch s {
	case cloud.BreakerHalfOpen:
		return 1
	case cloud.BreakerOpen:
		return 2
	}
	return 0
}
