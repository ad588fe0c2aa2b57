package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/runner"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/workerapi"
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

// benchWorker serves one example function in process: the runners, the
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
	runners, err := runner.New(runner.Config{Python: py, ShimPath: shim, FunctionPath: fn,
		Style: style, Concurrency: 1, Timeout: 10 * time.Second, MaxResultBytes: 6 << 20, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runners.Open(ctx); err != nil {
		b.Fatal(err)
	}
	svc := &service{runners: runners, cfg: workerapi.Env{Style: style, MaxRequestBytes: 1 << 20}, slots: make(chan struct{}, 1)}
	srv := httptest.NewServer(svc.handler(log))
	b.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = runners.Close(ctx)
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

// BenchmarkWorkerVsSpawn runs real worker processes (the built binary, as a
// container runs it) and interleaves, per iteration, 1 spawn, then for each
// script-style worker (default, and reuse: FUNCTION_REUSE_PROCESS=1, as
// addfaas --reuse-process makes it) 4 back-to-back calls and 4 calls after
// 5 ms idle, and
// 40 handler-style calls, so all see the same machine load; it reports each
// p50 and the ratios spawn-p50 / worker-p50. Then, in the same run, the CPU
// of each script worker's process tree per back-to-back call (/proc
// accounting: user + system of the worker, its runners and their reaped
// children) over bursts of calls, alternated with bursts of bare fork+exit
// of the script zygote in its serving state (zygote.py --fork-cost), and the
// ratio of the two.
//
// "pinned" is the default script worker run on one CPU (taskset), beside
// the same worker free to use every CPU: on a paravirtualised host the
// copy-on-write faults of a process tree that spans CPUs each flush the
// other CPUs' TLBs through the hypervisor.
//
// SPILLWAY_BENCH_WORKER_BEFORE names an older worker binary to measure the
// same way (metrics before-*), and SPILLWAY_BENCH_SHIM_BEFORE its handler.py,
// whose warm runner's bare fork+exit is then measured too.
func BenchmarkWorkerVsSpawn(b *testing.B) {
	py := testutil.Python(b)
	root := testutil.RepoRoot(b)
	spawnFn := filepath.Join(root, "examples", "noop.py")
	bin := testutil.BuildBinary(b, "worker")
	handler, hw := benchProcess(b, bin, "noop_handler.py", "FUNCTION_STYLE=handler")
	scripts := []*benchScript{{name: "script"}, {name: "reuse", env: []string{"FUNCTION_REUSE_PROCESS=1"}}}
	if runtime.NumCPU() > 1 {
		// The whole worker on one CPU, as a container given one CPU by a
		// cpuset would run it (WORKER_CPUS limits time, not CPUs).
		scripts = append(scripts, &benchScript{name: "pinned", bin: onOneCPU(b, bin)})
	}
	if before := os.Getenv("SPILLWAY_BENCH_WORKER_BEFORE"); before != "" {
		scripts = append(scripts, &benchScript{name: "before-script", bin: before})
	}
	for _, s := range scripts {
		s.c, s.w = benchProcess(b, cmp.Or(s.bin, bin), "noop.py", append([]string{"FUNCTION_STYLE=script"}, s.env...)...)
	}
	var hl, pl []time.Duration
	b.ResetTimer()
	for range b.N {
		pl = append(pl, spawnOnce(b, py, spawnFn))
		for _, s := range scripts {
			for range 4 {
				s.back = append(s.back, callOnce(b, s.c))
			}
			for range 4 {
				time.Sleep(5 * time.Millisecond)
				s.idle = append(s.idle, callOnce(b, s.c))
			}
		}
		for range 40 {
			hl = append(hl, callOnce(b, handler))
		}
	}
	b.StopTimer()
	h, p := percentile(hl, 0.5), percentile(pl, 0.5)
	b.ReportMetric(float64(h.Microseconds()), "handler-p50-µs")
	b.ReportMetric(float64(percentile(hl, 0.99).Microseconds()), "handler-p99-µs")
	b.ReportMetric(float64(p.Microseconds()), "spawn-p50-µs")
	b.ReportMetric(float64(p)/float64(h), "handler-x")
	for _, s := range scripts {
		back, idle := percentile(s.back, 0.5), percentile(s.idle, 0.5)
		b.ReportMetric(float64(back.Microseconds()), s.name+"-p50-µs")
		b.ReportMetric(float64(percentile(s.back, 0.99).Microseconds()), s.name+"-p99-µs")
		b.ReportMetric(float64(idle.Microseconds()), s.name+"-idle-p50-µs")
		b.ReportMetric(float64(p)/float64(back), s.name+"-x")
		b.ReportMetric(float64(p)/float64(idle), s.name+"-idle-x")
	}

	// CPU: rounds of a burst of back-to-back calls to each script worker
	// (the worker tree's CPU) and of bare forks of the zygote (and of the
	// older runner), alternated so that all see the same load; then handler
	// calls for comparison.
	const rounds, burst, forks = 6, 100, 300
	zygote := filepath.Join(root, "internal", "lambdawrap", "zygote.py")
	shimBefore := os.Getenv("SPILLWAY_BENCH_SHIM_BEFORE")
	var forkCPU, forkBefore time.Duration
	for range rounds {
		for _, s := range scripts {
			pid := s.w.cmd.Process.Pid
			tree, own := treeCPU(b, pid), ownCPU(b, pid)
			for range burst {
				callOnce(b, s.c)
			}
			s.cpu += treeCPU(b, pid) - tree
			s.goCPU += ownCPU(b, pid) - own
		}
		forkCPU += forkCost(b, exec.Command(py, zygote, "--fork-cost", strconv.Itoa(forks), spawnFn, "2", "6291456"))
		if shimBefore != "" {
			forkBefore += forkCost(b, exec.Command(py, "-c", oldRunnerForkCost, shimBefore, spawnFn, strconv.Itoa(forks)))
		}
	}
	tree := treeCPU(b, hw.cmd.Process.Pid)
	for range 5 * burst {
		callOnce(b, handler)
	}
	b.ReportMetric(float64(((treeCPU(b, hw.cmd.Process.Pid) - tree) / (5 * burst)).Microseconds()), "handler-cpu-µs/call")
	fork := forkCPU / rounds
	b.ReportMetric(float64(fork.Microseconds()), "fork-exit-cpu-µs")
	if shimBefore != "" {
		b.ReportMetric(float64((forkBefore / rounds).Microseconds()), "before-fork-exit-cpu-µs")
	}
	for _, s := range scripts {
		perCall := s.cpu / (rounds * burst)
		b.ReportMetric(float64(perCall.Microseconds()), s.name+"-cpu-µs/call")
		b.ReportMetric(float64((s.goCPU / (rounds * burst)).Microseconds()), s.name+"-go-cpu-µs/call")
		den := fork // against the fork of the runner it runs on
		if s.name == "before-script" && shimBefore != "" {
			den = forkBefore / rounds
		}
		b.ReportMetric(float64(perCall)/float64(den), s.name+"-cpu/fork")
	}
}

// onOneCPU returns a program that runs bin with its CPU affinity set to
// the last CPU (taskset execs bin, so the pid is bin's).
func onOneCPU(b *testing.B, bin string) string {
	b.Helper()
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		b.Fatalf("taskset (util-linux) for the pinned worker: %v", err)
	}
	wrapper := filepath.Join(b.TempDir(), "worker-on-one-cpu")
	script := fmt.Sprintf("#!/bin/sh\nexec %s -c %d %s \"$@\"\n", taskset, runtime.NumCPU()-1, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	return wrapper
}

// benchScript is one script-style worker under BenchmarkWorkerVsSpawn.
type benchScript struct {
	name       string
	bin        string   // the worker binary; empty: this tree's
	env        []string // beyond FUNCTION_STYLE=script
	c          *xmlrpc.Client
	w          *worker
	back, idle []time.Duration
	cpu, goCPU time.Duration // the tree's and the Go process's own, over the bursts
}

// oldRunnerForkCost measures a bare fork+exit of a runner of the shim
// before the script zygote: handler.py in worker mode, with its spare
// script child forked (argv: shim, function, count).
const oldRunnerForkCost = `import os, sys
shim, fn, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
import argparse, gc
ns = {"__name__": "spillway_shim", "__file__": shim}
stderr, sys.stderr = sys.stderr, open(os.devnull, "w")
exec(compile(open(shim).read(), shim, "exec"), ns)
sys.stderr = stderr
f = ns["Function"](fn, "script", "handler", close_fds=(), prefork=True)
gc.collect()
gc.freeze()
f.after_call()
t0 = os.times()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
t1 = os.times()
print("fork_exit_cpu_us=%.1f" % ((sum(t1[:4]) - sum(t0[:4])) / n * 1e6))
os.kill(f._spare[0], 9)
`

// benchProcess starts the worker binary serving examples/NAME with env and
// returns a warm client and the worker.
func benchProcess(b *testing.B, bin, example string, env ...string) (*xmlrpc.Client, *worker) {
	b.Helper()
	code, err := os.ReadFile(filepath.Join(testutil.RepoRoot(b), "examples", example))
	if err != nil {
		b.Fatal(err)
	}
	w := startWorker(b, bin, string(code), append(env, "LOG_LEVEL=warn")...)
	c := xmlrpc.NewClient(w.url+"/RPC2", nil)
	for range 20 { // warm the runner and the connection
		callOnce(b, c)
	}
	return c, w
}

// treeCPU is the user + system time of pid, its descendants, and the
// children they reaped (/proc/PID/stat utime, stime, cutime, cstime).
func treeCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	total, err := procCPU(pid, true)
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// procCPU is treeCPU that returns its error; a descendant that is gone
// by the time it is read counts as nothing (its parent reaped it).
func procCPU(pid int, withChildren bool) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	fields := []int{11, 12} // utime stime
	if withChildren {
		fields = append(fields, 13, 14) // cutime cstime
	}
	var ticks int64
	for _, i := range fields {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	total := time.Duration(ticks) * time.Second / 100 // USER_HZ
	if !withChildren {
		return total, nil
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		kids, _ := os.ReadFile(t)
		for _, k := range strings.Fields(string(kids)) {
			if c, err := strconv.Atoi(k); err == nil {
				sub, _ := procCPU(c, true)
				total += sub
			}
		}
	}
	return total, nil
}

// ownCPU is the user + system time of pid alone.
func ownCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	total, err := procCPU(pid, false)
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// forkCost runs a fork-cost command and returns its fork_exit_cpu_us
// figure: the CPU of one bare fork+exit.
func forkCost(b *testing.B, cmd *exec.Cmd) time.Duration {
	b.Helper()
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s: %v", cmd, err)
	}
	for _, kv := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(kv, "fork_exit_cpu_us="); ok {
			us, _ := strconv.ParseFloat(v, 64)
			return time.Duration(us * float64(time.Microsecond))
		}
	}
	b.Fatalf("%s: no fork_exit_cpu_us in %q", cmd, out)
	return 0
}
