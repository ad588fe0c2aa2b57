package gateway

import (
	"bytes"
	"encoding/json"
	"time"
)

// Status is what status() and GET /status report.
type Status struct {
	Ready bool `json:"ready"`
	// LBID names this replica; Controller says whether it scales, rolls
	// and deploys; Replicas are the pool's live lbs, this one included.
	LBID          string         `json:"lb_id"`
	Controller    bool           `json:"controller"`
	Replicas      []Replica      `json:"replicas"`
	UptimeSeconds float64        `json:"uptime_s"`
	InFlight      int64          `json:"in_flight"`
	LocalInFlight int64          `json:"local_in_flight"`
	CloudInFlight int64          `json:"cloud_in_flight"`
	Queued        int64          `json:"queued"`
	PoolSize      int            `json:"pool_size"`
	PoolReady     int            `json:"pool_ready"`
	PoolDesired   int            `json:"pool_desired"`
	PoolMin       int            `json:"pool_min"`
	PoolMax       int            `json:"pool_max"`
	Concurrency   int            `json:"worker_concurrency"`
	Scheduler     string         `json:"scheduler"`
	OffloadPolicy string         `json:"offload_policy"`
	Autoscaler    string         `json:"autoscaler"`
	CloudMode     string         `json:"cloud"`
	Counters      counters       `json:"counters"`
	Details       map[string]any `json:"details,omitempty"`
}

// Replica is one live lb of the pool in Status.
type Replica struct {
	LBID       string `json:"lb_id"`
	Addr       string `json:"addr"`
	Controller bool   `json:"controller"`
	InFlight   int    `json:"in_flight"`
	Queued     int    `json:"queued"`
}

// Status snapshots the gateway, the pool and the cloud.
func (g *Gateway) Status() Status {
	pc := g.d.Pool.Counts()
	s := Status{
		Ready:         g.Ready(),
		UptimeSeconds: g.now().Sub(g.started).Round(time.Millisecond).Seconds(),
		InFlight:      g.inFlight.Load(),
		LocalInFlight: g.localInFlight.Load(),
		CloudInFlight: g.cloudInFlight.Load(),
		Queued:        g.queued.Load(),
		PoolSize:      pc.Members,
		PoolReady:     pc.Ready,
		PoolDesired:   pc.Desired,
		PoolMin:       g.cfg.NumberOfServers,
		PoolMax:       g.cfg.MaxServers,
		Concurrency:   g.cfg.WorkerConcurrency,
		Scheduler:     g.cfg.Scheduler,
		OffloadPolicy: g.cfg.OffloadPolicy,
		Autoscaler:    g.cfg.Autoscaler,
		CloudMode:     g.cfg.Cloud.Mode,
	}
	s.Controller = true
	s.Replicas = []Replica{}
	if c := g.d.Cluster; c != nil {
		s.LBID, s.Controller = c.ID(), c.Controller()
		self := g.Load()[g.cfg.FunctionName]
		s.Replicas = append(s.Replicas, Replica{LBID: s.LBID, Addr: g.cfg.ListenAddr(), Controller: s.Controller,
			InFlight: self.InFlight, Queued: self.Queued})
		for _, p := range c.Peers() {
			l := p.Functions[g.cfg.FunctionName]
			s.Replicas = append(s.Replicas, Replica{LBID: p.ID, Addr: p.Addr, Controller: p.Controller,
				InFlight: l.InFlight, Queued: l.Queued})
		}
	}
	g.countsMu.Lock()
	s.Counters = g.counts
	s.Counters.Reasons = copyMap(g.counts.Reasons)
	s.Counters.ErrorsByFault = copyMap(g.counts.ErrorsByFault)
	g.countsMu.Unlock()
	if g.d.Details != nil {
		s.Details = g.d.Details()
	}
	return s
}

func copyMap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// rpc renders the status as an XML-RPC struct: the JSON field names, with
// JSON numbers as ints or doubles.
func (s Status) rpc() map[string]any {
	b, err := json.Marshal(s)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return map[string]any{"error": err.Error()}
	}
	return out
}

func (g *Gateway) registerGauges() {
	m := g.metrics
	m.gaugeFunc("spillway_pool_workers", "Pool members, starting ones included.",
		func() float64 { return float64(g.d.Pool.Counts().Members) })
	m.gaugeFunc("spillway_pool_ready_workers", "Pool members ready to take calls.",
		func() float64 { return float64(g.d.Pool.Counts().Ready) })
	m.gaugeFunc("spillway_pool_desired_workers", "Pool size the autoscaler asked for.",
		func() float64 { return float64(g.d.Pool.Counts().Desired) })
}
