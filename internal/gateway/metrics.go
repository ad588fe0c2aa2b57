package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spillway-faas/spillway"
)

// metrics are one function's request-path instruments, on lb's registry
// (Deps.Metrics) or, when none is given, on one of their own so that tests
// can build many gateways in one process. Every family carries the label
// function=<name> as a constant label: lb registers one set per served
// function in one registry, and unregisters it when the function goes.
type metrics struct {
	registry      *prometheus.Registry
	collectors    []prometheus.Collector   // what unregister removes
	calls         *prometheus.CounterVec   // route, reason, outcome
	latency       *prometheus.HistogramVec // route
	coldStart     *prometheus.CounterVec   // route
	inFlight      prometheus.Gauge
	queued        prometheus.Gauge
	queueFull     prometheus.Counter
	reruns        *prometheus.CounterVec // reason
	budgetRefused *prometheus.CounterVec // reason
	busy          prometheus.Counter

	// The children of the labels nearly every call has, resolved once so
	// that a call hashes no labels.
	okLocal            prometheus.Counter  // calls{local, "", ok}
	latLocal, latCloud prometheus.Observer // latency{local}, latency{cloud}
}

// latencyBuckets span a no-op call (sub-millisecond) to a Lambda timeout.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// RegisterProcessMetrics adds the Go runtime's and the process's families
// to reg: once per lb, beside every function's families.
func RegisterProcessMetrics(reg prometheus.Registerer) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

func newMetrics(reg *prometheus.Registry, function string) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		RegisterProcessMetrics(reg)
	}
	fn := prometheus.Labels{"function": function}
	m := &metrics{
		registry: reg,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "spillway_calls_total",
			ConstLabels: fn,
			Help:        "Calls answered, by route (local, cloud), offload reason and outcome (ok, function_error, timeout, error).",
		}, []string{"route", "reason", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "spillway_call_duration_seconds",
			ConstLabels: fn,
			Help:        "Time from accepting a call to its answer, by the route that answered it.",
			Buckets:     latencyBuckets,
		}, []string{"route"}),
		coldStart: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "spillway_cold_starts_total",
			ConstLabels: fn,
			Help:        "Calls that met a cold start, by route.",
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "spillway_in_flight_calls",
			ConstLabels: fn,
			Help:        "Calls accepted and not yet answered.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "spillway_queued_calls",
			ConstLabels: fn,
			Help:        "Calls waiting for a free local worker slot.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "spillway_worker_busy_total",
			ConstLabels: fn,
			Help:        "Worker answers of busy (its slots held by another lb replica); each call was placed again, never failed.",
		}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "spillway_queue_full_total",
			ConstLabels: fn,
			Help:        "Calls refused because MAX_QUEUED calls already waited for a local worker.",
		}),
		reruns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "spillway_reruns_total",
			ConstLabels: fn,
			Help:        "Calls run again after a run that provably did not complete, by reason (worker_failed, timeout, cloud_refused, cloud_throttled, cloud_not_sent; cloud_server_error and cloud_lost only for --idempotent functions).",
		}, []string{"reason"}),
		budgetRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "spillway_cloud_budget_refused_total",
			ConstLabels: fn,
			Help:        "Requests to the cloud refused because CLOUD_MAX_RPS or CLOUD_MAX_COST_PER_HOUR was spent, by why the call needed the cloud.",
		}, []string{"reason"}),
	}
	m.collectors = []prometheus.Collector{m.calls, m.latency, m.coldStart, m.inFlight, m.queued, m.busy, m.queueFull, m.reruns, m.budgetRefused}
	m.registry.MustRegister(m.collectors...)
	m.okLocal = m.calls.WithLabelValues(string(spillway.RouteLocal), "", "ok")
	m.latLocal = m.latency.WithLabelValues(string(spillway.RouteLocal))
	m.latCloud = m.latency.WithLabelValues(string(spillway.RouteCloud))
	return m
}

// unregister removes the function's families from the registry: its
// series leave /metrics with it.
func (m *metrics) unregister() {
	for _, c := range m.collectors {
		m.registry.Unregister(c)
	}
}
