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
	watcher pool.ExitWatcher
	// other is a backend of the same pool for another function.
	other pool.Backend
	// reopen is a fresh backend of the same pool and function, as a
	// restarted lb opens it.
	reopen func(t *testing.T) pool.Backend
	// health asks the worker at addr for health() from where lb would.
	health func(t *testing.T, addr string) (workerapi.Health, error)
	// kill kills the worker's container with docker kill (SIGKILL).
	kill func(t *testing.T, w pool.Worker)
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
		Backend: b, watcher: b, other: other,
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
		Backend: b, watcher: b, other: other,
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

// removeSwarmPool removes every worker service of b's pool, its configs
// and its network, and checks that nothing is left.
func removeSwarmPool(t *testing.T, b *swarm.Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all, err := b.For("", nil)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := all.List(ctx)
	if err != nil {
		t.Errorf("cleanup list: %v", err)
	}
	for _, w := range ws {
		if err := all.Remove(ctx, w.ID); err != nil {
			t.Errorf("cleanup remove %s: %v", w.Name, err)
		}
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

// taskContainer is the container of the worker service's running task on
// this node.
func taskContainer(t *testing.T, serviceID string) string {
	t.Helper()
	id := testutil.DockerRun(t, ctxT(t, 30*time.Second), "ps", "-q", "--filter", "label=com.docker.swarm.service.id="+serviceID)
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("containers of service %s: %q, want one", serviceID, id)
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
		{"Start returns a running worker lb can reach, with its labels", func(t *testing.T, s subject) {
			fn := testFunction("f", 3)
			w, err := s.Start(ctxT(t, 2*time.Minute), pool.WorkerSpec{Function: fn, Concurrency: 2})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			if !w.Running || w.Addr == "" || w.ID == "" || w.Function != "f" || w.Version != 3 || w.SHA256 != fn.SHA256 || w.Key() != pool.Key(fn) {
				t.Fatalf("Start = %+v", w)
			}
			if !strings.HasPrefix(w.Name, "spwconf-") || !strings.Contains(w.Name, "-f-3-") {
				t.Errorf("name %q: want <pool>-<function>-<version>-<random>", w.Name)
			}
			var h workerapi.Health
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
			w, err := s.Start(ctx, pool.WorkerSpec{Function: testFunction("f", 1)})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			g, err := s.other.Start(ctx, pool.WorkerSpec{Function: testFunction("g", 1)})
			if err != nil {
				t.Fatalf("Start g: %v", err)
			}
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
		{"Start of another function's worker is refused", func(t *testing.T, s subject) {
			if _, err := s.Start(ctxT(t, time.Minute), pool.WorkerSpec{Function: testFunction("g", 1)}); err == nil {
				t.Fatal("Start of g on f's backend: no error")
			}
		}},
		{"Remove removes exactly that worker; removing it again is no error", func(t *testing.T, s subject) {
			ctx := ctxT(t, 3*time.Minute)
			var ws []pool.Worker
			for range 2 {
				w, err := s.Start(ctx, pool.WorkerSpec{Function: testFunction("f", 1)})
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				ws = append(ws, w)
			}
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
		}},
		{"a worker killed with docker kill is reported by Watch", func(t *testing.T, s subject) {
			ctx := ctxT(t, 3*time.Minute)
			w, err := s.Start(ctx, pool.WorkerSpec{Function: testFunction("f", 1)})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			wctx, stop := context.WithCancel(ctx)
			died := make(chan string, 8)
			var wg sync.WaitGroup
			wg.Go(func() { _ = s.watcher.Watch(wctx, func(id string) { died <- id }) })
			defer func() { stop(); wg.Wait() }()
			time.Sleep(time.Second) // the watch is established (the docker one subscribes to events)
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

// TestSwarmCodeConfigs: the code is a config <pool>-<function>-v<version>
// shared by the version's workers, and removed with its last worker.
func TestSwarmCodeConfigs(t *testing.T) {
	testutil.DockerImage(t, workerImage)
	testutil.Swarm(t)
	s := swarmSubject(t)
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
	var v1 []pool.Worker
	for range 2 {
		w, err := s.Start(ctx, pool.WorkerSpec{Function: testFunction("f", 1)})
		if err != nil {
			t.Fatal(err)
		}
		v1 = append(v1, w)
	}
	v2, err := s.Start(ctx, pool.WorkerSpec{Function: testFunction("f", 2)})
	if err != nil {
		t.Fatal(err)
	}
	if got := configs(); !slices.Equal(got, []string{"f-v1", "f-v2"}) {
		t.Fatalf("configs = %v, want f-v1 f-v2", got)
	}
	if err := s.Remove(ctx, v1[0].ID); err != nil {
		t.Fatal(err)
	}
	if got := configs(); !slices.Equal(got, []string{"f-v1", "f-v2"}) {
		t.Fatalf("configs with a v1 worker left = %v, want f-v1 f-v2", got)
	}
	if err := s.Remove(ctx, v1[1].ID); err != nil {
		t.Fatal(err)
	}
	if got := configs(); !slices.Equal(got, []string{"f-v2"}) {
		t.Fatalf("configs after the last v1 worker = %v, want f-v2", got)
	}
	if h, err := s.health(t, v2.Addr); err != nil || h.Version != 2 || h.SHA256 != testFunction("f", 2).SHA256 {
		t.Errorf("v2 worker's health = %+v, %v", h, err)
	}
}

// TestSwarmHardening: inside a task, the worker runs as in the docker
// backend: non-root, read-only root, a writable /tmp, its code read-only
// and root's, no route out.
func TestSwarmHardening(t *testing.T) {
	testutil.DockerImage(t, workerImage)
	testutil.Swarm(t)
	s := swarmSubject(t)
	ctx := ctxT(t, 3*time.Minute)
	w, err := s.Start(ctx, pool.WorkerSpec{Function: testFunction("f", 1)})
	if err != nil {
		t.Fatal(err)
	}
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
	spec := testutil.DockerRun(t, ctx, "service", "inspect", w.ID, "--format",
		"{{.Spec.EndpointSpec.Mode}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} {{.Spec.TaskTemplate.Resources.Limits.Pids}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} {{.Spec.TaskTemplate.RestartPolicy.Condition}}")
	if spec != "dnsrr 134217728 256 500000000 none" {
		t.Errorf("service spec = %q, want dnsrr, 128 MiB, 256 pids, 0.5 CPU, no restart", spec)
	}
}
