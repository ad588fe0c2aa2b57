package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/runner"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// Benchmarks of the per-call overhead of the worker against the reference's
// way, spawning `python3 function.py ARG` per call, with Debian's
// /usr/bin/python3 and the no-op functions in examples/:
//
//	go test -run '^$' -bench . -benchtime 3s ./cmd/worker
//
// BenchmarkWorkerVsSpawn measures all three in one loop and reports p50s and
// the speed-up ratios (handler-x, script-x) as metrics.

// benchWorker serves one example function in process: runner pool, the
// worker's XML-RPC handler, an httptest server, and an XML-RPC client.
func benchWorker(b *testing.B, style spillway.Style, example string) *xmlrpc.Client {
	b.Helper()
	py := testutil.Python(b)
	fn := filepath.Join(testutil.RepoRoot(b), "examples", example)
	shim, err := lambdawrap.WriteShim(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool, err := runner.New(runner.Config{Python: py, ShimPath: shim, FunctionPath: fn,
		Style: style, Concurrency: 1, Timeout: 10 * time.Second, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pool.Open(ctx); err != nil {
		b.Fatal(err)
	}
	svc := &service{pool: pool, cfg: workerConfig{Style: style, MaxRequestBytes: 1 << 20}}
	srv := httptest.NewServer(svc.handler(log))
	b.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pool.Close(ctx)
	})
	c := xmlrpc.NewClient(srv.URL+"/RPC2", nil)
	for range 20 { // warm the runner and the connection
		callOnce(b, c)
	}
	return c
}

func callOnce(b *testing.B, c *xmlrpc.Client) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	begin := time.Now()
	var reply any
	if err := c.Call(ctx, "call_function", []any{"1"}, &reply); err != nil {
		b.Fatalf("call_function: %v", err)
	}
	return time.Since(begin)
}

// spawnOnce is the reference's way: a new interpreter per call.
func spawnOnce(b *testing.B, py, fn string) time.Duration {
	begin := time.Now()
	out, err := exec.Command(py, fn, "1").Output()
	if err != nil || string(out) != "1\n" {
		b.Fatalf("spawn %s %s: %q, %v", py, fn, out, err)
	}
	return time.Since(begin)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func reportPercentiles(b *testing.B, prefix string, d []time.Duration) {
	b.ReportMetric(float64(percentile(d, 0.50).Microseconds()), prefix+"p50-µs")
	b.ReportMetric(float64(percentile(d, 0.99).Microseconds()), prefix+"p99-µs")
}

func BenchmarkCallFunctionHandler(b *testing.B) {
	c := benchWorker(b, spillway.StyleHandler, "noop_handler.py")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		lat = append(lat, callOnce(b, c))
	}
	b.StopTimer()
	reportPercentiles(b, "", lat)
}

func BenchmarkCallFunctionScript(b *testing.B) {
	c := benchWorker(b, spillway.StyleScript, "noop.py")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		lat = append(lat, callOnce(b, c))
	}
	b.StopTimer()
	reportPercentiles(b, "", lat)
}

func BenchmarkSpawnPython(b *testing.B) {
	py := testutil.Python(b)
	fn := filepath.Join(testutil.RepoRoot(b), "examples", "noop.py")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		lat = append(lat, spawnOnce(b, py, fn))
	}
	b.StopTimer()
	reportPercentiles(b, "", lat)
}

// BenchmarkWorkerVsSpawn interleaves, per iteration, 1 spawn, 4 back-to-back
// script-style calls, 4 script-style calls after 5 ms idle (the runner has its
// spare child ready), and 40 handler-style calls, so all see the same machine
// load, and reports each p50 and the ratios spawn-p50 / worker-p50.
func BenchmarkWorkerVsSpawn(b *testing.B) {
	py := testutil.Python(b)
	spawnFn := filepath.Join(testutil.RepoRoot(b), "examples", "noop.py")
	handler := benchWorker(b, spillway.StyleHandler, "noop_handler.py")
	script := benchWorker(b, spillway.StyleScript, "noop.py")
	var hl, sl, il, pl []time.Duration
	b.ResetTimer()
	for range b.N {
		pl = append(pl, spawnOnce(b, py, spawnFn))
		for range 4 {
			sl = append(sl, callOnce(b, script))
		}
		for range 4 {
			time.Sleep(5 * time.Millisecond)
			il = append(il, callOnce(b, script))
		}
		for range 40 {
			hl = append(hl, callOnce(b, handler))
		}
	}
	b.StopTimer()
	h, s, p := percentile(hl, 0.5), percentile(sl, 0.5), percentile(pl, 0.5)
	b.ReportMetric(float64(h.Microseconds()), "handler-p50-µs")
	b.ReportMetric(float64(percentile(hl, 0.99).Microseconds()), "handler-p99-µs")
	b.ReportMetric(float64(s.Microseconds()), "script-p50-µs")
	b.ReportMetric(float64(percentile(sl, 0.99).Microseconds()), "script-p99-µs")
	b.ReportMetric(float64(percentile(il, 0.5).Microseconds()), "script-idle-p50-µs")
	b.ReportMetric(float64(p.Microseconds()), "spawn-p50-µs")
	b.ReportMetric(float64(p)/float64(h), "handler-x")
	b.ReportMetric(float64(p)/float64(s), "script-x")
	b.ReportMetric(float64(p)/float64(percentile(il, 0.5)), "script-idle-x")
}
