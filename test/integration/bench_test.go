package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// BenchmarkLBOverhead compares, in one run, a no-op handler-style function
// called through lb with the same worker called directly: one worker with
// WORKER_CONCURRENCY=4, so both paths reach the same Python runners.
// "serial" reports per-call latency (p50/p99 in µs); "parallel" the
// throughput of 16 callers through lb and of 4 directly (the worker answers
// busy beyond its 4), enough to keep all four runners busy on either path,
// and lb's CPU per call (user + system time of the lb process from
// /proc over the run, divided by the calls). The difference of the serial
// p50s is what lb adds.
//
// "floor-*" measures, in the same run and against the same worker, a bare
// forwarder in place of lb (forwarderMain): the CPU per call and the
// throughput left by the socket work that any proxy between caller and
// worker does on this machine, which bounds what lb can reach.
//
// SPILLWAY_BENCH_LB=/path/to/lb measures that binary instead of one built
// from this tree; SPILLWAY_BENCH_LB_BEFORE=/path/to/lb also measures that lb binary (an
// older build, say) on a stack of its own in the same run, as "before-*".
// SPILLWAY_BENCH_PROFILE=FILE writes a CPU profile of lb during lb/parallel
// (LB_PPROF); give a benchtime long enough to fill it.
func BenchmarkLBOverhead(b *testing.B) {
	type variant struct{ prefix, bin string }
	variants := []variant{{"", os.Getenv("SPILLWAY_BENCH_LB")}}
	if before := os.Getenv("SPILLWAY_BENCH_LB_BEFORE"); before != "" {
		variants = append(variants, variant{"before-", before})
	}
	profile := os.Getenv("SPILLWAY_BENCH_PROFILE")
	for _, v := range variants {
		env := map[string]string{
			"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "1", "WORKER_CONCURRENCY": "4",
			"OFFLOAD_POLICY": "never", "LOG_LEVEL": "warn",
		}
		if profile != "" && v.prefix == "" {
			env["LB_PPROF"] = "true"
		}
		s := newStack(b, stackOptions{env: env})
		s.lbBinary = v.bin
		s.publish(readExample(b, "noop_handler.py"), spillway.StyleHandler)
		s.startLB()
		ms := s.members()
		if len(ms) != 1 {
			b.Fatalf("members = %v, want 1", ms)
		}
		workerURL := "http://" + str(ms[0]["addr"]) + "/"
		lbPid := s.lb.cmd.Process.Pid
		if v.prefix == "" {
			floorURL, floorPid := startForwarder(b, str(ms[0]["addr"]))
			benchOverhead(b, "floor-", workerURL, floorURL, floorPid, "")
		}
		benchOverhead(b, v.prefix, workerURL, s.lbURL, lbPid, profile)
		s.stopLB()
	}
}

// startForwarder runs this test binary as the bare forwarder (forwardEnv)
// to the worker at addr and returns its URL and pid once it answers.
func startForwarder(b *testing.B, addr string) (string, int) {
	port := testutil.FreePort(b)
	listen := "127.0.0.1:" + strconv.Itoa(port)
	p := startProc(b, []string{forwardEnv + "=" + listen + " " + addr}, os.Args[0])
	b.Cleanup(func() { p.stop(syscall.SIGKILL, 5*time.Second) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
			return "http://" + listen + "/", p.cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			b.Fatalf("the forwarder does not listen on %s: %v\n%s", listen, err, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func benchOverhead(b *testing.B, prefix, workerURL, lbURL string, lbPid int, profile string) {
	hc := &http.Client{Transport: xmlrpc.NewTransport(), Timeout: 10 * time.Second}
	targets := []struct {
		name   string
		url    string
		method string
	}{
		{"direct", workerURL, "call_function"},
		{"lb", lbURL, "call_faas"},
	}
	if prefix == "floor-" {
		// The forwarder passes the worker's own method through.
		targets[1].method = "call_function"
	}
	for _, tt := range targets {
		c := xmlrpc.NewClient(tt.url, hc)
		call := func() error {
			var reply any
			return c.Call(context.Background(), tt.method, []any{"x"}, &reply)
		}
		for range 200 { // warm connections and runners
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(prefix+tt.name+"/serial", func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if err := call(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
		b.Run(prefix+tt.name+"/parallel", func(b *testing.B) {
			var stopProfile func()
			if profile != "" && prefix == "" && tt.name == "lb" {
				stopProfile = startProfile(b, lbURL, profile)
			}
			// 16 callers through lb; directly, the worker takes only
			// WORKER_CONCURRENCY=4 calls at once (it answers busy beyond),
			// so 4 callers keep its runners as busy as 16 would.
			b.SetParallelism(8) // 8 × GOMAXPROCS(2) = 16 callers
			if tt.name == "direct" {
				b.SetParallelism(2)
			}
			cpu0 := procCPU(b, lbPid)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			cpu := procCPU(b, lbPid) - cpu0
			if stopProfile != nil {
				stopProfile()
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			if tt.name == "lb" {
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "lb-cpu-µs/call")
			}
		})
	}
}

// procCPU is the user + system time pid has used (/proc/PID/stat).
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name (which may hold spaces) start
	// after the last ')': state is field 3, utime 14, stime 15.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// startProfile starts a CPU profile of lb (LB_PPROF=true) and returns a
// function that waits for it and writes it to path.
func startProfile(t testing.TB, lbURL, path string) func() {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(lbURL + "debug/pprof/profile?seconds=10")
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the profile begin
	return func() {
		if err := <-done; err != nil {
			t.Errorf("lb profile: %v", err)
		}
	}
}

// BenchmarkReplicas compares the throughput of one lb and of two replicas
// over the same pool (2 workers of a no-op function, WORKER_CONCURRENCY=4),
// 16 callers in all: through one lb, then half through each replica (each
// caller with a client over both URLs, as bin/client with a list).
func BenchmarkReplicas(b *testing.B) {
	s := newStack(b, stackOptions{env: map[string]string{
		"NUMBER_OF_SERVERS": "2", "MAX_SERVERS": "2", "WORKER_CONCURRENCY": "4",
		"OFFLOAD_POLICY": "never", "LOG_LEVEL": "warn",
	}})
	s.publish(readExample(b, "noop_handler.py"), spillway.StyleHandler)
	lb1 := s.startReplica("lb-1")
	lb2 := s.startReplica("lb-2")
	for _, tt := range []struct {
		name string
		urls [][]string // per caller parity
	}{
		{"one-lb", [][]string{{lb1.url}, {lb1.url}}},
		{"two-replicas", [][]string{{lb1.url, lb2.url}, {lb2.url, lb1.url}}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(8) // 8 × GOMAXPROCS(2) = 16 callers
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				fo, err := loadgen.NewFailover(tt.urls[next.Add(1)%2], xmlrpc.NewTransport())
				if err != nil {
					b.Error(err)
					return
				}
				c := xmlrpc.NewClient("http://unused/", &http.Client{Transport: fo, Timeout: 30 * time.Second})
				for pb.Next() {
					var reply any
					if err := c.Call(context.Background(), "call_faas", []any{"x"}, &reply); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
		})
	}
}
