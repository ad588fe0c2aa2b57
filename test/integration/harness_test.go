// Package integration drives the whole lb with its real parts: the lb binary,
// a real redis-server, the Docker engine with the worker image, localcloud as
// the cloud, and Python's own xmlrpc.client as an independent client.
package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

var workerImage = testutil.Image("worker")

// binaries are built once per test run, each when a test first needs it.
var (
	buildMu  sync.Mutex
	binDir   string
	binBuilt = map[string]error{}
)

func binary(t testing.TB, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDir == "" {
		dir, err := os.MkdirTemp("", "spillway-it-bin-")
		if err != nil {
			t.Fatal(err)
		}
		binDir = dir
	}
	err, done := binBuilt[name]
	if !done {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(binDir, name), "./cmd/"+name)
		cmd.Dir = testutil.RepoRoot(t)
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, berr, out)
		}
		binBuilt[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(forwardEnv); spec != "" {
		forwarderMain(spec) // never returns
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proc is a child process owned by a test.
type proc struct {
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan error
}

func startProc(t testing.TB, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), out: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Dir = t.TempDir() // so no .env of the developer's is read
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

// stop signals the process and waits up to d; it returns the exit error.
func (p *proc) stop(sig syscall.Signal, d time.Duration) (error, bool) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		p.done <- err
		return err, true
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		return <-p.done, false
	}
}

// stack is redis + localcloud + lb for one test, with a pool name of its own.
type stack struct {
	t        testing.TB
	redis    *testutil.Redis
	store    *registry.Store
	pool     string
	name     string
	cloudURL string
	cloud    *proc
	lb       *proc
	lbPort   int
	lbURL    string
	env      map[string]string
	// lbBinary, when set, is the lb binary launchLB runs instead of one
	// built from this tree.
	lbBinary string
}

type stackOptions struct {
	cloud bool // run localcloud and CLOUD=local; else CLOUD=off
	// unsafeCloud runs localcloud's environments as bare processes
	// (LOCALCLOUD_ISOLATION=unsafe-process): the protection-off variant of
	// the isolation tests. Otherwise each is a container of the worker image.
	unsafeCloud bool
	cloudEnv    []string          // extra localcloud environment (KEY=value)
	env         map[string]string // extra lb environment
}

func newStack(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	testutil.DockerImage(t, workerImage)
	s := &stack{t: t, redis: testutil.StartRedis(t), name: "faas"}
	s.pool = fmt.Sprintf("it%d", time.Now().UnixNano()%1_000_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	s.store, err = registry.Dial(ctx, s.redis.Addr, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.store.Close() })
	s.env = map[string]string{
		"REDIS_ADDR":         s.redis.Addr,
		"POOL_NAME":          s.pool,
		"FAAS_FUNCTION_NAME": s.name,
		"NUMBER_OF_SERVERS":  "2",
		"ELASTICITY_SLEEP":   "500ms",
		"LOCAL_TIMEOUT":      "5s",
		"WORKER_IMAGE":       workerImage,
		"LB_LISTEN_HOST":     "127.0.0.1",
		"CLOUD":              "off",
		"LOG_LEVEL":          "debug",
	}
	if opts.cloud {
		port := testutil.FreePort(t)
		s.cloudURL = "http://127.0.0.1:" + strconv.Itoa(port)
		cloudEnv := []string{"LOCALCLOUD_ISOLATION=container", "LOCALCLOUD_IMAGE=" + workerImage, "LOCALCLOUD_INSTANCE=" + s.pool}
		if opts.unsafeCloud {
			cloudEnv = []string{"LOCALCLOUD_ISOLATION=unsafe-process", "LOCALCLOUD_PYTHON=" + testutil.Python(t)}
		}
		cloudEnv = append(cloudEnv, opts.cloudEnv...)
		s.cloud = startProc(t, cloudEnv, binary(t, "localcloud"), "--listen", "127.0.0.1:"+strconv.Itoa(port))
		t.Cleanup(func() { s.cloud.stop(syscall.SIGTERM, 10*time.Second) })
		waitHTTP(t, s.cloudURL+"/health", 15*time.Second)
		s.env["CLOUD"] = "local"
		s.env["AWS_ENDPOINT_URL"] = s.cloudURL
		s.env["LAMBDA_NAME"] = "spillway-" + s.pool
		s.env["API_NAME"] = "spillway-" + s.pool
		s.env["AWS_ACCESS_KEY_ID"] = "test"
		s.env["AWS_SECRET_ACCESS_KEY"] = "test"
	}
	for k, v := range opts.env {
		s.env[k] = v
	}
	t.Cleanup(s.cleanupContainers)
	return s
}

// publish writes a new version of the function.
func (s *stack) publish(code string, style spillway.Style) spillway.Function {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fn, err := s.store.Publish(ctx, spillway.Function{Name: s.name, Code: code, Style: style})
	if err != nil {
		s.t.Fatalf("publish: %v", err)
	}
	return fn
}

// startLB starts lb and waits until /healthz says ready.
func (s *stack) startLB() {
	s.t.Helper()
	s.launchLB()
	s.waitLBReady()
}

// launchLB starts lb without waiting for it.
func (s *stack) launchLB() {
	s.t.Helper()
	s.lbPort = testutil.FreePort(s.t)
	s.lbURL = "http://127.0.0.1:" + strconv.Itoa(s.lbPort) + "/"
	env := []string{"LOAD_BALANCER_PORT=" + strconv.Itoa(s.lbPort)}
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	bin := s.lbBinary
	if bin == "" {
		bin = binary(s.t, "lb")
	}
	s.lb = startProc(s.t, env, bin)
	lb := s.lb
	s.t.Cleanup(func() {
		lb.stop(syscall.SIGTERM, 30*time.Second)
		if s.t.Failed() {
			s.t.Logf("lb log:\n%s", tail(lb.out.String(), 80))
			if s.cloud != nil {
				s.t.Logf("localcloud log:\n%s", tail(s.cloud.out.String(), 30))
			}
		}
	})
}

// waitLBReady waits until lb's /healthz says ready.
func (s *stack) waitLBReady() {
	s.t.Helper()
	lb := s.lb
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(s.lbURL + "healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-lb.done:
			lb.done <- err
			s.t.Fatalf("lb exited while starting: %v\n%s", err, tail(lb.out.String(), 60))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("lb not ready within 90s\n%s", tail(lb.out.String(), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCloudReady waits until lb has deployed the function to localcloud.
func (s *stack) waitCloudReady() {
	s.t.Helper()
	waitUntil(s.t, 60*time.Second, "cloud deployed", func() bool {
		st := s.status()
		details, _ := st["details"].(map[string]any)
		c, _ := details["cloud"].(map[string]any)
		ready, _ := c["ready"].(bool)
		return ready
	})
}

func (s *stack) client() *xmlrpc.Client {
	return xmlrpc.NewClient(s.lbURL, &http.Client{Timeout: 60 * time.Second})
}

func (s *stack) invoke(param any, opts map[string]any) (map[string]any, error) {
	args := []any{param}
	if opts != nil {
		args = append(args, opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var reply map[string]any
	err := s.client().Call(ctx, "invoke", args, &reply)
	return reply, err
}

func (s *stack) status() map[string]any {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reply map[string]any
	if err := s.client().Call(ctx, "status", nil, &reply); err != nil {
		s.t.Fatalf("status: %v", err)
	}
	return reply
}

// members returns the pool members from status, by state.
func (s *stack) members() []map[string]any {
	details, _ := s.status()["details"].(map[string]any)
	list, _ := details["members"].([]any)
	var out []map[string]any
	for _, m := range list {
		if mm, ok := m.(map[string]any); ok {
			out = append(out, mm)
		}
	}
	return out
}

// containers lists the Docker containers of this stack's pool.
func (s *stack) containers() []string {
	s.t.Helper()
	return dockerLines(s.t, "ps", "-a", "--filter", "label=spillway.pool="+s.pool, "--format", "{{.Names}}")
}

func (s *stack) cleanupContainers() {
	names := dockerLines(s.t, "ps", "-aq", "--filter", "label=spillway.pool="+s.pool)
	// localcloud's environments, should it have died without removing them.
	names = append(names, dockerLines(s.t, "ps", "-aq", "--filter", "label=spillway.localcloud="+s.pool)...)
	if len(names) > 0 {
		args := append([]string{"rm", "-f", "-v"}, names...)
		_ = exec.Command("docker", args...).Run()
	}
	nets := dockerLines(s.t, "network", "ls", "-q", "--filter", "label=spillway.pool="+s.pool)
	for _, n := range nets {
		_ = exec.Command("docker", "network", "rm", n).Run()
	}
}

func dockerLines(t testing.TB, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).Output()
	if err != nil {
		t.Fatalf("docker %v: %v", args, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func waitHTTP(t testing.TB, url string, d time.Duration) {
	t.Helper()
	waitUntil(t, d, url, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// python runs a Python snippet with Python's own xmlrpc.client and returns stdout.
func python(t testing.TB, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Python(t), append([]string{"-c", script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return string(out)
}

func readExample(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stopLB stops lb (which removes its workers) and waits for it.
func (s *stack) stopLB() {
	s.t.Helper()
	if err, ok := s.lb.stop(syscall.SIGTERM, 30*time.Second); !ok {
		s.t.Errorf("lb did not stop within 30s: %v", err)
	}
}
