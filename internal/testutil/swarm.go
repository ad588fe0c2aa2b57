package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SwarmLockFile is the lock every user of swarm mode holds shared while it
// needs the swarm (test/e2e and scripts/e2e-stack.sh hold the same one):
// whoever turns swarm mode on takes it exclusively before leaving, so the
// swarm goes when its last user is done and never under another.
const SwarmLockFile = "/tmp/spillway-swarm.lock"

// Swarm makes the Docker engine a one-node swarm manager for the rest of
// t: when swarm mode is off it is turned on (advertising 127.0.0.1) and,
// when t ends, however it ends, turned off again once no other user holds
// SwarmLockFile, with docker_gwbridge removed, so that the engine is as
// before. A swarm that was already active is used and left on.
func Swarm(t testing.TB) {
	t.Helper()
	Docker(t)
	f, err := os.OpenFile(SwarmLockFile, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("open %s: %v", SwarmLockFile, err)
	}
	if err := flockWithin(f, syscall.LOCK_EX, 5*time.Minute); err != nil {
		f.Close()
		t.Fatalf("swarm lock %s: %v", SwarmLockFile, err)
	}
	started := false
	t.Cleanup(func() {
		defer f.Close()
		if !started {
			return
		}
		if err := flockWithin(f, syscall.LOCK_EX, 5*time.Minute); err != nil {
			t.Logf("swarm lock: %v; leaving the swarm anyway", err)
		}
		leaveSwarm(t)
	})
	switch state := swarmState(t); state {
	case "active":
	case "inactive":
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "docker", "swarm", "init", "--advertise-addr", "127.0.0.1").CombinedOutput(); err != nil {
			t.Fatalf("docker swarm init: %v\n%s", err, out)
		}
		started = true
	default:
		t.Fatalf("swarm mode is %q: want active or inactive", state)
	}
	// Shared from here: other users may join.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatalf("swarm lock %s: %v", SwarmLockFile, err)
	}
}

func swarmState(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.Swarm.LocalNodeState}}").Output()
	if err != nil {
		t.Fatalf("docker info: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// leaveSwarm leaves the swarm and removes the bridge swarm mode made.
func leaveSwarm(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "swarm", "leave", "--force").CombinedOutput(); err != nil {
		t.Errorf("docker swarm leave --force: %v\n%s", err, out)
	}
	for range 20 {
		out, err := exec.CommandContext(ctx, "docker", "network", "rm", "docker_gwbridge").CombinedOutput()
		if err == nil || strings.Contains(string(out), "not found") || strings.Contains(string(out), "No such network") {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("remove docker_gwbridge: %v\n%s", err, out)
			return
		case <-time.After(250 * time.Millisecond):
		}
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
			return fmt.Errorf("still held by another user after %s", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// DockerRun runs docker with args and returns its trimmed stdout, failing
// t with the output on error.
func DockerRun(t testing.TB, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
