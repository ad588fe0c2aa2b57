package pool_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/docker"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/testutil"
)

var workerImage = testutil.Image("worker")

func scriptFunction(version int64, code string) spillway.Function {
	sum := sha256.Sum256([]byte(code))
	return spillway.Function{Name: "faas", Code: code, Style: spillway.StyleScript, SHA256: hex.EncodeToString(sum[:]), Version: version}
}

// openDocker opens a backend on a unique pool and network and removes
// everything of that pool when the test ends.
func openDocker(t *testing.T) *docker.Backend {
	t.Helper()
	testutil.DockerImage(t, workerImage)
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := "spwpool-" + hex.EncodeToString(r[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := docker.Open(ctx, docker.Config{Pool: name, Image: workerImage, Network: name + "-net",
		Address: docker.AddressAuto, ServerPort: 8001, Memory: 256 << 20, PidsLimit: 256}, nil)
	if err != nil {
		t.Fatalf("docker.Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ws, err := b.List(ctx)
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, w := range ws {
			t.Errorf("container %s left behind", w.Name)
			_ = b.Remove(ctx, w.ID)
		}
		if err := b.RemoveNetwork(ctx); err != nil {
			t.Errorf("cleanup network: %v", err)
		}
		b.Close()
	})
	return b
}

// callWithRetry is what the gateway does: a worker failure is retried on
// another member.
func callWithRetry(ctx context.Context, p *pool.Pool, param string) (any, error) {
	var err error
	for range 3 {
		var l spillway.Lease
		l, err = p.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		var v any
		v, err = l.Call(ctx, param)
		l.Release()
		if !errors.Is(err, spillway.ErrWorkerFailed) {
			return v, err
		}
	}
	return nil, err
}

func TestDockerKillDuringStream(t *testing.T) {
	b := openDocker(t)
	fn := scriptFunction(1, "import sys\nprint('ok', sys.argv[1])\n")
	p := pool.New(b, pool.Config{Min: 3, Max: 3, Concurrency: 1, LocalTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := p.Open(ctx, fn); err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()

	victim := p.Snapshot().Members[1]
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				param := fmt.Sprintf("%d-%d", i, n)
				v, err := callWithRetry(cctx, p, param)
				ccancel()
				calls.Add(1)
				if err != nil || v != "ok "+param+"\n" {
					failures.Add(1)
					t.Errorf("call %s = %q, %v", param, v, err)
				}
			}
		})
	}
	time.Sleep(time.Second)
	killed := time.Now()
	if out, err := exec.CommandContext(ctx, "docker", "kill", victim.ID).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	// Back to size, the victim gone.
	deadline := time.Now().Add(15 * time.Second)
	var back time.Duration
	for time.Now().Before(deadline) {
		s := p.Snapshot()
		victimIn := false
		for _, m := range s.Members {
			victimIn = victimIn || m.ID == victim.ID
		}
		if s.Ready == 3 && !victimIn {
			back = time.Since(killed)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // keep calling on the healed pool
	close(stop)
	wg.Wait()
	if back == 0 {
		t.Fatalf("pool not back to 3 ready within 15s: %+v", p.Snapshot())
	}
	s := p.Snapshot()
	t.Logf("%d calls, %d failed; pool back to size %v after the kill; counters %+v", calls.Load(), failures.Load(), back.Round(time.Millisecond), s.Counters)
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls failed", failures.Load(), calls.Load())
	}
	if s.Counters.Failed != 1 || s.Counters.Replacements != 1 {
		t.Errorf("counters %+v, want one failure and one replacement", s.Counters)
	}
	ws, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 3 {
		t.Errorf("%d containers, want 3 (the killed one removed)", len(ws))
	}
}

func TestDockerAdoptAfterCrash(t *testing.T) {
	b := openDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fn := scriptFunction(2, "import sys\nprint('v2', sys.argv[1])\n")
	old := scriptFunction(1, "import sys\nprint('v1', sys.argv[1])\n")

	// What a killed lb leaves: two workers of the current version, one of
	// an old version, and one current worker that died.
	spec := pool.WorkerSpec{Function: fn, Concurrency: 1, LocalTimeout: 5 * time.Second}
	var keep []string
	for range 2 {
		w, err := b.Start(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, w.ID)
	}
	if _, err := b.Start(ctx, pool.WorkerSpec{Function: old, Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	dead, err := b.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "docker", "kill", dead.ID).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	// Give the two keepers time to warm up, as they had in the earlier run.
	time.Sleep(2 * time.Second)

	p := pool.New(b, pool.Config{Min: 2, Max: 4, Concurrency: 1})
	if err := p.Open(ctx, fn); err != nil {
		t.Fatalf("Open: %v", err)
	}
	s := p.Snapshot()
	var ids []string
	for _, m := range s.Members {
		ids = append(ids, m.ID)
	}
	if s.Counters.Adopted != 2 || s.Counters.Started != 0 || s.Ready != 2 || strings.Join(ids, ",") != strings.Join(keep, ",") && strings.Join(ids, ",") != keep[1]+","+keep[0] {
		t.Fatalf("adopted %v (counters %+v), want exactly %v", ids, s.Counters, keep)
	}
	ws, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 {
		t.Fatalf("%d containers after adoption, want 2: %+v", len(ws), ws)
	}
	if v, err := callWithRetry(ctx, p, "x"); err != nil || v != "v2 x\n" {
		t.Fatalf("call = %q, %v", v, err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if ws, err := b.List(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("after Close: %+v, %v", ws, err)
	}
}

func TestDockerRollWithoutFailedCalls(t *testing.T) {
	b := openDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	v1 := scriptFunction(1, "import sys\nprint('v1', sys.argv[1])\n")
	v2 := scriptFunction(2, "import sys\nprint('v2', sys.argv[1])\n")
	p := pool.New(b, pool.Config{Min: 2, Max: 2, Concurrency: 1})
	if err := p.Open(ctx, v1); err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer p.Close(ctx)
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := callWithRetry(ctx, p, "r")
				calls.Add(1)
				if err != nil || (v != "v1 r\n" && v != "v2 r\n") {
					failures.Add(1)
					t.Errorf("call during roll = %q, %v", v, err)
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	if err := p.Roll(ctx, v2); err != nil {
		t.Fatalf("Roll: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls failed during the roll", failures.Load(), calls.Load())
	}
	var ws []pool.Worker
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		if ws, err = b.List(ctx); err != nil {
			t.Fatal(err)
		}
		if len(ws) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range ws {
		if w.SHA256 != v2.SHA256 {
			t.Errorf("container %s still on %s", w.Name, w.SHA256)
		}
	}
	if len(ws) != 2 {
		t.Errorf("%d containers after the roll, want 2", len(ws))
	}
	t.Logf("%d calls during the roll, none failed", calls.Load())
}

// TestDockerDeathWatch: with health probes off and no calls, a killed
// container still leaves rotation at once (Docker's die event) and is
// replaced.
func TestDockerDeathWatch(t *testing.T) {
	b := openDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := pool.New(b, pool.Config{Min: 1, Max: 1, Concurrency: 1, HealthInterval: time.Hour})
	if err := p.Open(ctx, scriptFunction(1, "print('x')\n")); err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer p.Close(ctx)
	victim := p.Snapshot().Members[0]
	killed := time.Now()
	if out, err := exec.CommandContext(ctx, "docker", "kill", victim.ID).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	for {
		s := p.Snapshot()
		if len(s.Members) == 0 || s.Members[0].ID != victim.ID || s.Members[0].State != pool.StateReady {
			break
		}
		if time.Since(killed) > 3*time.Second {
			t.Fatalf("killed member still ready after 3s: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ejected := time.Since(killed)
	if err := p.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("ejected %v after the kill, replaced after %v", ejected.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
}

// TestDockerContainsHostileFunction: a call that fork-bombs or allocates
// without bound fails (or times out) inside its hardened worker, and the
// pool keeps serving normal calls.
func TestDockerContainsHostileFunction(t *testing.T) {
	b := openDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	code := `import os, sys
arg = sys.argv[1]
if arg == "forkbomb":
    while True:
        try:
            os.fork()
        except OSError:
            pass
elif arg == "hog":
    blocks = []
    while True:
        blocks.append(bytearray(16 << 20))
print("fine", arg)
`
	p := pool.New(b, pool.Config{Min: 2, Max: 2, Concurrency: 1, LocalTimeout: 2 * time.Second})
	if err := p.Open(ctx, scriptFunction(1, code)); err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer p.Close(ctx)
	for _, hostile := range []string{"hog", "forkbomb"} {
		t.Run(hostile, func(t *testing.T) {
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
			_, err := callWithRetry(cctx, p, hostile)
			ccancel()
			if err == nil {
				t.Fatalf("hostile call %s succeeded", hostile)
			}
			t.Logf("hostile call %s: %v", hostile, err)
			// Normal calls work again within a few seconds.
			deadline := time.Now().Add(20 * time.Second)
			for {
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				v, err := callWithRetry(cctx, p, "ok")
				ccancel()
				if err == nil && v == "fine ok\n" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("pool not serving 20s after %s: %v, %v; %+v", hostile, v, err, p.Snapshot())
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err := p.WaitReady(ctx, 2); err != nil {
				t.Fatal(err)
			}
			t.Logf("after %s: counters %+v", hostile, p.Snapshot().Counters)
		})
	}
}
