package loadgen

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func sample(schedMs, latMs float64, route string, err error) Sample {
	s := t0.Add(time.Duration(schedMs * float64(time.Millisecond)))
	return Sample{Scheduled: s, End: s.Add(time.Duration(latMs * float64(time.Millisecond))), Route: route, Err: err}
}

func TestRecorderReport(t *testing.T) {
	fault := xmlrpc.NewFault(-32000, "timeout")
	tests := []struct {
		name    string
		samples []Sample
		want    Report
	}{
		{
			name: "empty",
			want: Report{ErrorCodes: map[string]int64{}, Routes: map[string]Stats{}, Reasons: map[string]int64{}, Workers: map[string]int64{}},
		},
		{
			name: "routes, errors, window",
			samples: []Sample{
				sample(0, 10, "local", nil),
				sample(100, 20, "local", nil),
				sample(200, 30, "cloud", nil),
				sample(300, 700, "", fault),
				sample(400, 5, "", errors.New("connection refused")),
			},
			want: Report{
				Sent: 5, OK: 3, Errors: 2,
				ErrorCodes: map[string]int64{"-32000": 1, "transport": 1},
				DurationS:  1.0, // 0 ms .. 1000 ms (the fault ends at 300+700)
				Throughput: 3, CallRate: 5,
				Latency: Stats{Count: 5, Min: 5, Mean: 153, P50: 20, P90: 700, P99: 700, P999: 700, Max: 700},
				Routes: map[string]Stats{
					"local": {Count: 2, Min: 10, Mean: 15, P50: 10, P90: 20, P99: 20, P999: 20, Max: 20},
					"cloud": {Count: 1, Min: 30, Mean: 30, P50: 30, P90: 30, P99: 30, P999: 30, Max: 30},
				},
				Reasons: map[string]int64{}, Workers: map[string]int64{},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(t0)
			for _, s := range tt.samples {
				r.Add(s)
			}
			got := r.Report()
			// HDR keeps 3 significant figures: round for comparison.
			round := func(s Stats) Stats {
				f := func(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
				return Stats{s.Count, f(s.Min), f(s.Mean), f(s.P50), f(s.P90), f(s.P99), f(s.P999), f(s.Max)}
			}
			got.Latency = round(got.Latency)
			for k, v := range got.Routes {
				got.Routes[k] = round(v)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("report:\n-want %+v\n+got  %+v", tt.want, got)
			}
		})
	}
}

func TestRecorderCountsAndMerge(t *testing.T) {
	a, b := NewRecorder(t0), NewRecorder(t0)
	a.Add(Sample{Scheduled: t0, End: t0.Add(time.Millisecond), Route: "local", Worker: "w1", ColdStart: true})
	a.Add(Sample{Scheduled: t0, End: t0.Add(time.Millisecond), Route: "cloud", Reason: "overflow"})
	b.Add(Sample{Scheduled: t0.Add(-time.Second), End: t0.Add(2 * time.Millisecond), Route: "cloud", Reason: "timeout", ColdStart: true})
	b.Add(Sample{Scheduled: t0, End: t0.Add(3 * time.Second), Err: context.DeadlineExceeded})
	a.Merge(b)
	rep := a.Report()
	if rep.Sent != 4 || rep.OK != 3 || rep.Errors != 1 || rep.ColdStarts != 2 {
		t.Errorf("counts %+v", rep)
	}
	if want := map[string]int64{"overflow": 1, "timeout": 1}; !reflect.DeepEqual(rep.Reasons, want) {
		t.Errorf("reasons %v", rep.Reasons)
	}
	if want := map[string]int64{"deadline": 1}; !reflect.DeepEqual(rep.ErrorCodes, want) {
		t.Errorf("error codes %v", rep.ErrorCodes)
	}
	if rep.Routes["cloud"].Count != 2 || rep.Routes["local"].Count != 1 {
		t.Errorf("routes %v", rep.Routes)
	}
	if rep.DurationS != 4 {
		t.Errorf("window %v s, want 4 (earliest schedule to latest end)", rep.DurationS)
	}
	pts := a.Points()
	if len(pts) != 4 || pts[0].T != -1 {
		t.Errorf("points %v", pts)
	}
}

func TestRecorderPercentilesOrdered(t *testing.T) {
	r := NewRecorder(t0)
	for i := range 10000 {
		// A long tail: mostly ~1 ms, some up to ~10 s.
		lat := float64(i%100) / 50
		if i%997 == 0 {
			lat = float64(i)
		}
		r.Add(sample(float64(i), lat+0.2, "local", nil))
	}
	s := r.Report().Latency
	seq := []float64{s.Min, s.P50, s.P90, s.P99, s.P999, s.Max}
	for i := 1; i < len(seq); i++ {
		if seq[i] < seq[i-1] {
			t.Fatalf("percentiles out of order: %v", seq)
		}
	}
	if s.Count != 10000 {
		t.Errorf("count %d", s.Count)
	}
}

func TestRecorderTimelineBounded(t *testing.T) {
	r := NewRecorder(t0)
	n := maxPoints*3 + 7
	for i := range n {
		r.Add(sample(float64(i), 1, "local", nil))
	}
	pts := r.Points()
	if len(pts) >= maxPoints || len(pts) < maxPoints/4 {
		t.Errorf("%d points kept of %d, want under %d", len(pts), n, maxPoints)
	}
	if r.Report().Sent != int64(n) {
		t.Errorf("decimation lost counts")
	}
}

func TestMicrosClamp(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want int64
	}{
		{-time.Second, 1},
		{0, 1},
		{1500 * time.Nanosecond, 1},
		{time.Millisecond, 1000},
		{2 * time.Hour, histHighest},
	}
	for _, tt := range tests {
		if got := micros(tt.in); got != tt.want {
			t.Errorf("micros(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestErrorKey(t *testing.T) {
	tests := []struct {
		err  error
		key  string
		name string
	}{
		{xmlrpc.NewFault(-32000, "x"), "-32000", "-32000 timeout"},
		{fmt.Errorf("wrapped: %w", xmlrpc.NewFault(-32500, "x")), "-32500", "-32500 function raised"},
		{xmlrpc.NewFault(-1, "x"), "-1", "-1 fault"},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), "deadline", "client deadline passed"},
		{context.Canceled, "canceled", "run stopped"},
		{errors.New("connection refused"), "transport", "transport error"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := ErrorKey(tt.err); got != tt.key {
				t.Errorf("ErrorKey = %q, want %q", got, tt.key)
			}
			if got := ErrorKeyName(tt.key); got != tt.name {
				t.Errorf("ErrorKeyName = %q, want %q", got, tt.name)
			}
		})
	}
}

func TestSchedule(t *testing.T) {
	tests := []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{10, 0, 0},
		{10, 1, 100 * time.Millisecond},
		{10, 25, 2500 * time.Millisecond},
		{3, 1, 333333333},
		{1000, 1000000, 1000 * time.Second},
	}
	for _, tt := range tests {
		if got := Schedule(t0, tt.rate, tt.i).Sub(t0); got != tt.want {
			t.Errorf("Schedule(rate %v, %d) = %v, want %v", tt.rate, tt.i, got, tt.want)
		}
	}
}

func TestPoolRangeOf(t *testing.T) {
	if PoolRangeOf(nil) != nil {
		t.Error("no samples should give nil")
	}
	got := PoolRangeOf([]PoolSample{{0, 2}, {1, 4}, {2, 3}})
	if *got != (PoolRange{Min: 2, Max: 4, Samples: 3}) {
		t.Errorf("got %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"count", Config{Requests: 10}, true},
		{"duration", Config{Duration: time.Second}, true},
		{"unbounded", Config{}, false},
		{"negative count", Config{Requests: -1, Duration: time.Second}, false},
		{"huge count", Config{Requests: MaxRequests + 1}, false},
		{"too long", Config{Duration: MaxDuration + 1}, false},
		{"negative rate", Config{Requests: 1, Rate: -1}, false},
		{"bad concurrency", Config{Requests: 1, Concurrency: -3}, false},
		{"open", Config{Requests: 1, Rate: 100}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		name     string
		flag     string
		fallback string
		want     string
		err      bool
	}{
		{"fallback", "", "http://127.0.0.1:9001", "http://127.0.0.1:9001/", false},
		{"path kept", "", "http://localhost:7000/RPC2", "http://localhost:7000/RPC2", false},
		{"flag wins", "http://127.0.0.1:1234", "http://x/", "http://127.0.0.1:1234/", false},
		{"nothing", "", "", "", true},
		{"bad scheme", "ftp://x/", "", "", true},
		{"no host", "http:///x", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Target(tt.flag, tt.fallback)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("Target = %q, %v; want %q (error %v)", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8000/", true},
		{"http://127.1.2.3:8000/", true},
		{"http://localhost:8000/", true},
		{"http://[::1]:8000/", true},
		{"http://10.0.0.5:8000/", false},
		{"http://example.com/", false},
		{"http://localhost.example.com/", false},
		{"http://0.0.0.0:8000/", false},
	}
	for _, tt := range tests {
		if err := CheckLoopback(tt.url); (err == nil) != tt.ok {
			t.Errorf("CheckLoopback(%s) = %v, want ok=%v", tt.url, err, tt.ok)
		}
	}
}

func TestParseInvocation(t *testing.T) {
	tests := []struct {
		name string
		in   any
		ok   bool
		want string // route/worker/reason/duration/cold
	}{
		{"full", map[string]any{"result": "1\n", "route": "local", "worker": "w1", "reason": "", "duration_ms": 1.5, "cold_start": true}, true, "local/w1//1.5ms/true"},
		{"int duration", map[string]any{"route": "cloud", "reason": "overflow", "duration_ms": int64(7)}, true, "cloud//overflow/7ms/false"},
		{"no route", map[string]any{"result": "x"}, false, ""},
		{"not a struct", "x", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := ParseInvocation(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			got := fmt.Sprintf("%s/%s/%s/%v/%v", inv.Route, inv.Worker, inv.Reason, inv.Duration, inv.ColdStart)
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestWriteTextAndCompare(t *testing.T) {
	r := NewRecorder(t0)
	r.Add(Sample{Scheduled: t0, End: t0.Add(10 * time.Millisecond), Route: "local"})
	r.Add(Sample{Scheduled: t0, End: t0.Add(30 * time.Millisecond), Route: "cloud", Reason: "overflow", ColdStart: true})
	r.Add(Sample{Scheduled: t0, End: t0.Add(5 * time.Millisecond), Err: xmlrpc.NewFault(-32003, "full")})
	rep := r.Report()
	rep.Target, rep.Model, rep.Concurrency = "http://127.0.0.1:8000/", "closed", 4
	rep.Pool = &PoolRange{Min: 2, Max: 4, Samples: 9}
	var b strings.Builder
	if err := WriteText(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"target      http://127.0.0.1:8000/ (closed, 4 callers)",
		"calls       3 sent, 2 ok, 1 errors",
		"-32003 cloud budget exhausted: 1;",
		"latency ms", "p99.9", "local", "cloud",
		"cold starts 1", "overflow: 1;", "pool size   2..4 (9 samples)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	a, c := rep, rep
	a.Label, c.Label = "local", "hybrid"
	if err := WriteCompare(&b, []Report{a, c}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"local", "hybrid", "p50 ms", "cloud p99 ms", "overflow:1", "2..4"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("compare table lacks %q:\n%s", want, b.String())
		}
	}
}
