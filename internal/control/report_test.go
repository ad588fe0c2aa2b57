package control

import (
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
)

// reportWorld is one function's report and the board lb reads the status
// through, as lb wires them, with the replicas and refusals lb has.
type reportWorld struct {
	r       *Report
	board   *Board
	clock   *fakeClock
	rep     *fakeReplica
	refused func() uint64
}

func testReport(t *testing.T, withCloud bool) reportWorld {
	t.Helper()
	clock := newFakeClock()
	p := &fakePool{
		counts: spillway.PoolCounts{Members: 2, Ready: 1, Desired: 3},
		fn:     spillway.Function{Name: "faas", Version: 4, SHA256: "abc", Style: spillway.StyleHandler},
		snap: pool.Snapshot{
			Members: []pool.MemberInfo{
				{Name: "w1", Addr: "10.0.0.2:8001", State: pool.StateReady, InFlight: 1, Capacity: 2, Version: 4, SHA256: "abc", Completed: 9, ColdStarts: 1},
				{Name: "w2", State: pool.StateStarting, Capacity: 2, Version: 4},
			},
			Starting: 1, Waiting: 2, Counters: pool.Counters{Started: 5, Failed: 1, Replacements: 1},
		},
	}
	calls := &fakeCalls{ready: true, load: spillway.Load{InFlight: 1, Queued: 2},
		calls: spillway.CallStats{InFlight: 3, LocalInFlight: 1, CloudInFlight: 2, Queued: 2,
			Counters: spillway.Counters{Calls: 10, Local: 7, Cloud: 3, Reasons: map[string]int64{"overflow": 3}, ErrorsByFault: map[string]int64{}}}}
	rep := &fakeReplica{controller: true, peers: []cluster.Report{
		{ID: "lb-b", Addr: "b:8001", Functions: map[string]spillway.Load{"faas": {InFlight: 4, Queued: 5}}},
	}}
	d := ReportDeps{Calls: calls, Pool: p, LastScale: func() string { return "2->3 (busy)" }, Clock: clock}
	if withCloud {
		budget, err := policy.NewBudget(policy.OffloadConfig{CloudMaxRPS: 5, BudgetBurst: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		d.Cloud = &fakeOffload{ready: true, stats: cloud.Stats{Calls: 3, Succeeded: 3, Pings: 7, Breaker: cloud.BreakerOpen}}
		d.CloudCurrent = func() bool { return false }
		d.Budget = budget
	}
	r := NewReport(ReportConfig{Function: "faas", PoolMin: 1, PoolMax: 4, Concurrency: 2}, d)
	b := NewBoard(BoardConfig{DefaultFunction: "faas", ListenAddr: "a:8000", PoolMin: 1, PoolMax: 4, Concurrency: 2,
		Scheduler: "round-robin", OffloadPolicy: "overflow", Autoscaler: "predictive", CloudMode: "local"},
		BoardDeps{Reports: func() map[string]*Report { return map[string]*Report{"faas": r} }, Ready: calls.Ready, Replicas: rep, Clock: clock,
			Share: func() *spillway.ShareStatus {
				return &spillway.ShareStatus{MaxTotalWorkers: 8, Held: 1, Functions: []spillway.ShareStanding{
					{Name: "faas", Min: 1, Max: 4, Workers: 1, Want: 1, Allotted: 1, Limit: 4, IdleSeconds: -1}}}
			}})
	return reportWorld{r: r, board: b, clock: clock, rep: rep, refused: func() uint64 { return 6 }}
}

func TestReportStatus(t *testing.T) {
	w := testReport(t, true)
	w.clock.Advance(90 * time.Second)
	st := w.board.Status()
	if !st.Ready || st.UptimeSeconds != 90 || st.InFlight != 3 || st.CloudInFlight != 2 || st.PoolSize != 2 ||
		st.PoolReady != 1 || st.PoolDesired != 3 || st.PoolMax != 4 || st.Concurrency != 2 || st.Autoscaler != "predictive" {
		t.Errorf("status %+v", st)
	}
	if st.Counters.Calls != 10 || st.Counters.LastScale != "2->3 (busy)" {
		t.Errorf("counters %+v", st.Counters)
	}
	wantReplicas := []spillway.ReplicaStatus{
		{LBID: "lb-a", Addr: "a:8000", Controller: true, InFlight: 1, Queued: 2},
		{LBID: "lb-b", Addr: "b:8001", InFlight: 4, Queued: 5},
	}
	if st.LBID != "lb-a" || !st.Controller || !slices.Equal(st.Replicas, wantReplicas) {
		t.Errorf("replicas: lb_id %q controller %v %+v, want %+v", st.LBID, st.Controller, st.Replicas, wantReplicas)
	}
	d := st.Details
	if d == nil || len(d.Members) != 2 || d.Members[0] != (spillway.MemberStatus{Name: "w1", Addr: "10.0.0.2:8001", State: "ready",
		InFlight: 1, Capacity: 2, Version: 4, SHA256: "abc", Completed: 9, ColdStarts: 1}) {
		t.Fatalf("details %+v", d)
	}
	if d.Function != (spillway.FunctionStatus{Name: "faas", Version: 4, SHA256: "abc", Style: "handler"}) ||
		d.Pool != (spillway.PoolStatus{Starting: 1, Waiting: 2, Started: 5, Failed: 1, Replacements: 1}) {
		t.Errorf("function %+v, pool %+v", d.Function, d.Pool)
	}
	if c := d.Cloud; c == nil || !c.Ready || c.Current || c.Breaker != "open" || c.Calls != 3 || c.Budget == nil || c.Budget.MaxRPS != 5 {
		t.Errorf("cloud %+v", c)
	}
}

// TestStatusKeys pins the keys status() and /status show: clients, the
// README and the operator page name them.
func TestStatusKeys(t *testing.T) {
	b, err := json.Marshal(testReport(t, true).board.Status())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	details := m["details"].(map[string]any)
	for _, tt := range []struct {
		name string
		obj  any
		want []string
	}{
		{"status", m, []string{"autoscaler", "cloud", "cloud_in_flight", "controller", "counters", "details", "functions", "in_flight", "lb_id",
			"local_in_flight", "offload_policy", "pool_desired", "pool_max", "pool_min", "pool_ready", "pool_size", "queued",
			"ready", "replicas", "scheduler", "share", "uptime_s", "worker_concurrency"}},
		{"counters", m["counters"], []string{"busy", "calls", "cloud", "cold_starts", "errors", "errors_by_fault", "last_scale", "local", "reasons"}},
		{"replicas[0]", m["replicas"].([]any)[0], []string{"addr", "controller", "in_flight", "lb_id", "queued"}},
		{"details", details, []string{"cloud", "function", "members", "pool"}},
		{"details.members[0]", details["members"].([]any)[0], []string{"addr", "capacity", "cold_starts", "completed", "in_flight", "name", "sha256", "state", "version"}},
		{"details.function", details["function"], []string{"name", "sha256", "style", "version"}},
		{"details.pool", details["pool"], []string{"adopted", "draining", "failed", "removed", "replacements", "spare", "start_failed", "started", "starting", "waiting"}},
		{"details.cloud", details["cloud"], []string{"breaker", "budget", "calls", "cold_starts", "current", "failed", "pings", "ready", "rejected", "retries", "succeeded", "throttled"}},
		{"details.cloud.budget", details["cloud"].(map[string]any)["budget"], []string{"calls", "max_cost_per_hour", "max_rps", "spent_usd", "used"}},
		{"functions.faas", m["functions"].(map[string]any)["faas"], []string{"cloud", "cloud_in_flight", "counters", "in_flight", "local_in_flight", "name",
			"pool_desired", "pool_max", "pool_min", "pool_ready", "pool_size", "queued", "ready", "sha256", "spare", "style", "timeout_s", "version", "worker_concurrency"}},
		{"share", m["share"], []string{"functions", "held", "max_total_workers"}},
		{"share.functions[0]", m["share"].(map[string]any)["functions"].([]any)[0], []string{"allotted", "idle_s", "limit", "max", "min", "name", "want", "workers"}},
	} {
		var got []string
		for k := range tt.obj.(map[string]any) {
			got = append(got, k)
		}
		sort.Strings(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s keys:\n got %v\nwant %v", tt.name, got, tt.want)
		}
	}

	// CLOUD=off: no cloud in the details.
	if st := testReport(t, false).board.Status(); st.Details.Cloud != nil {
		t.Errorf("cloud off: details.cloud = %+v, want none", st.Details.Cloud)
	}
}

// TestWorkerStartSeconds: the start-time histogram is exposed under its
// name with the function label, and counts each start in its bucket.
func TestWorkerStartSeconds(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, fn := range []string{"faas", "hello"} {
		h := WorkerStartSeconds(fn)
		reg.MustRegister(h)
		h.Observe((30 * time.Millisecond).Seconds())
		if fn == "faas" {
			h.Observe((1200 * time.Millisecond).Seconds())
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "spillway_worker_start_seconds" {
		t.Fatalf("families = %v, want spillway_worker_start_seconds only", mfs)
	}
	type sample struct {
		count, under100ms, under2s uint64
	}
	got := map[string]sample{}
	for _, m := range mfs[0].GetMetric() {
		var fn string
		for _, l := range m.GetLabel() {
			if l.GetName() == "function" {
				fn = l.GetValue()
			}
		}
		s := sample{count: m.GetHistogram().GetSampleCount()}
		for _, b := range m.GetHistogram().GetBucket() {
			switch b.GetUpperBound() {
			case 0.1:
				s.under100ms = b.GetCumulativeCount()
			case 2:
				s.under2s = b.GetCumulativeCount()
			}
		}
		got[fn] = s
	}
	want := map[string]sample{"faas": {2, 1, 2}, "hello": {1, 1, 1}}
	if !maps.Equal(got, want) {
		t.Errorf("spillway_worker_start_seconds = %+v, want %+v", got, want)
	}
}

func TestReportMetrics(t *testing.T) {
	for _, withCloud := range []bool{false, true} {
		w := testReport(t, withCloud)
		reg := prometheus.NewRegistry()
		reg.MustRegister(w.r.Collectors()...)
		reg.MustRegister(LBCollectors(w.rep, w.refused)...)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			m := mf.GetMetric()[0]
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		want := map[string]float64{
			"spillway_pool_workers": 2, "spillway_pool_ready_workers": 1, "spillway_pool_desired_workers": 3,
			"spillway_worker_replacements_total": 1, "spillway_worker_failures_total": 1, "spillway_worker_starts_total": 5,
			"spillway_function_version": 4, "spillway_lb_controller": 1, "spillway_lb_replicas": 2,
			"spillway_lb_refused_connections_total": 6,
		}
		if withCloud {
			want["spillway_cloud_circuit_state"] = 2
			want["spillway_cloud_ready"] = 1
			want["spillway_cloud_throttled_total"] = 0
			want["spillway_cloud_pings_total"] = 7
		}
		for name, v := range want {
			if g, ok := got[name]; !ok || g != v {
				t.Errorf("cloud=%v: %s = %v (present %v), want %v", withCloud, name, g, ok, v)
			}
		}
		if len(got) != len(want) {
			t.Errorf("cloud=%v: %d metrics, want %d: %v", withCloud, len(got), len(want), got)
		}
	}
}
