package sim

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustRun(t testing.TB, cfg Config, p string) Result {
	t.Helper()
	r, err := Run(cfg, ParsePolicy(p, "predictive", "round-robin"))
	if err != nil {
		t.Fatalf("Run(%s): %v", p, err)
	}
	return r
}

// short is the default bursty system over 10 simulated minutes.
func short() Config {
	c := DefaultConfig()
	c.Duration = 10 * time.Minute
	return c
}

func TestDeterministic(t *testing.T) {
	a, b := mustRun(t, short(), "latency-aware"), mustRun(t, short(), "latency-aware")
	a.WallSec, b.WallSec = 0, 0
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("same seed, different results:\n%s\n%s", ja, jb)
	}
	c := short()
	c.Seed = 2
	if r := mustRun(t, c, "latency-aware"); r.Calls == a.Calls && r.P99Ms == a.P99Ms {
		t.Fatalf("another seed gave the same run")
	}
}

func TestInvariants(t *testing.T) {
	cloudOff := short()
	cloudOff.CloudOff = true
	budget := short()
	budget.CloudMaxRPS = 5
	budget.LocalTimeout = 0
	for _, tc := range []struct {
		name   string
		cfg    Config
		policy string
		check  func(t *testing.T, r Result)
	}{
		{"never stays local", short(), "never", func(t *testing.T, r Result) {
			if r.Cloud != 0 {
				t.Fatalf("%d cloud calls", r.Cloud)
			}
		}},
		{"always goes to the cloud", short(), "always", func(t *testing.T, r Result) {
			if r.Local != 0 || r.CloudCostUSD <= 0 {
				t.Fatalf("%d local calls, cost %v", r.Local, r.CloudCost())
			}
		}},
		{"cloud off: overflow stays local", cloudOff, "overflow", func(t *testing.T, r Result) {
			if r.Cloud != 0 {
				t.Fatalf("%d cloud calls", r.Cloud)
			}
		}},
		{"cloud off: latency-aware stays local", cloudOff, "latency-aware", func(t *testing.T, r Result) {
			if r.Cloud != 0 {
				t.Fatalf("%d cloud calls", r.Cloud)
			}
		}},
		{"budget bounds the cloud rate", budget, "latency-aware", func(t *testing.T, r Result) {
			if limit := int64(5*budget.Duration.Seconds()) + 5; r.Cloud == 0 || r.Cloud > limit {
				t.Fatalf("%d cloud calls, want 1..%d", r.Cloud, limit)
			}
		}},
		{"budget bounds always", budget, "always", func(t *testing.T, r Result) {
			if limit := int64(5*budget.Duration.Seconds()) + 5; r.Cloud > limit || r.Local == 0 {
				t.Fatalf("%d cloud, %d local calls, want at most %d cloud", r.Cloud, r.Local, limit)
			}
		}},
		{"pool within [N, MAX] and back to N", short(), "overflow", func(t *testing.T, r Result) {
			if r.PoolMin != 2 || r.PoolMax != 16 {
				t.Fatalf("pool %d..%d, want 2..16", r.PoolMin, r.PoolMax)
			}
		}},
		{"MAX=N never scales", func() Config { c := short(); c.Max = c.Servers; return c }(), "latency-aware", func(t *testing.T, r Result) {
			if r.PoolMin != 2 || r.PoolMax != 2 || r.ScaleUps != 0 {
				t.Fatalf("pool %d..%d, %d scale-ups", r.PoolMin, r.PoolMax, r.ScaleUps)
			}
		}},
		{"N=1, zero arrivals after a short trace", Config{
			Seed: 1, Duration: time.Second, Trace: Trace{Kind: TraceCSV, Times: []float64{0.5}},
			Servers: 1, Max: 1, Concurrency: 1, Tick: time.Second, Service: 10 * time.Millisecond,
			CloudSpeed: 1, LambdaMemoryMB: 128, WaitWeight: 4, BudgetBurst: time.Second, TargetUtilization: 0.8,
		}, "latency-aware", func(t *testing.T, r Result) {
			if r.Calls != 1 || r.Local != 1 || r.P50Ms < 9 || r.P50Ms > 11 {
				t.Fatalf("%+v", r)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRun(t, tc.cfg, tc.policy)
			if r.Calls == 0 || r.Local+r.Cloud != r.Calls {
				t.Fatalf("calls %d != local %d + cloud %d", r.Calls, r.Local, r.Cloud)
			}
			var byReason int64
			for _, n := range r.Reasons {
				byReason += n
			}
			if byReason < r.Cloud {
				t.Fatalf("cloud calls by reason %v sum below %d", r.Reasons, r.Cloud)
			}
			tc.check(t, r)
		})
	}
}

// CloudCost is a helper for messages.
func (r Result) CloudCost() float64 { return r.CloudCostUSD }

// TestLatencyAwareBeatsOverflow is the goal: on bursty traces
// latency-aware has a lower p99 than overflow while offloading no more calls.
// It also holds on the step and diurnal traces; with MAX=2N (little room to
// queue) the p99s are within a few percent.
func TestLatencyAwareBeatsOverflow(t *testing.T) {
	diurnal := DefaultConfig()
	diurnal.Duration = 20 * time.Minute
	diurnal.Trace = Trace{Kind: TraceDiurnal, Rate: 5, Peak: 200, Period: 10 * time.Minute}
	step := DefaultConfig()
	step.Duration = 5 * time.Minute
	step.Trace = Trace{Kind: TraceStep, Rate: 10, Peak: 150, StepAt: 30 * time.Second}
	twoN := short()
	twoN.Servers, twoN.Max, twoN.Trace.Rate, twoN.Trace.Peak = 4, 8, 10, 120
	seeded := func(c Config, seed uint64) Config { c.Seed = seed; return c }
	for _, tc := range []struct {
		name     string
		cfg      Config
		p99Slack float64 // latency-aware's p99 may exceed overflow's by this factor
	}{
		{"bursts seed 1", seeded(short(), 1), 1},
		{"bursts seed 2", seeded(short(), 2), 1},
		{"bursts seed 3", seeded(short(), 3), 1},
		{"step", step, 1},
		{"diurnal", diurnal, 1},
		{"bursts MAX=2N", twoN, 1.05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			over, lat := mustRun(t, tc.cfg, "overflow"), mustRun(t, tc.cfg, "latency-aware")
			t.Logf("overflow p99 %.0fms offloaded %.1f%%; latency-aware p99 %.0fms offloaded %.1f%%",
				over.P99Ms, 100*over.Offloaded, lat.P99Ms, 100*lat.Offloaded)
			worse := lat.P99Ms > over.P99Ms*tc.p99Slack || tc.p99Slack == 1 && lat.P99Ms == over.P99Ms
			if worse || lat.Cloud > over.Cloud {
				t.Errorf("latency-aware p99 %.0fms / %d cloud calls, overflow %.0fms / %d",
					lat.P99Ms, lat.Cloud, over.P99Ms, over.Cloud)
			}
		})
	}
}

// TestPredictiveReachesSizeInOneTick: after a step from 10 to 150 calls/s
// (needing 15 workers), the predictive autoscaler has the pool at size after
// one tick; the reference one needs many.
func TestPredictiveReachesSizeInOneTick(t *testing.T) {
	c := DefaultConfig()
	c.Duration = 2 * time.Minute
	c.Trace = Trace{Kind: TraceStep, Rate: 10, Peak: 150, StepAt: 30 * time.Second}
	for _, off := range []string{"overflow", "latency-aware"} {
		pred, ref := mustRun(t, c, off+"/predictive"), mustRun(t, c, off+"/reference")
		t.Logf("%s: predictive lag %d ticks, %d scale-ups; reference lag %d ticks, %d scale-ups",
			off, pred.MaxLagTicks, pred.ScaleUps, ref.MaxLagTicks, ref.ScaleUps)
		if pred.MaxLagTicks > 1 || ref.MaxLagTicks < 5 {
			t.Errorf("%s: lag predictive %d, reference %d ticks; want <= 1 and >= 5", off, pred.MaxLagTicks, ref.MaxLagTicks)
		}
	}
}

func TestRateAt(t *testing.T) {
	b := Trace{Kind: TraceBursts, Rate: 5, Peak: 200, Period: 120 * time.Second, On: 20 * time.Second}
	d := Trace{Kind: TraceDiurnal, Rate: 10, Peak: 110, Period: 100 * time.Second}
	s := Trace{Kind: TraceStep, Rate: 1, Peak: 9, StepAt: 10 * time.Second}
	for _, tc := range []struct {
		tr   Trace
		at   float64
		want float64
	}{
		{b, 0, 5}, {b, 29.9, 5}, {b, 30, 200}, {b, 49.9, 200}, {b, 50, 5}, {b, 150, 200},
		{d, 0, 10}, {d, 50, 110}, {d, 25, 60},
		{s, 9.9, 1}, {s, 10, 9},
	} {
		if got, ok := tc.tr.RateAt(tc.at); !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s at %v: %v, want %v", tc.tr.Kind, tc.at, got, tc.want)
		}
	}
	if _, ok := (Trace{Kind: TraceCSV}).RateAt(1); ok {
		t.Error("csv rate known")
	}
}

// TestArrivalCounts checks the generated traces carry the calls their rate
// functions promise.
func TestArrivalCounts(t *testing.T) {
	for _, tc := range []struct {
		tr   Trace
		want float64 // expected calls over 20 minutes
	}{
		{Trace{Kind: TracePoisson, Rate: 50}, 50 * 1200},
		{Trace{Kind: TraceBursts, Rate: 5, Peak: 200, Period: 2 * time.Minute, On: 20 * time.Second}, 10 * (100*5 + 20*200)},
		{Trace{Kind: TraceDiurnal, Rate: 10, Peak: 110, Period: 10 * time.Minute}, 60 * 1200},
	} {
		c := DefaultConfig()
		c.Duration, c.Trace = 20*time.Minute, tc.tr
		r := mustRun(t, c, "always")
		if math.Abs(float64(r.Calls)-tc.want) > 4*math.Sqrt(tc.want) {
			t.Errorf("%s: %d calls, want about %.0f", tc.tr.Kind, r.Calls, tc.want)
		}
	}
}

func TestReadCSV(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []float64
		wantErr  bool
	}{
		{"relative", "0\n0.5\n1.25\n", []float64{0, 0.5, 1.25}, false},
		{"absolute, header, columns, unsorted", "ts,param\n1700000002,x\n1700000000.5,y\n\n# note\n1700000001,z\n", []float64{0, 0.5, 1.5}, false},
		{"garbage", "0\nabc\n", nil, true},
		{"empty", "ts\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadCSV(strings.NewReader(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 1e-6 {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestMain_CLI(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "trace.csv")
	var b strings.Builder
	for i := range 3000 {
		b.WriteString(jsonNumber(float64(i) * 0.02))
		b.WriteByte('\n')
	}
	if err := os.WriteFile(csv, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"table", []string{"--duration", "1m", "--policies", "overflow,never"}, 0, "never/predictive/round-robin"},
		{"json", []string{"--duration", "1m", "--json", "--policies", "latency-aware/reference/least-connections"}, 0, `"policy": "latency-aware/reference/least-connections"`},
		{"csv", []string{"--trace", "csv:" + csv, "--json"}, 0, `"calls": 3000`},
		{"step", []string{"--trace", "step", "--duration", "40s"}, 0, "latency-aware"},
		{"diurnal", []string{"--trace", "diurnal", "--duration", "40s"}, 0, "latency-aware"},
		{"bad policy", []string{"--policies", "smart"}, 1, "smart"},
		{"bad trace", []string{"--trace", "sine"}, 2, "unknown trace"},
		{"missing csv", []string{"--trace", "csv:" + filepath.Join(dir, "nope")}, 2, "opening trace"},
		{"bad cloud", []string{"--cloud", "maybe"}, 2, "--cloud"},
		{"bad sizes", []string{"--servers", "5", "--max", "2"}, 2, "--max"},
		{"stray argument", []string{"extra"}, 2, "unexpected"},
		{"help", []string{"-h"}, 0, "usage: lb sim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.contains) {
				t.Fatalf("exit %d (want %d), output %q / %q, want it to contain %q", code, tc.code, out.String(), errb.String(), tc.contains)
			}
			if tc.code == 0 && strings.Contains(strings.Join(tc.args, " "), "--json") {
				var rep Report
				if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Results) == 0 {
					t.Fatalf("bad json (%v): %s", err, out.String())
				}
			}
		})
	}
}

func jsonNumber(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// BenchmarkSim measures simulator speed: 20,000 calls/s for 100 s (2M calls)
// against a pool that grows to thousands of workers.
func BenchmarkSim(b *testing.B) {
	c := DefaultConfig()
	c.Trace = Trace{Kind: TracePoisson, Rate: 20000}
	c.Duration = 100 * time.Second
	c.Servers, c.Max = 100, 4000
	for _, p := range []string{"overflow", "latency-aware", "overflow/predictive/least-connections"} {
		b.Run(p, func(b *testing.B) {
			var r Result
			for b.Loop() {
				r = mustRun(b, c, p)
			}
			b.ReportMetric(float64(r.Calls), "calls/op")
			b.ReportMetric(float64(r.PoolMax), "workers")
			b.ReportMetric(float64(r.Events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
