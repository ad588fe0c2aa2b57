package pysource_test

import (
	"context"
	"testing"

	"github.com/spillway-faas/spillway/internal/pysource"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// BenchmarkCheck measures one validation: a python3 -I -S subprocess that
// parses and compiles the source.
func BenchmarkCheck(b *testing.B) {
	c := pysource.Checker{Python: testutil.Python(b)}
	src := []byte("import sys\n\ndef fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n\nprint(fib(int(sys.argv[1])))\n")
	for b.Loop() {
		if _, err := c.Check(context.Background(), src, ""); err != nil {
			b.Fatal(err)
		}
	}
}
