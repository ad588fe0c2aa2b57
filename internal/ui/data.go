package ui

import (
	"maps"
	"slices"
	"time"

	"github.com/spillway-faas/spillway"
)

// Data is what GET /ui/data answers and the page draws. Every number in it
// comes from the status (spillway.Status, what status() and /status show,
// taken when the request arrives) except Series and
// Latency, which the sampler derives once a second.
type Data struct {
	// State is "starting" (no function or pool yet), "ready", or
	// "not-ready" (lb is shutting down).
	State     string          `json:"state"`
	Message   string          `json:"message,omitempty"`
	Now       time.Time       `json:"now"`
	IntervalS float64         `json:"interval_s"` // how often the page polls
	LB        LB              `json:"lb"`
	Calls     Calls           `json:"calls"`
	Reasons   []Count         `json:"reasons"`
	Series    []Point         `json:"series"`
	WindowS   float64         `json:"series_window_s"`
	Latency   []RouteLatency  `json:"latency"`
	Functions []FunctionState `json:"functions"`
	// Share is MAX_TOTAL_WORKERS and the workers held against it; nil when
	// no cap is set.
	Share  *Share     `json:"share,omitempty"`
	Cloud  CloudState `json:"cloud"`
	Events []Event    `json:"events"`
}

// LB is the replica this page is served by.
type LB struct {
	ID string `json:"id,omitempty"`
	// Controller says whether this replica scales, rolls and deploys;
	// ControllerID names the replica that does, when lb knows it.
	Controller    bool      `json:"controller"`
	ControllerID  string    `json:"controller_id,omitempty"`
	Replicas      []Replica `json:"replicas"`
	UptimeS       float64   `json:"uptime_s"`
	Scheduler     string    `json:"scheduler"`
	OffloadPolicy string    `json:"offload_policy"`
	Autoscaler    string    `json:"autoscaler"`
}

// Replica is one live lb of the pool.
type Replica struct {
	ID         string `json:"id"`
	Controller bool   `json:"controller"`
	InFlight   int    `json:"in_flight"`
	Queued     int    `json:"queued"`
}

// Calls are status()'s totals and in-flight counts.
type Calls struct {
	Total         int64 `json:"total"`
	Local         int64 `json:"local"`
	Cloud         int64 `json:"cloud"`
	Errors        int64 `json:"errors"`
	ColdStarts    int64 `json:"cold_starts"`
	InFlight      int64 `json:"in_flight"`
	LocalInFlight int64 `json:"local_in_flight"`
	CloudInFlight int64 `json:"cloud_in_flight"`
	Queued        int64 `json:"queued"`
}

// Count is one offload reason and how many calls it sent to the cloud.
type Count struct {
	Name  string `json:"name"`
	Count int64  `json:"count"`
}

// Point is one second of the overview chart: calls per second answered by
// each route.
type Point struct {
	T      int64   `json:"t"` // Unix milliseconds, the end of the interval
	Local  float64 `json:"local"`
	Cloud  float64 `json:"cloud"`
	NLocal int64   `json:"n_local"` // calls answered locally in the interval
	NCloud int64   `json:"n_cloud"` // calls answered by the cloud in the interval
}

// RouteLatency is p50/p99 of one route over the last WindowS seconds, from
// lb's latency histogram (spillway_call_duration_seconds), interpolated
// within buckets as Prometheus' histogram_quantile does. P50MS and P99MS are
// nil when no call answered in the window.
type RouteLatency struct {
	Route   string   `json:"route"`
	Calls   int64    `json:"calls"`
	WindowS float64  `json:"window_s"`
	P50MS   *float64 `json:"p50_ms"`
	P99MS   *float64 `json:"p99_ms"`
}

// FunctionState is one function's pool.
type FunctionState struct {
	Name       string   `json:"name"`
	Version    int64    `json:"version"`
	Style      string   `json:"style"`
	SHA256     string   `json:"sha256"`
	Workers    Workers  `json:"workers"`
	Desired    int      `json:"desired"`
	Min        int      `json:"min"`
	Max        int      `json:"max"`
	InFlight   int64    `json:"in_flight"`
	Queued     int64    `json:"queued"`
	ColdStarts int64    `json:"cold_starts"`
	Members    []Member `json:"members"`
	// Spare: a frozen spare worker is ready (WORKER_SPARE).
	Spare bool `json:"spare"`
	// Share is the function's part of MAX_TOTAL_WORKERS; nil without a cap.
	Share *FunctionShare `json:"share,omitempty"`
}

// Share is MAX_TOTAL_WORKERS and what is held against it.
type Share struct {
	MaxTotalWorkers int `json:"max_total_workers"`
	Held            int `json:"held"`
}

// FunctionShare is one function's standing under MAX_TOTAL_WORKERS.
type FunctionShare struct {
	Allotted int     `json:"allotted"`
	Limit    int     `json:"limit"`
	Want     int     `json:"want"`
	IdleS    float64 `json:"idle_s"` // -1: no call yet
}

// Workers counts a pool's members by state.
type Workers struct {
	Ready    int `json:"ready"`
	Starting int `json:"starting"`
	Draining int `json:"draining"`
	Failed   int `json:"failed"`
	Total    int `json:"total"`
}

// Member is one worker.
type Member struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Version    int64  `json:"version"`
	InFlight   int    `json:"in_flight"`
	Capacity   int    `json:"capacity"`
	Completed  int64  `json:"completed"`
	ColdStarts int64  `json:"cold_starts"`
}

// CloudState is the offload target as lb sees it. Warm environments are nil
// when lb does not report them, Budget when no cap is set.
type CloudState struct {
	Mode       string  `json:"mode"` // off, local, aws
	Ready      bool    `json:"ready"`
	Breaker    string  `json:"breaker,omitempty"`
	Calls      int64   `json:"calls"`
	Failed     int64   `json:"failed"`
	Throttled  int64   `json:"throttled"`
	Rejected   int64   `json:"rejected"`
	ColdStarts int64   `json:"cold_starts"`
	Warm       *int64  `json:"warm_environments"`
	Budget     *Budget `json:"budget"`
}

// Budget is the cloud budget (CLOUD_MAX_RPS, CLOUD_MAX_COST_PER_HOUR) and
// what it allowed: calls and their estimated cost since lb started, and the
// share of its burst spent now (1: calls wait for it).
type Budget struct {
	MaxRPS         float64 `json:"max_rps"`
	MaxCostPerHour float64 `json:"max_cost_per_hour"`
	Calls          int64   `json:"calls"`
	SpentUSD       float64 `json:"spent_usd"`
	Used           float64 `json:"used"`
}

// Reasons lists the offload reasons the page always shows, zero or not.
var Reasons = []string{
	string(spillway.ReasonOverflow), string(spillway.ReasonTimeout), string(spillway.ReasonPolicy),
	string(spillway.ReasonForced), string(spillway.ReasonRetry), "cold",
}

// controllerID names the replica that controls the pool: this one, or the
// live replica that says it does ("" when none does, or lb runs alone).
func controllerID(st spillway.Status) string {
	if st.Controller {
		return st.LBID
	}
	for _, r := range st.Replicas {
		if r.Controller {
			return r.LBID
		}
	}
	return ""
}

// fill sets every field of d that comes from status().
// otherFunctions are the pools of the served functions but skip, by name:
// the status lists members of the default function only.
func otherFunctions(v spillway.Status, skip string) []FunctionState {
	var out []FunctionState
	for _, name := range slices.Sorted(maps.Keys(v.Functions)) {
		if name == skip {
			continue
		}
		sec := v.Functions[name]
		out = append(out, FunctionState{Name: name, Version: sec.Version, Style: sec.Style, SHA256: sec.SHA256,
			Workers: Workers{Ready: sec.PoolReady, Starting: sec.PoolSize - sec.PoolReady, Total: sec.PoolSize},
			Desired: sec.PoolDesired, Min: sec.PoolMin, Max: sec.PoolMax, InFlight: sec.InFlight, Queued: sec.Queued,
			ColdStarts: sec.Counters.ColdStarts, Members: []Member{}, Spare: sec.Spare, Share: shareOf(v, name)})
	}
	return out
}

// shareOf is name's standing in v's share section, nil when there is none.
func shareOf(v spillway.Status, name string) *FunctionShare {
	if v.Share == nil {
		return nil
	}
	for _, f := range v.Share.Functions {
		if f.Name == name {
			return &FunctionShare{Allotted: f.Allotted, Limit: f.Limit, Want: f.Want, IdleS: f.IdleSeconds}
		}
	}
	return nil
}

func (d *Data) fill(v spillway.Status) {
	d.State = "ready"
	switch {
	case !v.Ready && v.Details == nil:
		// The default function is not served yet: lb is starting (UI.Data
		// names the function).
		d.State = "starting"
	case !v.Ready:
		d.State = "not-ready"
		d.Message = "lb is not taking calls (shutting down)"
	}
	d.LB = LB{ID: v.LBID, Controller: v.Controller, ControllerID: controllerID(v), Replicas: []Replica{},
		UptimeS: v.UptimeSeconds, Scheduler: v.Scheduler, OffloadPolicy: v.OffloadPolicy, Autoscaler: v.Autoscaler}
	for _, r := range v.Replicas {
		d.LB.Replicas = append(d.LB.Replicas, Replica{ID: r.LBID, Controller: r.Controller, InFlight: r.InFlight, Queued: r.Queued})
	}
	c := v.Counters
	d.Calls = Calls{Total: c.Calls, Local: c.Local, Cloud: c.Cloud, Errors: c.Errors, ColdStarts: c.ColdStarts,
		InFlight: v.InFlight, LocalInFlight: v.LocalInFlight, CloudInFlight: v.CloudInFlight, Queued: v.Queued}
	d.Reasons = d.Reasons[:0]
	for _, r := range Reasons {
		d.Reasons = append(d.Reasons, Count{Name: r, Count: c.Reasons[r]})
	}
	f := FunctionState{Desired: v.PoolDesired, Min: v.PoolMin, Max: v.PoolMax, Queued: v.Queued, Members: []Member{}}
	d.Cloud = CloudState{Mode: v.CloudMode}
	d.Share = nil
	if v.Share != nil {
		d.Share = &Share{MaxTotalWorkers: v.Share.MaxTotalWorkers, Held: v.Share.Held}
	}
	if v.Details == nil {
		d.Functions = []FunctionState{f}
		if len(v.Functions) > 0 {
			d.Functions = otherFunctions(v, "")
		}
		return
	}
	fn := v.Details.Function
	f.Name, f.Version, f.Style, f.SHA256 = fn.Name, fn.Version, fn.Style, fn.SHA256
	for _, m := range v.Details.Members {
		f.Members = append(f.Members, Member{Name: m.Name, State: m.State, Version: m.Version, InFlight: m.InFlight,
			Capacity: m.Capacity, Completed: m.Completed, ColdStarts: m.ColdStarts})
		switch m.State {
		case "ready":
			f.Workers.Ready++
		case "starting":
			f.Workers.Starting++
		case "draining":
			f.Workers.Draining++
		case "failed":
			f.Workers.Failed++
		}
		f.Workers.Total++
		f.InFlight += int64(m.InFlight)
		f.ColdStarts += m.ColdStarts
	}
	if sec, ok := v.Functions[fn.Name]; ok {
		f.Desired, f.Min, f.Max, f.Queued, f.Spare = sec.PoolDesired, sec.PoolMin, sec.PoolMax, sec.Queued, sec.Spare
	}
	f.Share = shareOf(v, fn.Name)
	d.Functions = append([]FunctionState{f}, otherFunctions(v, fn.Name)...)
	if cl := v.Details.Cloud; cl != nil {
		d.Cloud.Ready, d.Cloud.Breaker = cl.Ready, cl.Breaker
		d.Cloud.Calls, d.Cloud.Failed, d.Cloud.Throttled, d.Cloud.Rejected = cl.Calls, cl.Failed, cl.Throttled, cl.Rejected
		d.Cloud.ColdStarts = cl.ColdStarts
		if b := cl.Budget; b != nil {
			d.Cloud.Budget = &Budget{MaxRPS: b.MaxRPS, MaxCostPerHour: b.MaxCostPerHour, Calls: b.Calls, SpentUSD: b.SpentUSD, Used: b.Used}
		}
	}
}
