package ui

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
)

// fakeSource is a gateway stand-in: a status the test edits and a real
// Prometheus histogram like the gateway's.
type fakeSource struct {
	mu      sync.Mutex
	st      spillway.Status
	reg     *prometheus.Registry
	latency *prometheus.HistogramVec
}

func newFakeSource() *fakeSource {
	f := &fakeSource{reg: prometheus.NewRegistry()}
	f.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: latencyFamily, Buckets: []float64{.01, .025, .05, .1, .25, .5, 1},
	}, []string{"route"})
	f.reg.MustRegister(f.latency)
	f.st = spillway.Status{Ready: true, Controller: true, PoolMin: 1, PoolMax: 4, PoolDesired: 2, Scheduler: "round-robin",
		OffloadPolicy: "overflow", Autoscaler: "reactive", CloudMode: "local",
		Functions: map[string]spillway.FunctionSection{"fib": {Name: "fib", Version: 3, PoolMin: 1, PoolMax: 4, PoolDesired: 2, Spare: true}},
		Share: &spillway.ShareStatus{MaxTotalWorkers: 8, Held: 2, Functions: []spillway.ShareStanding{
			{Name: "fib", Min: 1, Max: 4, Workers: 2, Want: 3, Allotted: 2, Limit: 4, IdleSeconds: 0.5}}}}
	f.st.Details = &spillway.StatusDetails{
		Function: spillway.FunctionStatus{Name: "fib", Version: 3, SHA256: "abcdef0123456789", Style: "script"},
		Members: []spillway.MemberStatus{
			{Name: "w1", State: "ready", InFlight: 1, Capacity: 1, Version: 3, Completed: 7, ColdStarts: 1},
			{Name: "w2", State: "starting", InFlight: 0, Capacity: 1, Version: 3},
		},
		Cloud: &spillway.CloudStatus{Ready: true, Breaker: "closed", Calls: 5, ColdStarts: 2,
			Budget: &spillway.BudgetStatus{MaxRPS: 5, Calls: 5, SpentUSD: 0.0001, Used: 0.4}},
	}
	return f
}

func (f *fakeSource) Status() spillway.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return deepCopy(f.st)
}

// deepCopy copies a status' slices and pointers, so a test's edit never
// races a reader.
func deepCopy(st spillway.Status) spillway.Status {
	st.Replicas = slices.Clone(st.Replicas)
	st.Counters.Reasons = maps.Clone(st.Counters.Reasons)
	st.Counters.ErrorsByFault = maps.Clone(st.Counters.ErrorsByFault)
	st.Functions = maps.Clone(st.Functions)
	if st.Share != nil {
		sh := *st.Share
		sh.Functions = slices.Clone(sh.Functions)
		st.Share = &sh
	}
	if st.Details == nil {
		return st
	}
	d := *st.Details
	d.Members = slices.Clone(d.Members)
	if d.Cloud != nil {
		c := *d.Cloud
		if c.Budget != nil {
			b := *c.Budget
			c.Budget = &b
		}
		d.Cloud = &c
	}
	st.Details = &d
	return st
}

func (f *fakeSource) Metrics() prometheus.Gatherer { return f.reg }

func (f *fakeSource) edit(fn func(st *spillway.Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.st)
}

func TestEventsKeepsTheNewest50(t *testing.T) {
	e := NewEvents(func() time.Time { return time.Unix(0, 0) })
	if got := e.Last(); len(got) != 0 {
		t.Fatalf("empty log: %v", got)
	}
	for i := range 60 {
		e.Event(spillway.EventScaleUp, fmt.Sprint(i))
	}
	got := e.Last()
	if len(got) != MaxEvents {
		t.Fatalf("%d events, want %d", len(got), MaxEvents)
	}
	for i, ev := range got {
		if want := fmt.Sprint(59 - i); ev.Cause != want || ev.Kind != spillway.EventScaleUp {
			t.Fatalf("event %d = %+v, want cause %s (newest first)", i, ev, want)
		}
	}
}

func TestQuantile(t *testing.T) {
	h := histogram{count: 100, bounds: []float64{.1, .2, .5}, buckets: []uint64{50, 90, 99}}
	for _, tc := range []struct {
		q, want float64
	}{
		{0.25, 0.05},  // halfway into the first bucket, from 0
		{0.5, 0.1},    // its top
		{0.7, 0.15},   // halfway into the second
		{0.99, 0.5},   // top of the last finite bucket
		{0.999, 0.5},  // in +Inf: the last finite bound
		{0.945, 0.35}, // halfway into the third
	} {
		if got := h.quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (histogram{}).quantile(.5); !math.IsNaN(got) {
		t.Errorf("empty histogram: %v, want NaN", got)
	}
}

func TestDataWhileStarting(t *testing.T) {
	u := New(Options{Function: "fib"})
	defer u.Close()
	u.Events().Event(spillway.EventStart, "lb starting")
	d, err := u.Data()
	if err != nil {
		t.Fatal(err)
	}
	if d.State != "starting" || !strings.Contains(d.Message, "fib") || len(d.Events) != 1 || len(d.Reasons) != len(Reasons) {
		t.Fatalf("starting data = %+v", d)
	}
}

func TestSamplerSeriesLatencyAndBreakerEvents(t *testing.T) {
	src := newFakeSource()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0
	u := New(Options{Function: "fib", Interval: time.Hour, Now: func() time.Time { return now }})
	defer u.Close()
	u.SetSource(src)
	must(t, u.Sample(now))

	// Two seconds later: 10 local and 4 cloud calls more.
	src.edit(func(st *spillway.Status) {
		st.Counters.Local, st.Counters.Cloud, st.Counters.Calls = 10, 4, 14
	})
	for range 10 {
		src.latency.WithLabelValues("local").Observe(0.02)
	}
	for range 4 {
		src.latency.WithLabelValues("cloud").Observe(0.3)
	}
	now = t0.Add(2 * time.Second)
	must(t, u.Sample(now))
	// The breaker opens.
	src.edit(func(st *spillway.Status) {
		st.Details.Cloud.Breaker = "open"
	})
	now = now.Add(time.Second)
	must(t, u.Sample(now))

	d, err := u.Data()
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Series) != 2 || d.Series[0].Local != 5 || d.Series[0].Cloud != 2 || d.Series[1].Local != 0 ||
		d.Series[0].NLocal != 10 || d.Series[0].NCloud != 4 {
		t.Errorf("series = %+v, want 10 local and 4 cloud calls (5/s and 2/s), then none", d.Series)
	}
	byRoute := map[string]RouteLatency{}
	for _, l := range d.Latency {
		byRoute[l.Route] = l
	}
	if l := byRoute["local"]; l.Calls != 10 || l.P50MS == nil || *l.P50MS <= 10 || *l.P50MS > 25 {
		t.Errorf("local latency %+v, want 10 calls with p50 in (10, 25] ms", l)
	}
	if l := byRoute["cloud"]; l.Calls != 4 || l.P99MS == nil || *l.P99MS <= 250 || *l.P99MS > 500 {
		t.Errorf("cloud latency %+v, want 4 calls with p99 in (250, 500] ms", l)
	}
	if len(d.Events) != 1 || d.Events[0].Kind != spillway.EventBreakerChange || !strings.Contains(d.Events[0].Cause, "closed → open") {
		t.Errorf("events = %+v, want one breaker change closed → open", d.Events)
	}
	f := d.Functions[0]
	if f.Name != "fib" || f.Version != 3 || f.Workers.Ready != 1 || f.Workers.Starting != 1 || f.InFlight != 1 || f.ColdStarts != 1 {
		t.Errorf("function = %+v", f)
	}
	if !f.Spare || f.Share == nil || *f.Share != (FunctionShare{Allotted: 2, Limit: 4, Want: 3, IdleS: 0.5}) ||
		d.Share == nil || *d.Share != (Share{MaxTotalWorkers: 8, Held: 2}) {
		t.Errorf("spare %v, function's share %+v, share %+v; want the spare ready, allotted 2 of limit 4 wanting 3, 2 held of 8", f.Spare, f.Share, d.Share)
	}
	if d.Cloud.Breaker != "open" || d.Cloud.Calls != 5 || d.Cloud.Warm != nil || d.Cloud.Budget == nil || d.Cloud.Budget.MaxRPS != 5 {
		t.Errorf("cloud = %+v", d.Cloud)
	}

	// A minute later with no calls, the window holds none.
	for range 70 {
		now = now.Add(time.Second)
		must(t, u.Sample(now))
	}
	d, _ = u.Data()
	for _, l := range d.Latency {
		if l.Calls != 0 || l.P50MS != nil || l.WindowS < 59 || l.WindowS > 61 {
			t.Errorf("after an idle minute: %+v, want no calls over a 60 s window", l)
		}
	}
	if len(d.Series) != 72 {
		t.Errorf("%d points, want 72", len(d.Series))
	}
}

// TestControllerChangeEvents follows the controller lease as status()
// shows it: lb alone never makes an event; a replica that loses or takes the
// lease does.
func TestControllerChangeEvents(t *testing.T) {
	src := newFakeSource()
	now := time.Unix(1000, 0)
	u := New(Options{Interval: time.Hour, Now: func() time.Time { return now }})
	defer u.Close()
	step := func(edit func(st *spillway.Status)) {
		t.Helper()
		src.edit(edit)
		now = now.Add(time.Second)
		must(t, u.Sample(now))
	}
	u.SetSource(src) // lb alone: controller, no replicas
	step(func(st *spillway.Status) { st.Counters.Calls++ })
	if ev := u.Events().Last(); len(ev) != 0 {
		t.Fatalf("lb alone: events %+v, want none", ev)
	}
	step(func(st *spillway.Status) {
		st.LBID, st.Controller = "a", true
		st.Replicas = []spillway.ReplicaStatus{{LBID: "a", Controller: true}, {LBID: "b"}}
	})
	step(func(st *spillway.Status) {
		st.Controller = false
		st.Replicas = []spillway.ReplicaStatus{{LBID: "a"}, {LBID: "b", Controller: true}}
	})
	step(func(st *spillway.Status) {
		st.Controller = true
		st.Replicas = []spillway.ReplicaStatus{{LBID: "a", Controller: true}}
	})
	var causes []string
	for _, e := range u.Events().Last() {
		if e.Kind != spillway.EventControllerChange {
			t.Errorf("event %+v, want controller changes only", e)
		}
		causes = append(causes, e.Cause)
	}
	want := []string{
		"this lb (a) took the controller lease from replica b",
		"this lb (a) lost the controller lease; replica b controls the pool now",
		"replica a controls the pool now (was no replica)",
	}
	if strings.Join(causes, "\n") != strings.Join(want, "\n") {
		t.Errorf("events (newest first):\n%s\nwant:\n%s", strings.Join(causes, "\n"), strings.Join(want, "\n"))
	}
	d, _ := u.Data()
	if d.LB.ID != "a" || !d.LB.Controller || d.LB.ControllerID != "a" || len(d.LB.Replicas) != 1 {
		t.Errorf("lb = %+v", d.LB)
	}
}

func TestSeriesKeepsFiveMinutes(t *testing.T) {
	src := newFakeSource()
	now := time.Unix(1000, 0)
	u := New(Options{Interval: time.Hour, Now: func() time.Time { return now }})
	defer u.Close()
	u.SetSource(src)
	for range SeriesLength + 20 {
		now = now.Add(time.Second)
		must(t, u.Sample(now))
	}
	d, _ := u.Data()
	if len(d.Series) != SeriesLength || d.Series[len(d.Series)-1].T != now.UnixMilli() {
		t.Fatalf("%d points ending at %d, want %d ending now", len(d.Series), d.Series[len(d.Series)-1].T, SeriesLength)
	}
}

// TestHandlerAuth shows that LB_AUTH_TOKEN protects the page and its data,
// and (the same requests with the token unset) that without it they are open.
func TestHandlerAuth(t *testing.T) {
	for _, tc := range []struct {
		name, token string
	}{{"token set", "s3cret"}, {"token unset", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			u := New(Options{Token: tc.token, Function: "fib"})
			defer u.Close()
			srv := httptest.NewServer(u.Handler())
			defer srv.Close()
			for _, path := range []string{"/ui", "/ui/data", "/ui/static/app.js"} {
				resp := get(t, srv.URL+path, nil)
				if tc.token == "" {
					if resp.StatusCode != 200 {
						t.Errorf("GET %s with protection off: %d, want 200", path, resp.StatusCode)
					}
					continue
				}
				if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
					t.Errorf("GET %s without credentials: %d %q, want 401 with a Basic challenge", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
				}
				if resp := get(t, srv.URL+path, func(r *http.Request) { r.SetBasicAuth("any", "wrong") }); resp.StatusCode != 401 {
					t.Errorf("GET %s with a wrong password: %d, want 401", path, resp.StatusCode)
				}
				if resp := get(t, srv.URL+path, func(r *http.Request) { r.SetBasicAuth("admin", tc.token) }); resp.StatusCode != 200 {
					t.Errorf("GET %s with basic auth: %d, want 200", path, resp.StatusCode)
				}
				if resp := get(t, srv.URL+path, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tc.token) }); resp.StatusCode != 200 {
					t.Errorf("GET %s with a bearer token: %d, want 200", path, resp.StatusCode)
				}
			}
		})
	}
}

func TestPageIsSelfContained(t *testing.T) {
	u := New(Options{Function: `fib<script>`})
	defer u.Close()
	srv := httptest.NewServer(u.Handler())
	defer srv.Close()
	resp := get(t, srv.URL+"/ui", nil)
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(page, "fib<script>") || !strings.Contains(page, "fib&lt;script&gt;") {
		t.Errorf("function name not escaped in the page")
	}
	for _, bad := range []string{"http://", "https://", "<style", "style=", "onload=", "onclick="} {
		if strings.Contains(strings.ReplaceAll(page, "http://www.w3.org", ""), bad) {
			t.Errorf("page contains %q: everything must come from lb, with no inline style or handler", bad)
		}
	}
	if strings.Count(page, "<script") != 1 || !strings.Contains(page, `<script src="/ui/static/app.js?v=`) {
		t.Errorf("want exactly one external script from /ui/static")
	}
	for _, asset := range []string{"/ui/static/app.js", "/ui/static/style.css"} {
		r := get(t, srv.URL+asset, nil)
		if r.StatusCode != 200 {
			t.Errorf("GET %s: %d", asset, r.StatusCode)
		}
	}
	if r := get(t, srv.URL+"/ui/static/nope.js", nil); r.StatusCode != 404 {
		t.Errorf("missing asset: %d, want 404", r.StatusCode)
	}
	var d Data
	r := get(t, srv.URL+"/ui/data", nil)
	if err := json.NewDecoder(r.Body).Decode(&d); err != nil || d.State != "starting" {
		t.Errorf("data: %v %+v", err, d)
	}
}

func get(t *testing.T, url string, edit func(*http.Request)) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDataShowsEveryFunctionsPool(t *testing.T) {
	st := spillway.Status{Ready: true,
		Details: &spillway.StatusDetails{Function: spillway.FunctionStatus{Name: "faas", Version: 2},
			Members: []spillway.MemberStatus{{Name: "w1", State: "ready", Capacity: 1}}},
		Functions: map[string]spillway.FunctionSection{
			"faas":  {Name: "faas", Version: 2, PoolSize: 1, PoolReady: 1, PoolMin: 1, PoolMax: 3},
			"hello": {Name: "hello", Version: 5, Style: "handler", PoolSize: 3, PoolReady: 2, PoolMin: 2, PoolMax: 4, InFlight: 7},
			"abc":   {Name: "abc", Version: 1, PoolSize: 0},
		}}
	var d Data
	d.fill(st)
	var names []string
	for _, f := range d.Functions {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "faas,abc,hello" {
		t.Fatalf("functions %v: want the default first, then the others by name", names)
	}
	if f := d.Functions[0]; f.Max != 3 || f.Workers.Ready != 1 || len(f.Members) != 1 {
		t.Errorf("default function %+v: want its members and its own max", f)
	}
	if h := d.Functions[2]; h.Version != 5 || h.Workers.Total != 3 || h.Workers.Ready != 2 || h.Workers.Starting != 1 || h.InFlight != 7 || h.Min != 2 {
		t.Errorf("hello %+v: want its section's pool", h)
	}
	st.Details = nil // the default function is not served
	d.fill(st)
	if len(d.Functions) != 3 || d.Functions[0].Name != "abc" {
		t.Errorf("without the default function's details: %+v, want the three sections by name", d.Functions)
	}
}
