package sim

import (
	"os"
	"testing"
)

// TestMain lets `go test -run TestCLI -args ...` act as the command while
// the lb is not wired yet: SIM_ARGS="--trace bursts" go test -run TestCLI.
func TestCLI(t *testing.T) {
	args := os.Getenv("SIM_ARGS")
	if args == "" {
		t.Skip("set SIM_ARGS to run the simulator from go test")
	}
	if code := Main(splitArgs(args), os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
