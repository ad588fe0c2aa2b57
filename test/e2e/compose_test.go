// Package e2e brings the whole compose stack up the way a user does (make up),
// drives it with the client, breaks it, updates it, and tears it down.
package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/testutil"
)

// TestComposeStack runs scripts/e2e-compose.sh: make up on a pool name and
// ports of its own, client bench with enough load to grow the pool and
// overflow to localcloud, a worker killed and the function updated
// mid-stream, checks of the report (both routes, zero errors, the pool grew,
// every worker on the new version), then make down with nothing left.
func TestComposeStack(t *testing.T) {
	for _, img := range []string{testutil.Image("worker"), testutil.Image("lb"), testutil.Image("localcloud")} {
		testutil.DockerImage(t, img)
	}
	_, err := exec.LookPath("docker-compose")
	if err != nil {
		err = exec.Command("docker", "compose", "version").Run()
	}
	testutil.Require(t, err == nil, "docker compose or docker-compose")

	root := testutil.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", "bin/", "./cmd/...")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}

	cmd := exec.CommandContext(ctx, "bash", filepath.Join("scripts", "e2e-compose.sh"))
	cmd.Dir = root
	// The stack's settings come from the script (own POOL_NAME and ports),
	// never from a developer's .env overrides of those.
	cmd.Env = append(os.Environ(), "E2E_DURATION=20s")
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("e2e-compose.sh:\n%s", out)
	if err != nil {
		t.Fatalf("compose end-to-end failed: %v", err)
	}
}
