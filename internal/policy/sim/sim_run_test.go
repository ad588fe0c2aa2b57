package sim

import (
	"os"
	"strings"
	"testing"
)

// TestCLI runs the simulator command from go test while `lb sim` is not
// wired: SIM_ARGS="--trace step" go test -run TestCLI -v ./internal/policy/sim
func TestCLI(t *testing.T) {
	args := os.Getenv("SIM_ARGS")
	if args == "" {
		t.Skip("set SIM_ARGS to run the simulator from go test")
	}
	if code := Main(strings.Fields(args), os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
