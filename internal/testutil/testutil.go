// Package testutil starts the real servers tests run against (redis-server,
// python) and decides whether a missing dependency skips or fails a test.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// IntegrationEnv is set to 1 by `make test`: there, a missing dependency
// (redis-server, Docker, an image) fails the test instead of skipping it, so
// CI can never pass by skipping.
const IntegrationEnv = "SPILLWAY_INTEGRATION"

// Require skips the test when ok is false, or fails it under `make test`.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(IntegrationEnv) == "1" {
		t.Fatalf("%s is required under %s=1 (make test installs it)", what, IntegrationEnv)
	}
	t.Skipf("%s not available; `make test` sets it up", what)
}

// Python returns the interpreter tests and benchmarks use: Debian's
// /usr/bin/python3, the same one the worker image carries, when present.
func Python(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("python3")
	Require(t, err == nil, "python3")
	return p
}

// Image is the project image name (worker, lb, localcloud) at the tag that
// make images built: IMAGE_TAG from the environment, else latest.
func Image(name string) string {
	tag := os.Getenv("IMAGE_TAG")
	if tag == "" {
		tag = "latest"
	}
	return "spillway-" + name + ":" + tag
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Redis is a redis-server process owned by a test.
type Redis struct {
	Addr     string
	Port     int
	Password string // requirepass, when set
	dir      string
	cmd      *exec.Cmd
	t        testing.TB
}

// StartRedis starts a private redis-server on a free loopback port and stops
// it when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return StartRedisAuth(t, "")
}

// StartRedisAuth is StartRedis with a password (requirepass) when password
// is not empty.
func StartRedisAuth(t testing.TB, password string) *Redis {
	t.Helper()
	_, err := exec.LookPath("redis-server")
	Require(t, err == nil, "redis-server")
	r := &Redis{dir: t.TempDir(), t: t, Password: password}
	r.Port = FreePort(t)
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.Port)
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start (re)starts the server on the same port; it blocks until it answers.
func (r *Redis) Start() {
	r.t.Helper()
	args := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir}
	if r.Password != "" {
		args = append(args, "--requirepass", r.Password)
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout = nil
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond)
		if err == nil {
			fmt.Fprint(c, "PING\r\n")
			buf := make([]byte, 16)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			// With a password, an unauthenticated PING answers NOAUTH.
			if got := string(buf[:n]); strings.HasPrefix(got, "+PONG") || strings.HasPrefix(got, "-NOAUTH") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("redis-server on %s did not answer within 10s", r.Addr)
}

// Stop kills the server and waits for it to exit.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// RepoRoot returns the module root, found from this file's location.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("locate testutil source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildBinary builds ./cmd/<name> into a temp dir and returns its path.
func BuildBinary(t testing.TB, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	return out
}

// Docker reports whether a Docker engine answers on the default socket.
func Docker(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").Run()
	Require(t, err == nil, "a Docker engine")
}

// DockerImage requires a local image (built by `make images`).
func DockerImage(t testing.TB, ref string) {
	t.Helper()
	Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := exec.CommandContext(ctx, "docker", "image", "inspect", ref).Run()
	Require(t, err == nil, "docker image "+ref+" (make images)")
}

// SyncBuffer collects a child process's output while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
