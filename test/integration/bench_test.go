package integration

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// BenchmarkLBOverhead compares, in one run, a no-op handler-style function
// called through lb with the same worker called directly: one worker with
// WORKER_CONCURRENCY=4, so both paths reach the same Python runners.
// "serial" reports per-call latency (p50/p99 in µs); "parallel" the
// throughput of 16 callers, enough to keep all four runners busy on either
// path. The difference of the serial p50s is what lb adds.
func BenchmarkLBOverhead(b *testing.B) {
	s := newStack(b, stackOptions{env: map[string]string{
		"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "1", "WORKER_CONCURRENCY": "4",
		"OFFLOAD_POLICY": "never", "LOG_LEVEL": "warn",
	}})
	s.publish(readExample(b, "noop_handler.py"), spillway.StyleHandler)
	s.startLB()
	ms := s.members()
	if len(ms) != 1 {
		b.Fatalf("members = %v, want 1", ms)
	}
	workerURL := "http://" + str(ms[0]["addr"]) + "/"

	hc := &http.Client{Transport: xmlrpc.NewTransport(), Timeout: 10 * time.Second}
	targets := []struct {
		name   string
		url    string
		method string
	}{
		{"direct", workerURL, "call_function"},
		{"lb", s.lbURL, "call_faas"},
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
		b.Run(tt.name+"/serial", func(b *testing.B) {
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
		b.Run(tt.name+"/parallel", func(b *testing.B) {
			b.SetParallelism(8) // 8 × GOMAXPROCS(2) = 16 callers
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
		})
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
