// Package loadgen drives load at a Spillway lb and reports latency: a closed
// model (C callers, each waiting for its answer) or an open model (calls sent
// on a fixed schedule, latency measured from the scheduled send time so a
// stalled target cannot hide its delay). Figures come from HDR histograms,
// one set per caller, merged at the end.
//
// The math (recording, merging, percentiles, the report) is pure and lives
// in this file; run.go drives calls and plot.go draws the chart.
package loadgen

import (
	"context"
	"errors"
	"math"
	"sort"
	"strconv"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// Histogram range: 1 µs to 1 hour with 3 significant figures.
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
	histSigFigs = 3
)

// dist is a histogram plus the exact extremes (HDR reports bucket edges).
type dist struct {
	h        *hdr.Histogram
	min, max int64 // µs; valid when h has values
}

func newDist() *dist { return &dist{h: hdr.New(histLowest, histHighest, histSigFigs)} }

func (d *dist) record(us int64) {
	if d.h.TotalCount() == 0 || us < d.min {
		d.min = us
	}
	if d.h.TotalCount() == 0 || us > d.max {
		d.max = us
	}
	_ = d.h.RecordValue(us) // callers clamp us into range: cannot fail
}

func (d *dist) merge(o *dist) {
	if o.h.TotalCount() == 0 {
		return
	}
	if d.h.TotalCount() == 0 || o.min < d.min {
		d.min = o.min
	}
	if d.h.TotalCount() == 0 || o.max > d.max {
		d.max = o.max
	}
	d.h.Merge(o.h)
}

// Sample is one finished call.
type Sample struct {
	// Scheduled is when the call was due: the planned send time in the open
	// model, the start in the closed model. Latency counts from here.
	Scheduled time.Time
	End       time.Time
	Route     string // "local" or "cloud" on success
	Reason    string
	Worker    string
	ColdStart bool
	Err       error
}

// Latency is the time from the scheduled send to the answer.
func (s Sample) Latency() time.Duration { return s.End.Sub(s.Scheduled) }

// Point is one call on the timeline chart.
type Point struct {
	T         float64 // seconds since the measured run began
	LatencyMs float64
	Route     string // "local", "cloud", "" (unknown) or "error"
}

// PoolSample is the pool size seen at T seconds since the run began.
type PoolSample struct {
	T    float64
	Size int
}

// maxPoints bounds the timeline a Recorder keeps; past it every other point
// is dropped and only every second one after is kept (and so on).
const maxPoints = 1 << 16

// Recorder accumulates samples of one caller. It is not safe for concurrent
// use: give each caller its own and Merge them.
type Recorder struct {
	origin  time.Time // timeline zero
	all     *dist
	routes  map[string]*dist
	ok      int64
	errs    int64
	byCode  map[string]int64
	cold    int64
	reasons map[string]int64
	workers map[string]int64
	first   time.Time // earliest Scheduled
	last    time.Time // latest End
	points  []Point
	stride  int // keep every stride-th point
	seen    int // points offered
}

// NewRecorder returns an empty recorder whose timeline starts at origin.
func NewRecorder(origin time.Time) *Recorder {
	return &Recorder{
		origin:  origin,
		all:     newDist(),
		routes:  map[string]*dist{},
		byCode:  map[string]int64{},
		reasons: map[string]int64{},
		workers: map[string]int64{},
		stride:  1,
	}
}

func micros(d time.Duration) int64 {
	us := d.Microseconds()
	if us < histLowest {
		return histLowest
	}
	if us > histHighest {
		return histHighest
	}
	return us
}

// Add records one measured call.
func (r *Recorder) Add(s Sample) {
	lat := micros(s.Latency())
	r.all.record(lat)
	if r.first.IsZero() || s.Scheduled.Before(r.first) {
		r.first = s.Scheduled
	}
	if s.End.After(r.last) {
		r.last = s.End
	}
	route := s.Route
	if s.Err != nil {
		r.errs++
		r.byCode[ErrorKey(s.Err)]++
		route = "error"
	} else {
		r.ok++
		d := r.routes[s.Route]
		if d == nil {
			d = newDist()
			r.routes[s.Route] = d
		}
		d.record(lat)
		if s.ColdStart {
			r.cold++
		}
		if s.Reason != "" {
			r.reasons[s.Reason]++
		}
		if s.Worker != "" {
			r.workers[s.Worker]++
		}
	}
	r.seen++
	if r.seen%r.stride == 0 {
		r.points = append(r.points, Point{
			T:         s.Scheduled.Sub(r.origin).Seconds(),
			LatencyMs: float64(lat) / 1000,
			Route:     route,
		})
		if len(r.points) >= maxPoints {
			r.points = decimate(r.points)
			r.stride *= 2
		}
	}
}

func decimate(p []Point) []Point {
	out := p[:0]
	for i := 0; i < len(p); i += 2 {
		out = append(out, p[i])
	}
	return out
}

// Merge adds o's samples into r. o's timeline must share r's origin.
func (r *Recorder) Merge(o *Recorder) {
	r.all.merge(o.all)
	for k, d := range o.routes {
		if r.routes[k] == nil {
			r.routes[k] = newDist()
		}
		r.routes[k].merge(d)
	}
	r.ok += o.ok
	r.errs += o.errs
	r.cold += o.cold
	addCounts(r.byCode, o.byCode)
	addCounts(r.reasons, o.reasons)
	addCounts(r.workers, o.workers)
	if !o.first.IsZero() && (r.first.IsZero() || o.first.Before(r.first)) {
		r.first = o.first
	}
	if o.last.After(r.last) {
		r.last = o.last
	}
	r.points = append(r.points, o.points...)
	for len(r.points) > maxPoints {
		r.points = decimate(r.points)
	}
}

func addCounts(dst, src map[string]int64) {
	for k, v := range src {
		dst[k] += v
	}
}

// Points returns the timeline sorted by time.
func (r *Recorder) Points() []Point {
	p := append([]Point(nil), r.points...)
	sort.SliceStable(p, func(i, j int) bool { return p[i].T < p[j].T })
	return p
}

// Stats are latency figures in milliseconds.
type Stats struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// statsOf reads the figures of a distribution of microseconds. Percentiles
// are HDR's (3 significant figures), kept within the exact min and max.
func statsOf(d *dist) Stats {
	h := d.h
	if h.TotalCount() == 0 {
		return Stats{}
	}
	maxUS := d.max
	ms := func(us int64) float64 { return float64(max(min(us, maxUS), d.min)) / 1000 }
	return Stats{
		Count: h.TotalCount(),
		Min:   ms(d.min),
		Mean:  math.Round(h.Mean()) / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(maxUS),
	}
}

// PoolRange is the pool size range seen while the run lasted.
type PoolRange struct {
	Min     int `json:"min"`
	Max     int `json:"max"`
	Samples int `json:"samples"`
}

// Report is one run's figures. Latency is from the scheduled send time.
type Report struct {
	Label       string  `json:"label,omitempty"`
	Target      string  `json:"target"`
	Model       string  `json:"model"` // "closed" or "open"
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate_rps,omitempty"`
	Param       any     `json:"param"`
	Options     any     `json:"options,omitempty"`
	// Function is the function called (client --fn); "" is the lb's
	// default function.
	Function string `json:"function,omitempty"`
	// Method is the XML-RPC method called: "invoke", or "call_faas" or
	// "call" (asked for, or because the target had no invoke), whose calls
	// have the route RouteUnknown.
	Method string `json:"method,omitempty"`
	// NoInvoke says the target had no invoke method.
	NoInvoke bool `json:"no_invoke,omitempty"`

	Sent       int64            `json:"sent"` // measured calls: OK + Errors
	OK         int64            `json:"ok"`
	Errors     int64            `json:"errors"`
	ErrorCodes map[string]int64 `json:"errors_by_code"`
	Warmup     int64            `json:"warmup_excluded"`
	Unsent     int64            `json:"unsent,omitempty"` // scheduled but never sent (run cancelled)

	DurationS  float64 `json:"duration_s"`     // first scheduled send to last answer
	Throughput float64 `json:"throughput_rps"` // successful calls per second
	CallRate   float64 `json:"calls_rps"`      // answered calls (ok or not) per second

	Latency    Stats            `json:"latency_ms"`          // every measured call
	Routes     map[string]Stats `json:"latency_ms_by_route"` // successful calls by route
	ColdStarts int64            `json:"cold_starts"`
	Reasons    map[string]int64 `json:"offload_reasons"`
	Workers    map[string]int64 `json:"calls_by_worker,omitempty"`
	Pool       *PoolRange       `json:"pool_size,omitempty"`
}

// Report builds the report of what r holds; the caller fills in the run's
// description (target, model, ...).
func (r *Recorder) Report() Report {
	rep := Report{
		Sent:       r.ok + r.errs,
		OK:         r.ok,
		Errors:     r.errs,
		ErrorCodes: copyCounts(r.byCode),
		Latency:    statsOf(r.all),
		Routes:     map[string]Stats{},
		ColdStarts: r.cold,
		Reasons:    copyCounts(r.reasons),
		Workers:    copyCounts(r.workers),
	}
	for k, d := range r.routes {
		rep.Routes[k] = statsOf(d)
	}
	if !r.first.IsZero() && r.last.After(r.first) {
		rep.DurationS = r.last.Sub(r.first).Seconds()
		rep.Throughput = float64(r.ok) / rep.DurationS
		rep.CallRate = float64(rep.Sent) / rep.DurationS
	}
	return rep
}

func copyCounts(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// PoolRangeOf summarises pool samples; nil when there are none.
func PoolRangeOf(samples []PoolSample) *PoolRange {
	if len(samples) == 0 {
		return nil
	}
	pr := &PoolRange{Min: samples[0].Size, Max: samples[0].Size, Samples: len(samples)}
	for _, s := range samples[1:] {
		pr.Min = min(pr.Min, s.Size)
		pr.Max = max(pr.Max, s.Size)
	}
	return pr
}

// ErrorKey names an error for the errors-by-code count: the fault code for
// a fault ("-32000"), "deadline" when the call's own deadline passed,
// "canceled" when the run was stopped, "transport" otherwise.
func ErrorKey(err error) string {
	var f *xmlrpc.Fault
	switch {
	case errors.As(err, &f):
		return strconv.Itoa(f.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "transport"
}

var faultNames = map[int]string{
	spillway.FaultParse:            "parse error",
	spillway.FaultInvalidRequest:   "invalid request",
	spillway.FaultMethodNotFound:   "method not found",
	spillway.FaultInvalidParams:    "invalid params",
	spillway.FaultInternal:         "internal error",
	spillway.FaultApplication:      "function raised",
	spillway.FaultTimeout:          "timeout",
	spillway.FaultCloudUnavailable: "cloud unavailable",
	spillway.FaultPayloadTooLarge:  "payload too large",
	spillway.FaultBudgetExhausted:  "cloud budget exhausted",
	spillway.FaultUnauthorized:     "unauthorized",
	spillway.FaultFunctionNotFound: "function not found",
	spillway.FaultRunnerCrashed:    "runner crashed",
	spillway.FaultWorkerFailed:     "worker failed",
	spillway.FaultUnavailable:      "unavailable",
	spillway.FaultWorkerBusy:       "worker busy",
	spillway.FaultNoSuchFunction:   "no such function",
}

// ErrorKeyName describes an ErrorKey for people: "-32000 timeout".
func ErrorKeyName(key string) string {
	code, err := strconv.Atoi(key)
	if err != nil {
		switch key {
		case "deadline":
			return "client deadline passed"
		case "canceled":
			return "run stopped"
		}
		return "transport error"
	}
	if n, ok := faultNames[code]; ok {
		return key + " " + n
	}
	return key + " fault"
}

// Schedule returns the open model's planned send time of call i (from 0)
// at rate calls per second starting at start.
func Schedule(start time.Time, rate float64, i int64) time.Time {
	return start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
}
