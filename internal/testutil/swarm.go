package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SwarmLockFile serialises the tests of every package and process that
// use swarm mode: one turns it on, runs, and turns it off before the next.
var SwarmLockFile = filepath.Join(os.TempDir(), "spillway-swarm-test.lock")

// Swarm makes the Docker engine a one-node swarm manager for the rest of
// t: when swarm mode is off it is turned on (advertising 127.0.0.1) and,
// when t ends, however it ends, turned off again with docker_gwbridge
// removed, so that the engine is as before. A swarm that was already
// active is used and left on. Other Swarm callers wait until t is done.
func Swarm(t testing.TB) {
	t.Helper()
	Docker(t)
	unlock := lockSwarm(t)
	state := swarmState(t)
	switch state {
	case "active":
		t.Cleanup(unlock)
		return
	case "inactive":
	default:
		unlock()
		t.Fatalf("swarm mode is %q: want active or inactive", state)
	}
	t.Cleanup(func() {
		defer unlock()
		leaveSwarm(t)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "swarm", "init", "--advertise-addr", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("docker swarm init: %v\n%s", err, out)
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

// lockSwarm takes SwarmLockFile (waiting up to 10 minutes) and returns its
// release.
func lockSwarm(t testing.TB) func() {
	t.Helper()
	f, err := os.OpenFile(SwarmLockFile, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("open %s: %v", SwarmLockFile, err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("swarm tests of another package hold %s for 10 minutes: %v", SwarmLockFile, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
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
