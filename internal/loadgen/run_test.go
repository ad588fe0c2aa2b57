package loadgen_test

import (
	"bytes"
	"context"
	"image/png"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/loadgen/fakelb"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

func invoker(lb *fakelb.LB, options map[string]any) *loadgen.InvokeCaller {
	return &loadgen.InvokeCaller{Client: xmlrpc.NewClient(lb.URL, nil), Param: "20", Options: options}
}

func mustRun(t *testing.T, r *loadgen.Runner, cfg loadgen.Config) *loadgen.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := r.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func checkOrdered(t *testing.T, name string, s loadgen.Stats) {
	t.Helper()
	seq := []float64{s.Min, s.P50, s.P90, s.P99, s.P999, s.Max}
	for i := 1; i < len(seq); i++ {
		if seq[i] < seq[i-1] {
			t.Errorf("%s: percentiles out of order: %v", name, seq)
		}
	}
}

func TestRunCountsAddUp(t *testing.T) {
	tests := []struct {
		name string
		cfg  loadgen.Config
	}{
		{"closed", loadgen.Config{Concurrency: 4, Requests: 100, WarmupRequests: 10}},
		{"open", loadgen.Config{Rate: 400, Requests: 100, WarmupRequests: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb := fakelb.Start(t, fakelb.Options{Delay: 2 * time.Millisecond, FaultEvery: 5})
			var done atomic.Int64
			r := &loadgen.Runner{Caller: invoker(lb, nil), Completed: &done,
				PoolSize: func(ctx context.Context) (int, bool, error) { return 3, true, nil }}
			res := mustRun(t, r, tt.cfg)
			rep := res.Report
			if rep.Sent != 100 || rep.OK+rep.Errors != rep.Sent {
				t.Errorf("sent %d = ok %d + errors %d, want 100", rep.Sent, rep.OK, rep.Errors)
			}
			if rep.Warmup != 10 || lb.Calls() != 110 || done.Load() != 110 {
				t.Errorf("warm-up %d, server saw %d, completed %d; want 10, 110, 110", rep.Warmup, lb.Calls(), done.Load())
			}
			if rep.Errors < 18 || rep.Errors > 22 || rep.ErrorCodes["-32000"] != rep.Errors {
				t.Errorf("errors %d by code %v, want about 20 of -32000", rep.Errors, rep.ErrorCodes)
			}
			var byRoute int64
			for _, s := range rep.Routes {
				byRoute += s.Count
				checkOrdered(t, "route", s)
			}
			if byRoute != rep.OK || rep.Latency.Count != rep.Sent {
				t.Errorf("route counts %d, ok %d, latency count %d", byRoute, rep.OK, rep.Latency.Count)
			}
			checkOrdered(t, "all", rep.Latency)
			if rep.Routes["local"].Count == 0 || rep.Routes["cloud"].Count == 0 || rep.Reasons["overflow"] == 0 {
				t.Errorf("routes %v reasons %v: want both routes and overflow offloads", rep.Routes, rep.Reasons)
			}
			if rep.Pool == nil || rep.Pool.Min != 3 || rep.Pool.Max != 3 {
				t.Errorf("pool %+v", rep.Pool)
			}
			if rep.Throughput <= 0 || rep.DurationS <= 0 {
				t.Errorf("throughput %v over %v s", rep.Throughput, rep.DurationS)
			}
		})
	}
}

func TestRunDurationBound(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{Delay: 5 * time.Millisecond})
	start := time.Now()
	res := mustRun(t, &loadgen.Runner{Caller: invoker(lb, nil)},
		loadgen.Config{Concurrency: 2, Duration: 300 * time.Millisecond, WarmupDuration: 100 * time.Millisecond})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a 0.4 s run took %v", took)
	}
	rep := res.Report
	if rep.Sent == 0 || rep.Warmup == 0 || lb.Calls() != rep.Sent+rep.Warmup {
		t.Errorf("sent %d warm-up %d server %d", rep.Sent, rep.Warmup, lb.Calls())
	}
}

// The open model's latency counts from the scheduled send time: against a
// target that serves one call at a time, slower than the rate, the backlog
// shows in the figures; against one that keeps up, it does not.
func TestOpenModelIncludesQueueing(t *testing.T) {
	cfg := loadgen.Config{Rate: 100, Requests: 60}
	p99 := func(serial bool) float64 {
		lb := fakelb.Start(t, fakelb.Options{Delay: 20 * time.Millisecond, Serial: serial})
		return mustRun(t, &loadgen.Runner{Caller: invoker(lb, nil)}, cfg).Report.Latency.P99
	}
	slowed, keepsUp := p99(true), p99(false)
	// Serial: call i is due at 10i ms and done near 20(i+1) ms, so the last
	// ones wait about 600 ms.
	if slowed < 400 {
		t.Errorf("slowed target p99 %.1f ms, want the backlog (> 400 ms)", slowed)
	}
	// About 20 ms when the machine is quiet; compared with the backlog so
	// that a loaded machine, which slows both runs, cannot fail it.
	if keepsUp*2 > slowed {
		t.Errorf("target that keeps up p99 %.1f ms, want well under the slowed target's %.1f ms", keepsUp, slowed)
	}
}

func TestRunForcedRoute(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{})
	res := mustRun(t, &loadgen.Runner{Caller: invoker(lb, map[string]any{"route": "cloud"})},
		loadgen.Config{Concurrency: 2, Requests: 20})
	if local, cloud := lb.Forced(); local != 0 || cloud != 20 {
		t.Errorf("forced local %d cloud %d, want 0 and 20", local, cloud)
	}
	if res.Report.Routes["cloud"].Count != 20 || res.Report.Reasons["forced"] != 20 {
		t.Errorf("routes %v reasons %v", res.Report.Routes, res.Report.Reasons)
	}
}

func TestRunCancelled(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{Delay: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := (&loadgen.Runner{Caller: invoker(lb, nil)}).Run(ctx, loadgen.Config{Rate: 50, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("cancelled run took %v", time.Since(start))
	}
	if res.Report.Errors != 0 {
		t.Errorf("calls cut by the run's end counted as errors: %v", res.Report.ErrorCodes)
	}
}

func TestRunTransportErrors(t *testing.T) {
	c := xmlrpc.NewClient("http://127.0.0.1:1/", nil)
	res := mustRun(t, &loadgen.Runner{Caller: &loadgen.InvokeCaller{Client: c, Param: "1"}},
		loadgen.Config{Concurrency: 1, Requests: 3})
	if res.Report.Errors != 3 || res.Report.ErrorCodes["transport"] != 3 {
		t.Errorf("errors %v", res.Report.ErrorCodes)
	}
}

func TestWritePNG(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{Delay: time.Millisecond, FaultEvery: 7})
	r := &loadgen.Runner{Caller: invoker(lb, nil), PoolSize: func(ctx context.Context) (int, bool, error) {
		return int(lb.Calls()%3) + 2, true, nil
	}}
	res := mustRun(t, r, loadgen.Config{Concurrency: 2, Duration: 600 * time.Millisecond, PollEvery: 50 * time.Millisecond})
	for _, tc := range []struct {
		name string
		res  *loadgen.Result
	}{{"full", res}, {"empty", &loadgen.Result{}}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := loadgen.WritePNG(&buf, tc.res, "test"); err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(&buf)
			if err != nil {
				t.Fatalf("decode png: %v", err)
			}
			if b := img.Bounds(); b.Dx() != loadgen.ChartWidth || b.Dy() != loadgen.ChartHeight {
				t.Errorf("png %dx%d, want %dx%d", b.Dx(), b.Dy(), loadgen.ChartWidth, loadgen.ChartHeight)
			}
		})
	}
}

func TestMethodMissing(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&xmlrpc.Fault{Code: -32601, String: `method "invoke" not found`}, true},
		{&xmlrpc.Fault{Code: 1, String: `<class 'Exception'>:method "invoke" is not supported`}, true},
		{&xmlrpc.Fault{Code: 7, String: "Method not found: invoke"}, true},
		{&xmlrpc.Fault{Code: -32500, String: "function raised: ValueError"}, false},
		{&xmlrpc.Fault{Code: -32000, String: "timeout"}, false},
		// The function's own words are never taken for the lb's.
		{&xmlrpc.Fault{Code: -32500, String: "KeyError: method not found"}, false},
		{&xmlrpc.Fault{Code: -32010, String: "no such function: method-not-found"}, false},
		{context.DeadlineExceeded, false},
	} {
		if got := loadgen.MethodMissing(tt.err); got != tt.want {
			t.Errorf("MethodMissing(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
