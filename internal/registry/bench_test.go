package registry_test

import (
	"context"
	"testing"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
)

func benchStore(b *testing.B) *registry.Store {
	r := testutil.StartRedis(b)
	s, err := registry.Dial(context.Background(), r.Addr, registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkPublish measures one atomic publish (version, hash, message).
func BenchmarkPublish(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	fn := spillway.Function{Name: "bench", Code: scriptCode, Style: spillway.StyleScript}
	for b.Loop() {
		if _, err := s.Publish(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet measures reading a whole record, as lb does on each update.
func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	if _, err := s.Publish(ctx, spillway.Function{Name: "bench", Code: scriptCode, Style: spillway.StyleScript}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Get(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
