package control

import (
	"maps"
	"slices"
	"time"

	"github.com/spillway-faas/spillway"
)

// BoardConfig is lb's configuration that the lb-wide status repeats.
type BoardConfig struct {
	DefaultFunction string // FAAS_FUNCTION_NAME: whose details the status carries
	ListenAddr      string // this replica's address, for replicas[]
	PoolMin         int    // NUMBER_OF_SERVERS
	PoolMax         int    // MAX_SERVERS
	Concurrency     int    // WORKER_CONCURRENCY
	Scheduler       string
	OffloadPolicy   string
	Autoscaler      string
	CloudMode       string
}

// BoardDeps are what the lb-wide status reads.
type BoardDeps struct {
	// Reports are the served functions' reports, by name, read at each
	// status.
	Reports func() map[string]*Report
	// Ready reports whether lb takes calls.
	Ready func() bool
	// Replicas is nil for a lone lb, always the controller.
	Replicas Replicas
	// Share is how MAX_TOTAL_WORKERS is shared (share.Ledger.Status); nil,
	// or a nil result, when no cap is set.
	Share func() *spillway.ShareStatus
	Clock Clock
}

// Board is lb's status over every function it serves: the sums, the
// default function's details, and one section per function.
type Board struct {
	cfg     BoardConfig
	d       BoardDeps
	clock   Clock
	started time.Time
}

// NewBoard starts the uptime clock.
func NewBoard(cfg BoardConfig, d BoardDeps) *Board {
	b := &Board{cfg: cfg, d: d, clock: clockOr(d.Clock)}
	b.started = b.clock.Now()
	return b
}

// Status is lb's state now: what status(), GET /status and /ui show.
func (b *Board) Status() spillway.Status {
	reports := b.d.Reports()
	s := spillway.Status{
		Ready:         b.d.Ready(),
		UptimeSeconds: b.clock.Now().Sub(b.started).Round(time.Millisecond).Seconds(),
		PoolMin:       b.cfg.PoolMin,
		PoolMax:       b.cfg.PoolMax,
		Concurrency:   b.cfg.Concurrency,
		Scheduler:     b.cfg.Scheduler,
		OffloadPolicy: b.cfg.OffloadPolicy,
		Autoscaler:    b.cfg.Autoscaler,
		CloudMode:     b.cfg.CloudMode,
		Controller:    true,
		Replicas:      []spillway.ReplicaStatus{},
		Functions:     make(map[string]spillway.FunctionSection, len(reports)),
		Counters:      spillway.Counters{Reasons: map[string]int64{}, ErrorsByFault: map[string]int64{}},
	}
	var self spillway.Load
	for _, name := range slices.Sorted(maps.Keys(reports)) {
		r := reports[name]
		sec := r.Section()
		s.Functions[name] = sec
		s.InFlight += sec.InFlight
		s.LocalInFlight += sec.LocalInFlight
		s.CloudInFlight += sec.CloudInFlight
		s.Queued += sec.Queued
		s.PoolSize += sec.PoolSize
		s.PoolReady += sec.PoolReady
		s.PoolDesired += sec.PoolDesired
		addCounters(&s.Counters, sec.Counters)
		l := r.d.Calls.Load()
		self.InFlight += l.InFlight
		self.Queued += l.Queued
		if name == b.cfg.DefaultFunction {
			s.Details = r.details(b.clock.Now())
			s.Counters.LastScale = sec.Counters.LastScale
		}
	}
	if b.d.Share != nil {
		s.Share = b.d.Share()
	}
	if c := b.d.Replicas; c != nil {
		s.LBID, s.Controller = c.ID(), c.Controller()
		s.Replicas = append(s.Replicas, spillway.ReplicaStatus{LBID: s.LBID, Addr: b.cfg.ListenAddr, Controller: s.Controller,
			InFlight: self.InFlight, Queued: self.Queued})
		for _, p := range c.Peers() {
			rs := spillway.ReplicaStatus{LBID: p.ID, Addr: p.Addr, Controller: p.Controller}
			for _, l := range p.Functions {
				rs.InFlight += l.InFlight
				rs.Queued += l.Queued
			}
			s.Replicas = append(s.Replicas, rs)
		}
	}
	return s
}

// Functions are the served functions with their effective settings and
// workers, sorted by name: what functions() returns.
func (b *Board) Functions() []spillway.FunctionInfo {
	reports := b.d.Reports()
	out := make([]spillway.FunctionInfo, 0, len(reports))
	for _, name := range slices.Sorted(maps.Keys(reports)) {
		out = append(out, reports[name].Info())
	}
	return out
}

// addCounters adds c's totals to sum (LastScale is not a total).
func addCounters(sum *spillway.Counters, c spillway.Counters) {
	sum.Calls += c.Calls
	sum.Local += c.Local
	sum.Cloud += c.Cloud
	sum.Errors += c.Errors
	sum.ColdStarts += c.ColdStarts
	sum.Busy += c.Busy
	for k, v := range c.Reasons {
		sum.Reasons[k] += v
	}
	for k, v := range c.ErrorsByFault {
		sum.ErrorsByFault[k] += v
	}
}
