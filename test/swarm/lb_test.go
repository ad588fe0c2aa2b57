// Package swarm_test drives lb in its own container (the image make images
// builds) with each pool backend: POOL_BACKEND=swarm on a real one-node
// swarm, lb attached to the pool's overlay network as in a stack, and
// POOL_BACKEND=docker, lb attached to the pool's bridge as in compose; Redis
// beside it, and the calls from the host through lb's published port.
package swarm_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// stack is lb and Redis in containers, lb's workers as Swarm services or
// containers.
type stack struct {
	t     *testing.T
	swarm bool // POOL_BACKEND=swarm
	pool  string
	lbURL string
	store *registry.Store
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	return testutil.DockerRun(t, ctxT(t, 2*time.Minute), args...)
}

func newStack(t *testing.T, backend string, env map[string]string) *stack {
	lbImage, workerImage := testutil.Image("lb"), testutil.Image("worker")
	testutil.DockerImage(t, lbImage)
	testutil.DockerImage(t, workerImage)
	s := &stack{t: t, swarm: backend == "swarm", pool: fmt.Sprintf("sw%d", time.Now().UnixNano()%1_000_000_000)}
	if s.swarm {
		testutil.Swarm(t)
	}
	front := s.pool + "-front"
	t.Cleanup(func() { s.cleanup(front) })
	docker(t, "network", "create", "--label", "spillway.pool="+s.pool, front)
	redisPort := testutil.FreePort(t)
	docker(t, "run", "-d", "--name", s.pool+"-redis", "--network", front, "-p", "127.0.0.1:"+strconv.Itoa(redisPort)+":6379",
		"--entrypoint", "redis-server", lbImage, "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no")
	var err error
	s.store, err = registry.Dial(ctxT(t, time.Minute), "127.0.0.1:"+strconv.Itoa(redisPort), registry.Options{ConnectTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("dial Redis: %v", err)
	}
	t.Cleanup(func() { s.store.Close() })
	s.publish(fibV(1))

	sock := "/var/run/docker.sock"
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	gid := statGID(fi)
	lbPort := testutil.FreePort(t)
	args := []string{"create", "--name", s.pool + "-lb", "--network", front,
		"-p", "127.0.0.1:" + strconv.Itoa(lbPort) + ":8000", "-v", sock + ":" + sock, "--group-add", strconv.Itoa(gid)}
	base := map[string]string{
		"POOL_BACKEND": backend, "POOL_NAME": s.pool, "DOCKER_NETWORK": s.pool + "-net", "REDIS_ADDR": s.pool + "-redis:6379",
		"FAAS_FUNCTION_NAME": "faas", "WORKER_IMAGE": workerImage, "CLOUD": "off",
		"NUMBER_OF_SERVERS": "2", "MAX_SERVERS": "4", "ELASTICITY_SLEEP": "500ms", "LOCAL_TIMEOUT": "20s",
		"SCALE_DOWN_DELAY": "3s", "LOG_LEVEL": "debug",
		// lb listens on all addresses of its container; the port is
		// published on the host's loopback only.
		"LB_ALLOW_ANONYMOUS": "true",
	}
	for k, v := range env {
		base[k] = v
	}
	for k, v := range base {
		args = append(args, "-e", k+"="+v)
	}
	docker(t, append(args, lbImage)...)
	if !s.swarm {
		// As in compose: lb on the pool's internal bridge (lb's swarm
		// backend attaches its container to the overlay itself).
		docker(t, "network", "create", "--internal", "--label", "spillway.pool="+s.pool, s.pool+"-net")
		docker(t, "network", "connect", s.pool+"-net", s.pool+"-lb")
	}
	docker(t, "start", s.pool+"-lb")
	s.lbURL = "http://127.0.0.1:" + strconv.Itoa(lbPort) + "/"
	s.waitReady()
	return s
}

// waitReady waits until lb's /healthz answers 200.
func (s *stack) waitReady() {
	t := s.t
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get(s.lbURL + "healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if state := docker(t, "inspect", "--format", "{{.State.Status}}", s.pool+"-lb"); state != "running" {
			t.Fatalf("lb is %s:\n%s", state, s.lbLog())
		}
		if time.Now().After(deadline) {
			t.Fatalf("lb not ready within 3 minutes:\n%s", s.lbLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// workerNames are the names of the pool's workers, sorted: its containers
// (on Swarm, the running ones: a task's container stays after it ends).
func (s *stack) workerNames() []string {
	args := []string{"ps", "-a", "--filter", "label=spillway.pool=" + s.pool, "--filter", "label=spillway.function", "--format", "{{.Names}}"}
	if s.swarm {
		args = slices.Delete(args, 1, 2)
	}
	names := strings.Fields(docker(s.t, args...))
	slices.Sort(names)
	return names
}

func (s *stack) lbLog() string {
	out, _ := exec.Command("docker", "logs", "--tail", "60", s.pool+"-lb").CombinedOutput()
	return string(out)
}

// cleanup stops lb (which removes its workers), then removes whatever is
// left of the pool: containers, services, configs, networks.
func (s *stack) cleanup(front string) {
	if s.t.Failed() {
		s.t.Logf("lb log:\n%s", s.lbLog())
	}
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "docker", args...).Output()
		return strings.TrimSpace(string(out))
	}
	run("stop", "-t", "30", s.pool+"-lb")
	run("rm", "-f", s.pool+"-lb", s.pool+"-redis")
	if ws := strings.Fields(run("ps", "-aq", "--filter", "label=spillway.pool="+s.pool)); len(ws) > 0 && !s.swarm {
		s.t.Errorf("lb left %d worker containers", len(ws))
		run(append([]string{"rm", "-f"}, ws...)...)
	}
	if svcs := strings.Fields(run("service", "ls", "-q", "--filter", "label=spillway.pool="+s.pool)); len(svcs) > 0 {
		s.t.Errorf("lb left %d worker services", len(svcs))
		run(append([]string{"service", "rm"}, svcs...)...)
	}
	for range 40 {
		var cfgs []string
		if s.swarm {
			cfgs = strings.Fields(run("config", "ls", "-q", "--filter", "label=spillway.pool="+s.pool))
		}
		nets := strings.Fields(run("network", "ls", "-q", "--filter", "label=spillway.pool="+s.pool))
		if len(cfgs)+len(nets) == 0 {
			return
		}
		if len(cfgs) > 0 {
			run(append([]string{"config", "rm"}, cfgs...)...)
		}
		if len(nets) > 0 {
			run(append([]string{"network", "rm"}, nets...)...)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fibV is the Fibonacci script answering with its version.
func fibV(v int) string {
	return fmt.Sprintf(`import sys


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


print("v%d fib(%%s) = %%d" %% (sys.argv[1], fib(int(sys.argv[1]))))
`, v)
}

func (s *stack) publish(code string) spillway.Function {
	s.t.Helper()
	fn, err := s.store.Publish(ctxT(s.t, 10*time.Second), spillway.Function{Name: "faas", Code: code, Style: spillway.StyleScript})
	if err != nil {
		s.t.Fatalf("publish: %v", err)
	}
	return fn
}

func (s *stack) call(ctx context.Context, param any) (string, error) {
	c := xmlrpc.NewClient(s.lbURL, &http.Client{Timeout: time.Minute})
	var out string
	err := c.Call(ctx, "call_faas", []any{param}, &out)
	return out, err
}

// workers returns the pool's workers: their versions (the containers'
// spillway.version labels), and how many of them run. On Swarm only the
// running containers count: a task's container stays after it ends.
func (s *stack) workers() (versions []string, running int) {
	args := []string{"ps", "-a", "--filter", "label=spillway.pool=" + s.pool, "--filter", "label=spillway.function",
		"--format", `{{.Label "spillway.version"}} {{.State}}`}
	if s.swarm {
		args = slices.Delete(args, 1, 2)
	}
	for _, line := range strings.Split(docker(s.t, args...), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		versions = append(versions, f[0])
		if f[1] == "running" {
			running++
		}
	}
	slices.Sort(versions)
	return versions, running
}

// readyTimes are the "worker ready ... after=" durations in lb's log: the
// pool's start of a worker to its first healthy health().
func (s *stack) readyTimes() []time.Duration {
	out, _ := exec.Command("docker", "logs", s.pool+"-lb").CombinedOutput()
	var ds []time.Duration
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `msg="worker ready"`) || strings.Contains(line, "spare=true") {
			continue
		}
		if i := strings.Index(line, " after="); i >= 0 {
			if d, err := time.ParseDuration(strings.Fields(line[i+len(" after="):])[0]); err == nil {
				ds = append(ds, d)
			}
		}
	}
	slices.Sort(ds)
	return ds
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[len(ds)/2]
}

func (s *stack) waitWorkers(d time.Duration, what string, cond func(versions []string, running int) bool) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		v, r := s.workers()
		if cond(v, r) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not within %s (versions %v, %d running)", what, d, v, r)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// load runs callers in a loop until stop; it counts calls and failures.
type load struct {
	calls, failed atomic.Int64
	lastErr       atomic.Value
	stop          context.CancelFunc
	wg            sync.WaitGroup
}

func (s *stack) startLoad(callers int, param int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{stop: cancel}
	for range callers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, time.Minute)
				_, err := s.call(cctx, param)
				ccancel()
				if ctx.Err() != nil {
					return // the stop, not the call, ended it
				}
				l.calls.Add(1)
				if err != nil {
					l.failed.Add(1)
					l.lastErr.Store(err.Error())
				}
			}
		})
	}
	return l
}

func (l *load) end(t *testing.T, what string) {
	t.Helper()
	l.stop()
	l.wg.Wait()
	t.Logf("%s: %d calls, %d failed", what, l.calls.Load(), l.failed.Load())
	if l.calls.Load() == 0 {
		t.Errorf("%s: no call completed", what)
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%s: %d failed calls (last: %v)", what, n, l.lastErr.Load())
	}
}

// TestLBOnBackends: lb with POOL_BACKEND=swarm (and, the same table,
// docker) serves call_faas and POST /function/<name> from its workers,
// keeps every call through a worker killed under load and through an
// update, and scales up and down. It logs the figures of BENCHMARKS.md's
// backend comparison.
func TestLBOnBackends(t *testing.T) {
	for _, backend := range []string{"swarm", "docker"} {
		t.Run(backend, func(t *testing.T) { testLB(t, backend) })
	}
}

func testLB(t *testing.T, backend string) {
	s := newStack(t, backend, map[string]string{"WORKER_SPARE": "false"})
	s.waitWorkers(time.Minute, "two workers", func(v []string, r int) bool { return len(v) == 2 && r == 2 })

	t.Run("call_faas and POST /function/<name>", func(t *testing.T) {
		got, err := s.call(ctxT(t, time.Minute), 10)
		if err != nil || strings.TrimSpace(got) != "v1 fib(10) = 55" {
			t.Fatalf("call_faas(10) = %q, %v", got, err)
		}
		resp, err := http.Post(s.lbURL+"function/faas", "text/plain", strings.NewReader("12"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "v1 fib(12) = 144" || resp.Header.Get("X-Spillway-Route") != "local" {
			t.Fatalf("POST /function/faas = %d %q (route %q)", resp.StatusCode, body, resp.Header.Get("X-Spillway-Route"))
		}
	})

	t.Run("lb killed and started again adopts its workers", func(t *testing.T) {
		before := s.workerNames()
		docker(t, "kill", s.pool+"-lb")
		docker(t, "start", s.pool+"-lb")
		s.waitReady()
		got, err := s.call(ctxT(t, time.Minute), 11)
		if err != nil || strings.TrimSpace(got) != "v1 fib(11) = 89" {
			t.Fatalf("call_faas(11) after the restart = %q, %v", got, err)
		}
		if after := s.workerNames(); !slices.Equal(after, before) {
			t.Fatalf("workers after lb's restart %v, want the same as before %v", after, before)
		}
	})

	t.Run("a task killed with docker kill under load costs no call", func(t *testing.T) {
		l := s.startLoad(3, 15)
		time.Sleep(2 * time.Second)
		ids := strings.Fields(docker(t, "ps", "-q", "--filter", "label=spillway.pool="+s.pool))
		if len(ids) == 0 {
			l.end(t, "kill")
			t.Fatal("no worker container to kill")
		}
		docker(t, "kill", ids[0])
		s.waitWorkers(time.Minute, "the killed worker replaced", func(v []string, r int) bool { return len(v) >= 2 && r == len(v) })
		time.Sleep(2 * time.Second)
		l.end(t, "kill")
	})

	t.Run("an update mid-stream costs no call and every task ends on the new version", func(t *testing.T) {
		l := s.startLoad(3, 15)
		time.Sleep(time.Second)
		began := time.Now()
		fn := s.publish(fibV(2))
		want := strconv.FormatInt(fn.Version, 10)
		s.waitWorkers(2*time.Minute, "every worker on version "+want, func(v []string, r int) bool {
			return len(v) >= 2 && r == len(v) && !slices.ContainsFunc(v, func(x string) bool { return x != want })
		})
		t.Logf("figure %s update: publish to every worker on the new version in %s", backend, time.Since(began).Round(10*time.Millisecond))
		time.Sleep(time.Second)
		l.end(t, "update")
		got, err := s.call(ctxT(t, time.Minute), 10)
		if err != nil || strings.TrimSpace(got) != "v2 fib(10) = 55" {
			t.Fatalf("after the update call_faas(10) = %q, %v", got, err)
		}
		if s.swarm {
			waitConfigs(t, s.pool, 1)
		}
	})

	t.Run("the pool scales up under load and down after it", func(t *testing.T) {
		s.waitWorkers(2*time.Minute, "two workers before the load", func(v []string, r int) bool { return len(v) == 2 && r == 2 })
		began := time.Now()
		l := s.startLoad(8, 22)
		s.waitWorkers(2*time.Minute, "more than two workers under load", func(v []string, r int) bool { return len(v) > 2 && r == len(v) })
		t.Logf("figure %s scale-up: load to a third worker running in %s", backend, time.Since(began).Round(10*time.Millisecond))
		for deadline := time.Now().Add(time.Minute); l.calls.Load() < 8 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond) // calls complete on the grown pool
		}
		l.end(t, "scale up")
		s.waitWorkers(2*time.Minute, "back to two workers", func(v []string, r int) bool { return len(v) == 2 && r == 2 })
	})
	ds := s.readyTimes()
	t.Logf("figure %s worker start (pool's start to first healthy health()): median %s of %d starts %v", backend, median(ds), len(ds), ds)
}

// waitConfigs waits until the pool has n code configs (the old ones go
// once no task uses them).
func waitConfigs(t *testing.T, pool string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		cfgs := strings.Fields(docker(t, "config", "ls", "--filter", "label=spillway.pool="+pool, "--format", "{{.Name}}"))
		if len(cfgs) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("code configs %v, want %d", cfgs, n)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
