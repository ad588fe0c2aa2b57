package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spillway-faas/spillway"
)

// metrics are the request path's Prometheus instruments, on lb's registry
// (Deps.Metrics) or, when none is given, on one of their own so that tests
// can build many gateways in one process.
type metrics struct {
	registry      *prometheus.Registry
	calls         *prometheus.CounterVec   // route, reason, outcome
	latency       *prometheus.HistogramVec // route
	coldStart     *prometheus.CounterVec   // route
	inFlight      prometheus.Gauge
	queued        prometheus.Gauge
	queueFull     prometheus.Counter
	reruns        *prometheus.CounterVec // function, reason
	budgetRefused *prometheus.CounterVec // reason
	busy          prometheus.Counter

	// The children of the labels nearly every call has, resolved once so
	// that a call hashes no labels.
	okLocal            prometheus.Counter  // calls{local, "", ok}
	latLocal, latCloud prometheus.Observer // latency{local}, latency{cloud}
}

// latencyBuckets span a no-op call (sub-millisecond) to a Lambda timeout.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		registry: reg,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_calls_total",
			Help: "Calls answered, by route (local, cloud), offload reason and outcome (ok, function_error, timeout, error).",
		}, []string{"route", "reason", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spillway_call_duration_seconds",
			Help:    "Time from accepting a call to its answer, by the route that answered it.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		coldStart: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_cold_starts_total",
			Help: "Calls that met a cold start, by route.",
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_in_flight_calls",
			Help: "Calls accepted and not yet answered.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_queued_calls",
			Help: "Calls waiting for a free local worker slot.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_worker_busy_total",
			Help: "Worker answers of busy (its slots held by another lb replica); each call was placed again, never failed.",
		}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_queue_full_total",
			Help: "Calls refused because MAX_QUEUED calls already waited for a local worker.",
		}),
		reruns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_reruns_total",
			Help: "Calls run again after a run that provably did not complete, by function and reason (worker_failed, timeout, cloud_refused, cloud_throttled, cloud_not_sent; cloud_server_error and cloud_lost only for --idempotent functions).",
		}, []string{"function", "reason"}),
		budgetRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_cloud_budget_refused_total",
			Help: "Requests to the cloud refused because CLOUD_MAX_RPS or CLOUD_MAX_COST_PER_HOUR was spent, by why the call needed the cloud.",
		}, []string{"reason"}),
	}
	m.registry.MustRegister(m.calls, m.latency, m.coldStart, m.inFlight, m.queued, m.busy, m.queueFull, m.reruns, m.budgetRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.okLocal = m.calls.WithLabelValues(string(spillway.RouteLocal), "", "ok")
	m.latLocal = m.latency.WithLabelValues(string(spillway.RouteLocal))
	m.latCloud = m.latency.WithLabelValues(string(spillway.RouteCloud))
	return m
}
