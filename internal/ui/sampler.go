package ui

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spillway-faas/spillway"
)

const (
	// SeriesLength is how many one-second points the overview keeps (5 minutes).
	SeriesLength = 300
	// LatencyWindow is the span p50/p99 are computed over.
	LatencyWindow = time.Minute
	// latencyFamily is the histogram lb's gateway keeps per route.
	latencyFamily = "spillway_call_duration_seconds"
)

// Source is what the page reads from a running lb: its status
// (internal/control.Report) and its metrics registry.
type Source interface {
	Status() spillway.Status
	Metrics() prometheus.Gatherer
}

// histogram is one route's cumulative latency histogram at one instant.
type histogram struct {
	count   uint64
	bounds  []float64 // upper bounds in seconds, ascending, +Inf excluded
	buckets []uint64  // cumulative counts per bound
}

// sample is what the sampler keeps from one tick.
type sample struct {
	t          time.Time
	uptime     float64 // lb's uptime at t, in seconds
	local      int64   // counters.local at t
	cloud      int64   // counters.cloud at t
	histograms map[string]histogram
}

// sampler turns status() and the latency histogram, read once a second, into
// the overview series, per-route percentiles and breaker/controller events.
type sampler struct {
	events *Events

	observing sync.Mutex // serializes observe: each sample reads lb after the one before

	mu         sync.Mutex // guards everything below
	points     []Point    // oldest first, at most SeriesLength
	samples    []sample   // oldest first, spanning LatencyWindow
	last       *sample
	trimmed    bool   // samples no longer starts with the first one
	breaker    string // last breaker state seen ("" before the first)
	controller *controllerSeen
}

// observe records one tick at now. A sample not later than the last one is
// dropped, so no call is counted twice.
func (s *sampler) observe(src Source, now time.Time) error {
	s.observing.Lock()
	defer s.observing.Unlock()
	v := src.Status()
	hs, err := histograms(src.Metrics())
	if err != nil {
		return err
	}
	cur := sample{t: now, uptime: v.UptimeSeconds, local: v.Counters.Local, cloud: v.Counters.Cloud, histograms: hs}

	s.mu.Lock()
	defer s.mu.Unlock()
	if prev := s.last; prev != nil {
		if !now.After(prev.t) {
			return nil
		}
		if dt := now.Sub(prev.t).Seconds(); dt > 0 {
			nl, nc := max(0, cur.local-prev.local), max(0, cur.cloud-prev.cloud)
			s.points = append(s.points, Point{
				T: now.UnixMilli(), NLocal: nl, NCloud: nc,
				Local: round(float64(nl) / dt), Cloud: round(float64(nc) / dt),
			})
			if n := len(s.points) - SeriesLength; n > 0 {
				s.points = append(s.points[:0], s.points[n:]...)
			}
		}
	}
	s.last = &cur
	s.samples = append(s.samples, cur)
	// Keep one sample at or before the window's start as the baseline.
	for len(s.samples) > 2 && now.Sub(s.samples[1].t) >= LatencyWindow {
		s.samples = s.samples[1:]
		s.trimmed = true
	}

	if v.Details != nil && v.Details.Cloud != nil {
		cl := v.Details.Cloud
		if s.breaker != "" && cl.Breaker != s.breaker {
			cause := fmt.Sprintf("%s → %s", s.breaker, cl.Breaker)
			switch cl.Breaker {
			case "open":
				cause += fmt.Sprintf(": consecutive failed cloud calls (%d failed in all); offloading stops until a probe succeeds", cl.Failed)
			case "half-open":
				cause += ": cool-down over, the next cloud call is a probe"
			case "closed":
				cause += ": a cloud call succeeded; offloading resumes"
			}
			s.events.Event(spillway.EventBreakerChange, cause)
		}
		s.breaker = cl.Breaker
	}
	seen := controllerSeen{self: v.Controller, id: controllerID(v)}
	if prev := s.controller; prev != nil && *prev != seen {
		s.events.Event(spillway.EventControllerChange, controllerCause(v.LBID, *prev, seen))
	}
	s.controller = &seen
	return nil
}

// controllerSeen is who controlled the pool at one sample.
type controllerSeen struct {
	self bool   // this replica
	id   string // the controller's lb_id, "" when unknown
}

func controllerCause(self string, prev, cur controllerSeen) string {
	name := func(id string) string {
		if id == "" {
			return "no replica"
		}
		return "replica " + id
	}
	switch {
	case cur.self && !prev.self:
		return fmt.Sprintf("this lb (%s) took the controller lease from %s", self, name(prev.id))
	case prev.self && !cur.self:
		return fmt.Sprintf("this lb (%s) lost the controller lease; %s controls the pool now", self, name(cur.id))
	}
	return fmt.Sprintf("%s controls the pool now (was %s)", name(cur.id), name(prev.id))
}

// series returns a copy of the overview points.
func (s *sampler) series() []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Point{}, s.points...)
}

// latency returns p50/p99 per route over the samples held: from the oldest
// sample (at most LatencyWindow old) to the newest, or since lb started when
// the oldest sample is the first one.
func (s *sampler) latency() []RouteLatency {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []RouteLatency{}
	if len(s.samples) == 0 {
		return out
	}
	newest := s.samples[len(s.samples)-1]
	// Until a minute has passed, the window is lb's whole life: the
	// histograms count from lb's start.
	var base sample
	window := newest.uptime
	if s.trimmed {
		base = s.samples[0]
		window = newest.t.Sub(base.t).Seconds()
	}
	for _, route := range []string{string(spillway.RouteLocal), string(spillway.RouteCloud)} {
		h := newest.histograms[route]
		d := h.minus(base.histograms[route])
		rl := RouteLatency{Route: route, Calls: int64(d.count), WindowS: round(window)}
		if d.count > 0 {
			p50, p99 := 1000*d.quantile(0.5), 1000*d.quantile(0.99)
			p50, p99 = round(p50), round(p99)
			rl.P50MS, rl.P99MS = &p50, &p99
		}
		out = append(out, rl)
	}
	return out
}

// histograms reads the per-route latency histograms from g.
func histograms(g prometheus.Gatherer) (map[string]histogram, error) {
	fams, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	out := map[string]histogram{}
	for _, f := range fams {
		if f.GetName() != latencyFamily || f.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range f.GetMetric() {
			var route string
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" {
					route = l.GetValue()
				}
			}
			ph := m.GetHistogram()
			h := histogram{count: ph.GetSampleCount()}
			for _, b := range ph.GetBucket() {
				if math.IsInf(b.GetUpperBound(), +1) {
					continue
				}
				h.bounds = append(h.bounds, b.GetUpperBound())
				h.buckets = append(h.buckets, b.GetCumulativeCount())
			}
			// One series per function: the page shows their sum.
			out[route] = out[route].plus(h)
		}
	}
	return out, nil
}

// plus is h and o together (o empty, or with the same buckets).
func (h histogram) plus(o histogram) histogram {
	if h.count == 0 && len(h.buckets) == 0 {
		return o
	}
	sum := histogram{count: h.count + o.count, bounds: h.bounds, buckets: make([]uint64, len(h.buckets))}
	for i, c := range h.buckets {
		if i < len(o.buckets) {
			c += o.buckets[i]
		}
		sum.buckets[i] = c
	}
	return sum
}

// minus is h's counts since base (same buckets; a missing base is zero).
func (h histogram) minus(base histogram) histogram {
	d := histogram{count: h.count - min(h.count, base.count), bounds: h.bounds, buckets: make([]uint64, len(h.buckets))}
	for i, c := range h.buckets {
		var b uint64
		if i < len(base.buckets) {
			b = base.buckets[i]
		}
		d.buckets[i] = c - min(c, b)
	}
	return d
}

// quantile estimates the q-quantile in seconds by linear interpolation
// within the bucket that holds it; past the last finite bound it answers
// that bound.
func (h histogram) quantile(q float64) float64 {
	if h.count == 0 || len(h.bounds) == 0 {
		return math.NaN()
	}
	rank := q * float64(h.count)
	i := sort.Search(len(h.buckets), func(i int) bool { return float64(h.buckets[i]) >= rank })
	if i == len(h.buckets) {
		return h.bounds[len(h.bounds)-1]
	}
	lower, below := 0.0, uint64(0)
	if i > 0 {
		lower, below = h.bounds[i-1], h.buckets[i-1]
	}
	in := h.buckets[i] - below
	if in == 0 {
		return h.bounds[i]
	}
	return lower + (h.bounds[i]-lower)*(rank-float64(below))/float64(in)
}

// round keeps three decimals, enough for ms and calls/s on a chart.
func round(x float64) float64 { return math.Round(x*1000) / 1000 }
