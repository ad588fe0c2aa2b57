package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// replica is one lb process of a stack's pool.
type replica struct {
	id  string
	p   *proc
	url string
}

// startReplica starts another lb of s's pool with LB_ID id and waits
// until it serves.
func (s *stack) startReplica(id string) *replica {
	s.t.Helper()
	port := testutil.FreePort(s.t)
	r := &replica{id: id, url: "http://127.0.0.1:" + strconv.Itoa(port) + "/"}
	env := []string{"LOAD_BALANCER_PORT=" + strconv.Itoa(port), "LB_ID=" + id}
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	r.p = startProc(s.t, env, binary(s.t, "lb"))
	s.t.Cleanup(func() {
		r.p.stop(syscall.SIGTERM, 30*time.Second)
		if s.t.Failed() {
			s.t.Logf("lb %s log:\n%s", id, tail(r.p.out.String(), 60))
		}
	})
	deadline := time.Now().Add(120 * time.Second)
	for {
		resp, err := http.Get(r.url + "healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r
			}
		}
		select {
		case err := <-r.p.done:
			r.p.done <- err
			s.t.Fatalf("lb %s exited while starting: %v\n%s", id, err, tail(r.p.out.String(), 60))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("lb %s not ready within 120s\n%s", id, tail(r.p.out.String(), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// status reads r's status(); nil when r does not answer.
func (r *replica) status() map[string]any {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reply map[string]any
	if err := xmlrpc.NewClient(r.url, &http.Client{Timeout: 10 * time.Second}).Call(ctx, "status", nil, &reply); err != nil {
		return nil
	}
	return reply
}

func (r *replica) controller() bool {
	st := r.status()
	c, _ := st["controller"].(bool)
	return c
}

// roles waits until exactly one of a and b is the controller (the first to
// start normally is; on a loaded machine a late renewal may hand it over)
// and returns them as controller and follower.
func roles(t *testing.T, a, b *replica) (ctrl, fol *replica) {
	t.Helper()
	waitUntil(t, 60*time.Second, "exactly one controller", func() bool {
		ca, cb := a.controller(), b.controller()
		switch {
		case ca && !cb:
			ctrl, fol = a, b
		case cb && !ca:
			ctrl, fol = b, a
		default:
			return false
		}
		return true
	})
	return ctrl, fol
}

// closedLoop runs callers that each send call_faas(param) in a loop
// through a client of their own over urls (moving on only past refused
// connections, as bin/client does), until stop. Each caller has one call
// in flight at a time on one connection, like a separate client process.
type closedLoop struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error
	stop       chan struct{}
	wg         sync.WaitGroup
	fos        []*loadgen.Failover
}

// moves is how often callers moved to another replica.
func (l *closedLoop) moves() int64 {
	var n int64
	for _, f := range l.fos {
		n += f.Moves()
	}
	return n
}

func startClosedLoop(t *testing.T, urls []string, callers int, param string) *closedLoop {
	t.Helper()
	l := &closedLoop{stop: make(chan struct{})}
	for range callers {
		tr := xmlrpc.NewTransport()
		tr.MaxConnsPerHost = 1 // one connection per lb: one call in flight, nothing stale beside it
		fo, err := loadgen.NewFailover(urls, tr)
		if err != nil {
			t.Fatal(err)
		}
		l.fos = append(l.fos, fo)
		cl := xmlrpc.NewClient(urls[0], &http.Client{Transport: fo})
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				var v any
				err := cl.Call(ctx, "call_faas", []any{param}, &v)
				cancel()
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *closedLoop) finish() (ok, failed int64, errs []error) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed.Load(), l.errs
}

// waitCalls waits until n more calls succeeded.
func (l *closedLoop) waitCalls(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	waitUntil(t, 120*time.Second, fmt.Sprintf("%d more calls", n), func() bool { return l.ok.Load() >= target })
}

// readyMembers counts the ready members r serves, of sha when not empty.
func readyMembers(st map[string]any, sha string) int {
	details, _ := st["details"].(map[string]any)
	list, _ := details["members"].([]any)
	n := 0
	for _, m := range list {
		mm, _ := m.(map[string]any)
		if mm["state"] == "ready" && (sha == "" || mm["sha256"] == sha) {
			n++
		}
	}
	return n
}

func counter(st map[string]any, path ...string) int64 {
	var cur any = st
	for _, p := range path {
		m, _ := cur.(map[string]any)
		cur = m[p]
	}
	n, _ := cur.(int64)
	return n
}

// TestReplicaSIGTERMFailsNoCall: two replicas, a closed-loop client on
// both URLs; the replica the client uses is stopped with SIGTERM in the
// middle of the stream. No call fails: the leaving lb refuses new
// connections first and finishes what arrives on open ones; the other
// becomes controller and keeps the workers, which the leaving one left.
func TestReplicaSIGTERMFailsNoCall(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{"ELASTICITY_SLEEP": "500ms", "SCALE_DOWN_DELAY": "60s"}})
	s.publish(readExample(t, "fib.py"), spillway.StyleScript)
	a := s.startReplica("lb-a")
	b := s.startReplica("lb-b")
	ctrl, _ := roles(t, a, b)
	t.Logf("controller before the SIGTERM: %s", ctrl.id)
	waitUntil(t, 30*time.Second, "lb-b's status shows lb_id lb-b and 2 replicas", func() bool {
		stB := b.status()
		reps, _ := stB["replicas"].([]any)
		return stB["lb_id"] == "lb-b" && len(reps) == 2
	})
	workers := s.containers()

	const callers = 4
	l := startClosedLoop(t, []string{a.url, b.url}, callers, "18")
	l.waitCalls(t, 40)
	stopped := time.Now()
	err, graceful := a.p.stop(syscall.SIGTERM, 60*time.Second)
	if err != nil || !graceful {
		t.Errorf("lb-a on SIGTERM: graceful=%v err=%v", graceful, err)
	}
	t.Logf("lb-a stopped in %v", time.Since(stopped).Round(time.Millisecond))
	l.waitCalls(t, 40)
	ok, failed, errs := l.finish()
	if failed != 0 {
		t.Errorf("%d of %d calls failed across the SIGTERM (first: %v)", failed, ok+failed, errs[0])
	}
	t.Logf("calls ok %d, failed %d, client moves %d", ok, failed, l.moves())
	if l.moves() < 1 {
		t.Error("the client never moved to lb-b")
	}
	waitUntil(t, 30*time.Second, "lb-b becomes controller", b.controller)
	// lb-a left the workers to lb-b.
	if !strings.Contains(a.p.out.String(), "leaving the workers to the other lb replicas") {
		t.Error("lb-a did not say it left the workers to lb-b")
	}
	left := map[string]bool{}
	for _, c := range s.containers() {
		left[c] = true
	}
	for _, w := range workers {
		if !left[w] {
			t.Errorf("worker %s removed by the leaving replica", w)
		}
	}
	if n := readyMembers(b.status(), ""); n < 2 {
		t.Errorf("lb-b serves %d ready workers, want 2", n)
	}
	// The last replica leaves as a lone lb does: nothing stays behind.
	if err, graceful := b.p.stop(syscall.SIGTERM, 60*time.Second); err != nil || !graceful {
		t.Errorf("lb-b on SIGTERM: graceful=%v err=%v", graceful, err)
	}
	waitUntil(t, 30*time.Second, "workers removed by the last replica", func() bool { return len(s.containers()) == 0 })
}

// TestReplicaKilledControllerTakeover: kill -9 of the controller costs only
// the calls in flight on it; the other replica becomes controller, scales
// up under load and rolls an update to every worker.
func TestReplicaKilledControllerTakeover(t *testing.T) {
	const tick = 500 * time.Millisecond
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{
		"ELASTICITY_SLEEP": tick.String(), "NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "4",
		"OFFLOAD_POLICY": "never", "SCALE_DOWN_DELAY": "60s", "LOCAL_TIMEOUT": "30s",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	// a is the controller (killed below), b the follower that takes over.
	a, b := roles(t, s.startReplica("lb-a"), s.startReplica("lb-b"))
	// Both reach the cloud: the follower adopts what the controller deployed.
	for _, r := range []*replica{a, b} {
		waitUntil(t, 90*time.Second, r.id+" cloud ready", func() bool {
			st := r.status()
			details, _ := st["details"].(map[string]any)
			c, _ := details["cloud"].(map[string]any)
			ready, _ := c["ready"].(bool)
			return ready
		})
	}

	const callers = 3
	l := startClosedLoop(t, []string{a.url, b.url}, callers, "light")
	l.waitCalls(t, 20)
	_ = a.p.cmd.Process.Kill()
	killed := time.Now()
	<-a.p.done
	a.p.done <- nil
	waitUntil(t, 30*time.Second, "the follower becomes controller", b.controller)
	took := time.Since(killed)
	t.Logf("%s controller %v after the kill (ELASTICITY_SLEEP %v)", b.id, took.Round(time.Millisecond), tick)
	l.waitCalls(t, 20)
	okBefore, failedAtKill := l.ok.Load(), l.failed.Load()
	if failedAtKill > callers {
		l.mu.Lock()
		t.Errorf("%d calls failed at the kill, want at most the %d in flight: %v", failedAtKill, callers, l.errs)
		l.mu.Unlock()
	}

	// Scale-up under load, decided by the new controller: calls that hold
	// a worker for a while, more callers than workers.
	before := readyMembers(b.status(), "")
	if before >= 4 {
		t.Fatalf("the new controller already serves %d workers (MAX_SERVERS) before the heavy load", before)
	}
	heavy := startClosedLoop(t, []string{b.url}, 8, "sleep:0.4")
	waitUntil(t, 120*time.Second, "the new controller scales up", func() bool {
		return readyMembers(b.status(), "") > before
	})
	t.Logf("the new controller scaled from %d to %d ready workers under load", before, readyMembers(b.status(), ""))
	_, hf, herrs := heavy.finish()
	if hf != 0 {
		t.Errorf("%d heavy calls failed (first %v)", hf, herrs[0])
	}

	// An update reaches every worker.
	fn := s.publish(strings.Replace(sleeper, "VERSION = 1", "VERSION = 2", 1), spillway.StyleHandler)
	waitUntil(t, 180*time.Second, "every worker runs version 2", func() bool {
		st := b.status()
		details, _ := st["details"].(map[string]any)
		list, _ := details["members"].([]any)
		if len(list) == 0 {
			return false
		}
		for _, m := range list {
			mm, _ := m.(map[string]any)
			if mm["sha256"] != fn.SHA256 || mm["state"] != "ready" {
				return false
			}
		}
		return true
	})
	// The old containers go (drained, then removed by the new controller).
	waitUntil(t, 120*time.Second, "only version-2 containers left", func() bool {
		out, err := exec.Command("docker", "ps", "-a", "--filter", "label=spillway.pool="+s.pool,
			"--format", `{{.Label "spillway.sha256"}}`).Output()
		if err != nil {
			return false
		}
		for _, sha := range strings.Fields(string(out)) {
			if sha != fn.SHA256 {
				return false
			}
		}
		return true
	})
	ok, failed, errs := l.finish()
	if failed > callers {
		t.Errorf("%d calls failed in all, want at most the %d in flight at the kill (first %v)", failed, callers, errs[0])
	}
	t.Logf("calls ok %d (%d before the scale-up), failed %d (at the kill %d)", ok, okBefore, failed, failedAtKill)
}

// TestControllerScalesForLoadThroughFollower: all the load goes through the
// follower; the controller, which sees none of it itself, scales the pool
// from the follower's load report.
func TestControllerScalesForLoadThroughFollower(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{
		"ELASTICITY_SLEEP": "500ms", "NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "3",
		"OFFLOAD_POLICY": "never", "SCALE_DOWN_DELAY": "60s", "LOCAL_TIMEOUT": "30s",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	// a is the controller, b the follower all the load goes through.
	a, b := roles(t, s.startReplica("lb-a"), s.startReplica("lb-b"))
	l := startClosedLoop(t, []string{b.url}, 6, "sleep:0.4")
	waitUntil(t, 120*time.Second, "the controller scales up for the follower's load", func() bool {
		return counter(a.status(), "pool_desired") >= 2
	})
	waitUntil(t, 120*time.Second, "the follower serves the new workers", func() bool {
		return readyMembers(b.status(), "") >= 2
	})
	_, failed, errs := l.finish()
	if failed != 0 {
		t.Errorf("%d calls failed (first %v)", failed, errs[0])
	}
	stA := a.status()
	if n := counter(stA, "counters", "calls"); n != 0 {
		t.Errorf("the controller answered %d calls itself, want 0 (all load went through lb-b)", n)
	}
	t.Logf("controller desired %d, last scale %v", counter(stA, "pool_desired"), stA["counters"].(map[string]any)["last_scale"])
}

// TestBusyWorkerRoutedAround: the workers' only slots are held by calls
// through lb-a; a call through lb-b, which cannot know, meets busy workers
// and still succeeds, with no failure and no worker ejected.
func TestBusyWorkerRoutedAround(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{
		"NUMBER_OF_SERVERS": "2", "MAX_SERVERS": "2", "WORKER_CONCURRENCY": "1",
		"OFFLOAD_POLICY": "never", "LOCAL_TIMEOUT": "60s", "SCALE_DOWN_DELAY": "60s",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	a := s.startReplica("lb-a")
	b := s.startReplica("lb-b")

	// Two long calls through lb-a fill both workers.
	held := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var v any
			held <- xmlrpc.NewClient(a.url, nil).Call(ctx, "call_faas", []any{"sleep:4"}, &v)
		}()
	}
	// lb-a counts a call in flight once it holds the slot, a moment before
	// the worker has it; lb-b must meet workers that are running the calls.
	waitUntil(t, 60*time.Second, "both workers running lb-a's calls", func() bool {
		st := a.status()
		if counter(st, "local_in_flight") != 2 {
			return false
		}
		details, _ := st["details"].(map[string]any)
		members, _ := details["members"].([]any)
		busy := 0
		for _, mm := range members {
			m, _ := mm.(map[string]any)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var h map[string]any
			err := xmlrpc.NewClient("http://"+fmt.Sprint(m["addr"])+"/", nil).Call(ctx, "health", nil, &h)
			cancel()
			if err == nil && h["in_flight"] == int64(1) {
				busy++
			}
		}
		return busy == 2
	})
	// lb-b sees two free workers; both answer busy; the call waits and runs.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var reply map[string]any
	if err := xmlrpc.NewClient(b.url, nil).Call(ctx, "invoke", []any{"after"}, &reply); err != nil {
		t.Fatalf("call through lb-b while lb-a fills the workers: %v", err)
	}
	t.Logf("lb-b's call answered after %v on %v", time.Since(start).Round(time.Millisecond), reply["worker"])
	for range 2 {
		if err := <-held; err != nil {
			t.Errorf("lb-a's call: %v", err)
		}
	}
	stB := b.status()
	if n := counter(stB, "counters", "busy"); n < 1 {
		t.Errorf("lb-b counted %d busy answers, want at least 1", n)
	}
	if n := counter(stB, "counters", "errors"); n != 0 {
		t.Errorf("lb-b counted %d errors", n)
	}
	if n := counter(stB, "details", "pool", "failed"); n != 0 {
		t.Errorf("lb-b ejected %d workers", n)
	}
	if n := readyMembers(stB, ""); n != 2 {
		t.Errorf("lb-b serves %d ready workers, want 2", n)
	}
	var fault *xmlrpc.Fault
	if err := xmlrpc.NewClient(b.url, nil).Call(ctx, "invoke", []any{"again"}, &reply); errors.As(err, &fault) || err != nil {
		t.Errorf("next call through lb-b: %v", err)
	}
}

// TestHAProxyInFrontOfReplicas runs examples/haproxy.cfg (ports changed to
// this test's) in front of two replicas: a caller with a single URL sees
// no failed call when the replica it uses is stopped with SIGTERM.
func TestHAProxyInFrontOfReplicas(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		haproxy = "/usr/sbin/haproxy"
	}
	_, statErr := exec.LookPath(haproxy)
	testutil.Require(t, statErr == nil, "haproxy (Debian package haproxy)")
	s := newStack(t, stackOptions{env: map[string]string{"ELASTICITY_SLEEP": "500ms", "SCALE_DOWN_DELAY": "60s"}})
	s.publish(readExample(t, "fib.py"), spillway.StyleScript)
	a := s.startReplica("lb-a")
	b := s.startReplica("lb-b")

	front := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	cfg := readExample(t, "haproxy.cfg")
	for old, repl := range map[string]string{
		"127.0.0.1:8080": front,
		"127.0.0.1:8000": strings.TrimSuffix(strings.TrimPrefix(a.url, "http://"), "/"),
		"127.0.0.1:8001": strings.TrimSuffix(strings.TrimPrefix(b.url, "http://"), "/"),
	} {
		if !strings.Contains(cfg, old) {
			t.Fatalf("examples/haproxy.cfg has no %s", old)
		}
		cfg = strings.ReplaceAll(cfg, old, repl)
	}
	path := t.TempDir() + "/haproxy.cfg"
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	hp := startProc(t, nil, haproxy, "-db", "-f", path)
	t.Cleanup(func() {
		hp.stop(syscall.SIGTERM, 10*time.Second)
		if t.Failed() {
			t.Logf("haproxy log:\n%s", tail(hp.out.String(), 40))
		}
	})
	frontURL := "http://" + front + "/"
	seen := map[any]bool{}
	waitUntil(t, 60*time.Second, "haproxy reaches both replicas", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var st map[string]any
		if err := xmlrpc.NewClient(frontURL, nil).Call(ctx, "status", nil, &st); err == nil {
			seen[st["lb_id"]] = true
		}
		return seen["lb-a"] && seen["lb-b"]
	})

	const callers = 4
	l := startClosedLoop(t, []string{frontURL}, callers, "18")
	l.waitCalls(t, 40)
	if err, graceful := a.p.stop(syscall.SIGTERM, 60*time.Second); err != nil || !graceful {
		t.Errorf("lb-a on SIGTERM: graceful=%v err=%v", graceful, err)
	}
	l.waitCalls(t, 40)
	ok, failed, errs := l.finish()
	if failed != 0 {
		t.Errorf("%d of %d calls through haproxy failed across the SIGTERM (first: %v)", failed, ok+failed, errs[0])
	}
	t.Logf("calls through haproxy ok %d, failed %d", ok, failed)
}
