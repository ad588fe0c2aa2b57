package swarm_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/docker"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/swarm"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

var workerImage = testutil.Image("worker")

// subject is one backend under the conformance table, with what the table
// needs from outside the Backend interface.
type subject struct {
	pool.Backend
	// other is a backend of the same pool for another function.
	other pool.Backend
	// run makes n workers of fn run on b (a backend of this subject's pool)
	// and returns them once List shows them running: the docker backend
	// starts containers, the swarm backend sets its service's replicas.
	run func(t *testing.T, b pool.Backend, fn spillway.Function, n int) []pool.Worker
	// reopen is a fresh backend of the same pool and function, as a
	// restarted lb opens it.
	reopen func(t *testing.T) pool.Backend
	// health asks the worker at addr for health() from where lb would.
	health func(t *testing.T, addr string) (workerapi.Health, error)
	// kill kills the worker's container with docker kill (SIGKILL).
	kill func(t *testing.T, w pool.Worker)
	// restarts: the engine starts a killed worker again by itself (Swarm);
	// else the backend reports it (pool.ExitWatcher) and the pool acts.
	restarts bool
}

// runningOf waits until b lists n running workers of fn's key that are not
// stopping, and returns them.
func runningOf(t *testing.T, b pool.Backend, fn spillway.Function, n int) []pool.Worker {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	for {
		ws, err := b.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var got []pool.Worker
		for _, w := range ws {
			if w.Running && !w.Stopping && w.Addr != "" && w.Key() == pool.Key(fn) {
				got = append(got, w)
			}
		}
		if len(got) == n {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d running workers of %s v%d, want %d: %+v", len(got), fn.Name, fn.Version, n, ws)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func randomName(t *testing.T) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "spwconf-" + hex.EncodeToString(b[:])
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func testFunction(name string, version int64) spillway.Function {
	code := fmt.Sprintf("import sys\nprint('v%d', sys.argv[1:])\n", version)
	sum := sha256.Sum256([]byte(code))
	return spillway.Function{Name: name, Code: code, Style: spillway.StyleScript, SHA256: hex.EncodeToString(sum[:]), Version: version}
}

func dockerSubject(t *testing.T) subject {
	name := randomName(t)
	cfg := docker.Config{Pool: name, Function: "f", Image: workerImage, Network: name + "-net",
		Address: docker.AddressIP, ServerPort: 8001, Memory: 128 << 20, PidsLimit: 256}
	b, err := docker.Open(ctxT(t, time.Minute), cfg, nil)
	if err != nil {
		t.Fatalf("docker.Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, fn := range []string{"f", "g"} {
			fb, _ := b.For(fn)
			ws, _ := fb.List(ctx)
			for _, w := range ws {
				_ = fb.Remove(ctx, w.ID)
			}
		}
		_ = b.RemoveNetwork(ctx)
		b.Close()
	})
	other, err := b.For("g")
	if err != nil {
		t.Fatal(err)
	}
	return subject{
		Backend: b, other: other,
		run: func(t *testing.T, b pool.Backend, fn spillway.Function, n int) []pool.Worker {
			for range n {
				if _, err := b.Start(ctxT(t, 2*time.Minute), pool.WorkerSpec{Function: fn, Concurrency: 2}); err != nil {
					t.Fatalf("Start: %v", err)
				}
			}
			return runningOf(t, b, fn, n)
		},
		reopen: func(t *testing.T) pool.Backend {
			r, err := docker.Open(ctxT(t, time.Minute), cfg, nil)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		},
		health: func(t *testing.T, addr string) (workerapi.Health, error) {
			c := workerapi.NewClient(addr, workerapi.ClientOptions{})
			defer c.Close()
			return c.Health(ctxT(t, 30*time.Second))
		},
		kill: func(t *testing.T, w pool.Worker) {
			testutil.DockerRun(t, ctxT(t, 30*time.Second), "kill", w.ID)
		},
	}
}

// swarmSubject needs testutil.Swarm first.
func swarmSubject(t *testing.T) subject {
	cfg := swarm.Config{Pool: randomName(t), Function: "f", Image: workerImage, ServerPort: 8001,
		Memory: 128 << 20, PidsLimit: 256, NanoCPUs: 500_000_000}
	b, err := swarm.Open(ctxT(t, time.Minute), cfg, nil)
	if err != nil {
		t.Fatalf("swarm.Open: %v", err)
	}
	t.Cleanup(func() { removeSwarmPool(t, b) })
	other, err := b.For("g", nil)
	if err != nil {
		t.Fatal(err)
	}
	return subject{
		Backend: b, other: other, restarts: true,
		run: func(t *testing.T, b pool.Backend, fn spillway.Function, n int) []pool.Worker {
			if err := b.(pool.ServiceBackend).Apply(ctxT(t, time.Minute), pool.WorkerSpec{Function: fn, Concurrency: 2}, n); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			return runningOf(t, b, fn, n)
		},
		reopen: func(t *testing.T) pool.Backend {
			r, err := swarm.Open(ctxT(t, time.Minute), cfg, nil)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		},
		// The host cannot reach an overlay network: ask from a container
		// attached to it, as lb is.
		health: func(t *testing.T, addr string) (workerapi.Health, error) {
			return probeOnNetwork(t, cfg.Network(), addr)
		},
		kill: func(t *testing.T, w pool.Worker) {
			testutil.DockerRun(t, ctxT(t, 30*time.Second), "kill", taskContainer(t, w.ID))
		},
	}
}

// removeSwarmPool removes the services of b's pool (functions f and g),
// its configs and its network, and checks that nothing is left.
func removeSwarmPool(t *testing.T, b *swarm.Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, fn := range []string{"f", "g"} {
		fb, err := b.For(fn, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := fb.RemoveService(ctx); err != nil {
			t.Errorf("cleanup remove service of %s: %v", fn, err)
		}
	}
	all, err := b.For("", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The network goes once the tasks' endpoints are gone.
	for ctx.Err() == nil {
		if err := all.RemoveNetwork(ctx); err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	b.Close()
}

// probeOnNetwork calls health() on addr from a container on network.
func probeOnNetwork(t *testing.T, network, addr string) (workerapi.Health, error) {
	t.Helper()
	out, err := exec.CommandContext(ctxT(t, 90*time.Second), "docker", "run", "--rm", "--network", network, "--entrypoint", "/usr/bin/python3",
		workerImage, "-c", "import json,sys,xmlrpc.client as x; print(json.dumps(x.ServerProxy(sys.argv[1]).health()))", "http://"+addr+"/").CombinedOutput()
	if err != nil {
		return workerapi.Health{}, fmt.Errorf("health of %s from network %s: %v: %s", addr, network, err, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		return workerapi.Health{}, fmt.Errorf("health of %s: %v (%s)", addr, err, out)
	}
	for k, v := range m { // JSON numbers are floats; XML-RPC's ints are int64
		if f, ok := v.(float64); ok {
			m[k] = int64(f)
		}
	}
	return workerapi.HealthFrom(m)
}

// taskContainer is the container of the swarm task on this node.
func taskContainer(t *testing.T, taskID string) string {
	t.Helper()
	id := testutil.DockerRun(t, ctxT(t, 30*time.Second), "ps", "-q", "--filter", "label=com.docker.swarm.task.id="+taskID)
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("containers of task %s: %q, want one", taskID, id)
	}
	return id
}

// TestBackendConformance runs one table of pool.Backend behaviours against
// the docker backend and the swarm backend (on a one-node swarm).
func TestBackendConformance(t *testing.T) {
	testutil.Docker(t)
	testutil.DockerImage(t, workerImage)
	behaviours := []struct {
		name string
		run  func(t *testing.T, s subject)
	}{
		{"a worker runs with its labels, and lb reaches it", func(t *testing.T, s subject) {
			fn := testFunction("f", 3)
			w := s.run(t, s.Backend, fn, 1)[0]
			if w.ID == "" || w.Function != "f" || w.Version != 3 || w.SHA256 != fn.SHA256 || w.Key() != pool.Key(fn) {
				t.Fatalf("worker = %+v", w)
			}
			if !strings.HasPrefix(w.Name, "spwconf-") || !strings.Contains(w.Name, "-f") {
				t.Errorf("name %q: want <pool>-<function>…", w.Name)
			}
			var h workerapi.Health
			var err error
			for deadline := time.Now().Add(time.Minute); ; {
				if h, err = s.health(t, w.Addr); (err == nil && h.Ready) || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil || !h.Ready || h.SHA256 != fn.SHA256 || h.Version != 3 || h.Concurrency != 2 {
				t.Errorf("health = %+v, %v; want ready, the function's sha256, version 3, concurrency 2", h, err)
			}
		}},
		{"List shows the pool's workers of its function only; a restarted lb finds them", func(t *testing.T, s subject) {
			ctx := ctxT(t, 3*time.Minute)
			w := s.run(t, s.Backend, testFunction("f", 1), 1)[0]
			g := s.run(t, s.other, testFunction("g", 1), 1)[0]
			for what, b := range map[string]pool.Backend{"same backend": s.Backend, "reopened": s.reopen(t)} {
				ws, err := b.List(ctx)
				if err != nil {
					t.Fatalf("%s: List: %v", what, err)
				}
				if len(ws) != 1 || ws[0].ID != w.ID || ws[0].Addr != w.Addr || !ws[0].Running || ws[0].Key() != w.Key() || ws[0].Version != 1 {
					t.Errorf("%s: List = %+v, want only %+v", what, ws, w)
				}
			}
			gs, err := s.other.List(ctx)
			if err != nil || len(gs) != 1 || gs[0].ID != g.ID {
				t.Errorf("other function's List = %+v, %v; want only %s", gs, err, g.ID)
			}
		}},
		{"a worker killed with docker kill is seen: Swarm starts another, the docker backend reports it to the pool", func(t *testing.T, s subject) {
			ctx := ctxT(t, 3*time.Minute)
			fn := testFunction("f", 1)
			w := s.run(t, s.Backend, fn, 1)[0]
			if s.restarts {
				s.kill(t, w)
				for {
					ws := runningOf(t, s.Backend, fn, 1)
					if ws[0].ID != w.ID {
						break // the killed task is gone from the list, another runs
					}
					time.Sleep(200 * time.Millisecond)
				}
				return
			}
			watcher, ok := s.Backend.(pool.ExitWatcher)
			if !ok {
				t.Fatal("the backend neither restarts workers nor reports their exits")
			}
			wctx, stop := context.WithCancel(ctx)
			died := make(chan string, 8)
			var wg sync.WaitGroup
			wg.Go(func() { _ = watcher.Watch(wctx, func(id string) { died <- id }) })
			defer func() { stop(); wg.Wait() }()
			time.Sleep(time.Second) // the watch is established (it subscribes to events)
			s.kill(t, w)
			select {
			case id := <-died:
				if id != w.ID {
					t.Fatalf("died(%s), want %s", id, w.ID)
				}
			case <-ctx.Done():
				t.Fatal("Watch reported nothing")
			}
			ws, err := s.List(ctx)
			if err != nil || len(ws) != 1 || ws[0].Running {
				t.Fatalf("List after the kill = %+v, %v; want the worker, not running (no restart behind the pool's back)", ws, err)
			}
		}},
	}
	subjects := []struct {
		name string
		make func(t *testing.T) subject
	}{
		{"docker", dockerSubject},
		{"swarm", swarmSubject},
	}
	for _, sub := range subjects {
		t.Run(sub.name, func(t *testing.T) {
			if sub.name == "swarm" {
				testutil.Swarm(t)
			}
			for _, bh := range behaviours {
				t.Run(bh.name, func(t *testing.T) { bh.run(t, sub.make(t)) })
			}
		})
	}
}

// TestDockerWorkers: the docker backend starts and removes one chosen
// worker at a time, for its own function only.
func TestDockerWorkers(t *testing.T) {
	testutil.Docker(t)
	testutil.DockerImage(t, workerImage)
	s := dockerSubject(t)
	ctx := ctxT(t, 3*time.Minute)
	if _, err := s.Start(ctx, pool.WorkerSpec{Function: testFunction("g", 1)}); err == nil {
		t.Fatal("Start of g on f's backend: no error")
	}
	ws := s.run(t, s.Backend, testFunction("f", 1), 2)
	if err := s.Remove(ctx, ws[0].ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := s.Remove(ctx, ws[0].ID); err != nil {
		t.Fatalf("Remove again: %v", err)
	}
	left, err := s.List(ctx)
	if err != nil || len(left) != 1 || left[0].ID != ws[1].ID || !left[0].Running {
		t.Fatalf("List after Remove = %+v, %v; want only %s running", left, err, ws[1].ID)
	}
}

// TestSwarmService: a function's workers are the replicas of one service
// <pool>-<function>; Apply scales it and rolls it start first (never fewer
// running workers than asked for); Remove has Swarm replace one task;
// RemoveService leaves nothing.
func TestSwarmService(t *testing.T) {
	testutil.DockerImage(t, workerImage)
	testutil.Swarm(t)
	s := swarmSubject(t)
	svc := s.Backend.(*swarm.Backend)
	ctx := ctxT(t, 5*time.Minute)
	if err := svc.Apply(ctx, pool.WorkerSpec{Function: testFunction("g", 1)}, 1); err == nil {
		t.Fatal("Apply of g on f's backend: no error")
	}
	v1 := s.run(t, svc, testFunction("f", 1), 2)
	if got := testutil.DockerRun(t, ctx, "service", "ls", "--filter", "label=spillway.pool="+strings.Split(v1[0].Name, "-f.")[0], "--format", "{{.Name}} {{.Replicas}}"); got != svc.ServiceName()+" 2/2" {
		t.Errorf("services = %q, want one, %s with 2/2 replicas", got, svc.ServiceName())
	}

	// The roll: polled throughout, at least 2 workers run and take calls.
	fn2 := testFunction("f", 2)
	if err := svc.Apply(ctx, pool.WorkerSpec{Function: fn2, Concurrency: 2}, 2); err != nil {
		t.Fatal(err)
	}
	polls := 0
	for {
		ws, err := svc.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		serving, onV2 := 0, 0
		for _, w := range ws {
			if w.Running && !w.Stopping {
				serving++
				if w.Version == 2 {
					onV2++
				}
			}
		}
		if serving < 2 {
			t.Fatalf("during the roll %d workers serving, want at least 2: %+v", serving, ws)
		}
		polls++
		if onV2 == 2 && serving == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("roll not done: %+v", ws)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("roll observed over %d polls", polls)

	// Scale down, then have one task replaced.
	if err := svc.Apply(ctx, pool.WorkerSpec{Function: fn2, Concurrency: 2}, 1); err != nil {
		t.Fatal(err)
	}
	w := runningOf(t, svc, fn2, 1)[0]
	if err := svc.Remove(ctx, w.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for runningOf(t, svc, fn2, 1)[0].ID == w.ID {
		time.Sleep(200 * time.Millisecond)
	}

	if err := svc.RemoveService(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.RemoveService(ctx); err != nil {
		t.Fatalf("RemoveService again: %v", err)
	}
	if ws, err := svc.List(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("List after RemoveService = %+v, %v", ws, err)
	}
}

// TestSwarmCodeConfigs: the code is a config <pool>-<function>-v<version>
// shared by the version's tasks; a roll's old config goes once no task
// mounts it, and the last one with the service.
func TestSwarmCodeConfigs(t *testing.T) {
	testutil.DockerImage(t, workerImage)
	testutil.Swarm(t)
	s := swarmSubject(t)
	svc := s.Backend.(*swarm.Backend)
	ctx := ctxT(t, 3*time.Minute)
	configs := func() []string {
		out := testutil.DockerRun(t, ctx, "config", "ls", "--format", "{{.Name}}", "--filter", "label=spillway.pool")
		var mine []string
		for _, n := range strings.Fields(out) {
			if strings.HasPrefix(n, "spwconf-") {
				mine = append(mine, n[strings.Index(n, "-f-")+1:])
			}
		}
		slices.Sort(mine)
		return mine
	}
	waitConfigs := func(want ...string) {
		t.Helper()
		for !slices.Equal(configs(), want) {
			if ctx.Err() != nil {
				t.Fatalf("configs = %v, want %v", configs(), want)
			}
			_, _ = svc.List(ctx) // lb's poll, which removes unused ones
			time.Sleep(300 * time.Millisecond)
		}
	}
	s.run(t, svc, testFunction("f", 1), 2)
	waitConfigs("f-v1")
	v2 := s.run(t, svc, testFunction("f", 2), 2)
	waitConfigs("f-v2")
	if h, err := s.health(t, v2[0].Addr); err != nil || h.Version != 2 || h.SHA256 != testFunction("f", 2).SHA256 {
		t.Errorf("v2 worker's health = %+v, %v", h, err)
	}
	if err := svc.RemoveService(ctx); err != nil {
		t.Fatal(err)
	}
	waitConfigs()
}

// TestSwarmHardening: inside a task, the worker runs as in the docker
// backend: non-root, read-only root, a writable /tmp, its code read-only
// and root's, no route out.
func TestSwarmHardening(t *testing.T) {
	testutil.DockerImage(t, workerImage)
	testutil.Swarm(t)
	s := swarmSubject(t)
	ctx := ctxT(t, 3*time.Minute)
	w := s.run(t, s.Backend, testFunction("f", 1), 1)[0]
	script := `
import json, os, stat
def writable(p):
    try:
        open(p, "a").close(); return True
    except OSError:
        return False
st = os.stat("/var/task/function.py")
routes = open("/proc/net/route").read().splitlines()[1:]
caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "root": writable("/x"), "tmp": writable("/tmp/x"),
  "code": writable("/var/task/function.py"), "code_uid": st.st_uid, "code_mode": oct(stat.S_IMODE(st.st_mode)),
  "default_route": any(r.split()[1] == "00000000" for r in routes), "caps": caps}))
`
	out, err := exec.CommandContext(ctx, "docker", "exec", taskContainer(t, w.ID), "/usr/bin/python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("docker exec: %v\n%s", err, out)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := map[string]any{"uid": 10001.0, "gid": 10001.0, "root": false, "tmp": true, "code": false,
		"code_uid": 0.0, "code_mode": "0o444", "default_route": false, "caps": "0000000000000000"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	spec := testutil.DockerRun(t, ctx, "service", "inspect", s.Backend.(*swarm.Backend).ServiceName(), "--format",
		"{{.Spec.EndpointSpec.Mode}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} {{.Spec.TaskTemplate.Resources.Limits.Pids}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} {{.Spec.TaskTemplate.RestartPolicy.Condition}} {{.Spec.UpdateConfig.Order}} {{.Spec.UpdateConfig.Parallelism}}")
	if spec != "dnsrr 134217728 256 500000000 any start-first 0" {
		t.Errorf("service spec = %q, want dnsrr, 128 MiB, 256 pids, 0.5 CPU, restart any, start-first updates of every task at once", spec)
	}
}
