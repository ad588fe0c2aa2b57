package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/testutil"
)

// TestSwarmStack runs scripts/e2e-stack.sh: with no swarm active, make up
// without SWARM_INIT stops and says so; POOL_BACKEND=swarm SWARM_INIT=1
// LB_REPLICAS=2 make up deploys the stack with docker stack deploy (on a
// one-node swarm it starts when none is active), a call through each lb
// answers (call_faas from bin/client and from Python's xmlrpc.client, curl
// -d 20 /function/faas), a worker reaches no host service,
// the secrets are Swarm secrets in no service spec, lb's port is published
// in host mode and wants the token, then make down leaves no service,
// config, secret, network or container of the stack or its pool (a worker
// service and config like the swarm backend's included), and the
// swarm is left again when the test started it.
func TestSwarmStack(t *testing.T) {
	for _, img := range []string{testutil.Image("worker"), testutil.Image("lb"), testutil.Image("localcloud")} {
		testutil.DockerImage(t, img)
	}
	testutil.Require(t, exec.Command("docker", "stack", "--help").Run() == nil, "the docker client's stack command")
	_, err := exec.LookPath("flock")
	testutil.Require(t, err == nil, "flock (util-linux)")

	root := testutil.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// The flags of make build: the same binaries, so the images stay cached.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", "bin/", "./cmd/...")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}

	cmd := exec.CommandContext(ctx, "bash", filepath.Join("scripts", "e2e-stack.sh"))
	cmd.Dir = root
	cmd.Env = os.Environ()
	// On the deadline the script gets SIGTERM, so that its trap still takes
	// the stack down and leaves the swarm it started.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 2 * time.Minute
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("e2e-stack.sh (%s):\n%s", time.Since(start).Round(time.Second), out)
	if err != nil {
		t.Fatalf("swarm stack end-to-end failed: %v", err)
	}
}
