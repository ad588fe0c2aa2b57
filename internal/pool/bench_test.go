package pool

import (
	"context"
	"log/slog"
	"testing"
)

// BenchmarkAcquireRelease is the pool's own cost per call: lock, pick,
// lease, release, with no I/O.
func BenchmarkAcquireRelease(b *testing.B) {
	_, fb := newFakeCluster(b, 64)
	p := New(fb, testConfig(4, 4, 64))
	p.Logger = slog.New(slog.DiscardHandler)
	ctx := context.Background()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		b.Fatal(err)
	}
	defer p.Close(ctx)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, err := p.Acquire(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			l.Release()
		}
	})
}

// BenchmarkLeaseCall compares a call through a lease with the same
// call_function made directly to the worker (workerapi.Client), on loopback.
func BenchmarkLeaseCall(b *testing.B) {
	_, fb := newFakeCluster(b, 64)
	p := New(fb, testConfig(1, 1, 64))
	p.Logger = slog.New(slog.DiscardHandler)
	ctx := context.Background()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		b.Fatal(err)
	}
	defer p.Close(ctx)
	b.Run("direct", func(b *testing.B) {
		client := p.connect(p.Snapshot().Members[0].Addr)
		defer client.CloseIdleConnections()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.Call(ctx, "x"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lease", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l, err := p.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := l.Call(ctx, "x"); err != nil {
				b.Fatal(err)
			}
			l.Release()
		}
	})
}
