package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// swarmLock is the lock file every test that needs the swarm holds shared
// while it uses it (scripts/e2e-stack.sh does the same): whoever starts the
// swarm takes it exclusively before leaving, so the swarm goes when its last
// user is done and never under another.
const swarmLock = "/tmp/spillway-swarm.lock"

// useSwarm makes sure the engine is in a swarm for the rest of tb. When none
// is active it starts a one-node swarm (--advertise-addr 127.0.0.1) and
// leaves it in tb's cleanup, removing docker_gwbridge, so the engine is as it
// was; a swarm that was active before is used and left on.
func useSwarm(tb testing.TB) {
	tb.Helper()
	f, err := os.OpenFile(swarmLock, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		tb.Fatal(err)
	}
	if err := flockWithin(f, syscall.LOCK_EX, 5*time.Minute); err != nil {
		f.Close()
		tb.Fatalf("swarm lock %s: %v", swarmLock, err)
	}
	started := false
	tb.Cleanup(func() {
		defer f.Close()
		if !started {
			return
		}
		if err := flockWithin(f, syscall.LOCK_EX, 5*time.Minute); err != nil {
			tb.Logf("swarm lock: %v; leaving the swarm anyway", err)
		}
		leaveSwarm(tb)
	})
	if swarmState(tb) != "active" {
		out, err := docker(tb, "swarm", "init", "--advertise-addr", "127.0.0.1")
		if err != nil {
			tb.Fatalf("docker swarm init: %v\n%s", err, out)
		}
		started = true
		tb.Log("started a one-node swarm; it is left when the test ends")
	}
	// Shared from here: other users may join.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		tb.Fatal(err)
	}
}

func leaveSwarm(tb testing.TB) {
	tb.Helper()
	if out, err := docker(tb, "swarm", "leave", "--force"); err != nil {
		tb.Errorf("docker swarm leave --force: %v\n%s", err, out)
	}
	for i := 0; i < 10; i++ {
		if _, err := docker(tb, "network", "inspect", "docker_gwbridge"); err != nil {
			break
		}
		if _, err := docker(tb, "network", "rm", "docker_gwbridge"); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if s := swarmState(tb); s == "active" {
		tb.Errorf("the swarm is still %s after docker swarm leave", s)
	}
}

func flockWithin(f *os.File, how int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("still held by another user after " + d.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func swarmState(tb testing.TB) string {
	tb.Helper()
	out, err := docker(tb, "info", "-f", "{{.Swarm.LocalNodeState}}")
	if err != nil {
		tb.Fatalf("docker info: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

func docker(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return string(out), err
}
