package integration

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// hostile is a handler-style function that tries, on request, what a
// hostile or buggy function would.
const hostile = `
import os, time

def handler(event, context):
    what = event["parameter"]
    if what == "env":
        return sorted(os.environ)
    if what.startswith("connect:"):
        import socket
        host, port = what[len("connect:"):].rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return "connected"
        except OSError as e:
            return "blocked: " + type(e).__name__
    if what == "whoami":
        return {"uid": os.getuid(), "gid": os.getgid()}
    if what == "write-root":
        with open("/spillway-was-here", "w") as f:
            f.write("x")
        return "wrote /"
    if what == "write-tmp":
        with open("/tmp/ok", "w") as f:
            f.write("x")
        return "wrote /tmp"
    if what == "fork-bomb":
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
    if what == "memory-bomb":
        hog = []
        while True:
            hog.append(bytearray(64 << 20))
    return "ok"
`

// startOutsideServer runs an HTTP server in a container of this test's own
// on a separate, ordinary bridge network and returns its address.
func startOutsideServer(t *testing.T, s *stack) string {
	t.Helper()
	network, name := s.pool+"-outside", s.pool+"-outside-server"
	label := "spillway.test=" + s.pool // not spillway.pool: it is no worker
	run := func(args ...string) string {
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("network", "create", "--label", label, network)
	t.Cleanup(func() {
		_ = exec.Command("docker", "rm", "-f", "-v", name).Run()
		_ = exec.Command("docker", "network", "rm", network).Run()
	})
	run("run", "-d", "--name", name, "--label", label, "--network", network, "--user", "10001",
		"--entrypoint", "python3", workerImage, "-m", "http.server", "8080", "--bind", "0.0.0.0")
	ip := run("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
	waitUntil(t, 15*time.Second, "outside server up", func() bool {
		c, err := net.DialTimeout("tcp", ip+":8080", time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return ip
}

func TestWorkerHardening(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{
		// Credentials lb holds must never reach a worker.
		"AWS_ACCESS_KEY_ID": "AKIASPILLWAYLEAK", "AWS_SECRET_ACCESS_KEY": "leak", "AWS_SESSION_TOKEN": "leak",
		"LB_AUTH_TOKEN": "", "LOCAL_TIMEOUT": "3s", "WORKER_MEMORY": "128m", "WORKER_PIDS_LIMIT": "64",
		"SCALE_DOWN_DELAY": "60s",
	}})
	s.publish(hostile, spillway.StyleHandler)
	s.startLB()

	local := map[string]any{"route": "local"}
	t.Run("no credentials in the environment", func(t *testing.T) {
		r, err := s.invoke("env", local)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range r["result"].([]any) {
			name := fmt.Sprint(k)
			if strings.HasPrefix(name, "AWS_") || strings.Contains(name, "REDIS") || strings.Contains(name, "TOKEN") {
				t.Errorf("worker environment has %s", name)
			}
		}
	})
	t.Run("no route out", func(t *testing.T) {
		// A server of ours on another (non-internal) network stands for
		// "outside": the host reaches it, a worker must not.
		ip := startOutsideServer(t, s)
		conn, err := net.DialTimeout("tcp", ip+":8080", 5*time.Second)
		if err != nil {
			t.Fatalf("the host cannot reach the outside server %s: %v", ip, err)
		}
		conn.Close()
		r, err := s.invoke("connect:"+ip+":8080", local)
		if err != nil {
			t.Fatal(err)
		}
		if res := str(r["result"]); !strings.HasPrefix(res, "blocked") {
			t.Errorf("a worker reached a server outside its network: %s", res)
		}
	})
	t.Run("not root", func(t *testing.T) {
		r, err := s.invoke("whoami", local)
		if err != nil {
			t.Fatal(err)
		}
		if id := r["result"].(map[string]any); id["uid"] == int64(0) {
			t.Errorf("function runs as root: %v", id)
		}
	})
	t.Run("read-only root, writable tmp", func(t *testing.T) {
		_, err := s.invoke("write-root", local)
		var f *xmlrpc.Fault
		if !errors.As(err, &f) || f.Code != spillway.FaultApplication {
			t.Fatalf("write to / = %v, want an application fault", err)
		}
		if !strings.Contains(f.String, "Read-only file system") && !strings.Contains(f.String, "Permission denied") {
			t.Errorf("write to / failed with %q", f.String)
		}
		if r, err := s.invoke("write-tmp", local); err != nil || r["result"] != "wrote /tmp" {
			t.Errorf("write to /tmp = %v, %v", r, err)
		}
	})
	t.Run("container settings", func(t *testing.T) {
		for _, name := range s.containers() {
			out, err := exec.Command("docker", "inspect", "--format",
				"{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.PidsLimit}} {{.HostConfig.Memory}} {{.Config.User}}", name).Output()
			if err != nil {
				t.Fatal(err)
			}
			got := strings.TrimSpace(string(out))
			for _, want := range []string{"true", "ALL", "no-new-privileges", " 64 ", strconv.Itoa(128 << 20)} {
				if !strings.Contains(got, want) {
					t.Errorf("%s: %q lacks %q", name, got, want)
				}
			}
		}
	})

	// Bombs are contained: the call fails (timeout or crash), the worker is
	// repaired or replaced, and lb keeps serving.
	for _, bomb := range []string{"fork-bomb", "memory-bomb"} {
		t.Run(bomb, func(t *testing.T) {
			start := time.Now()
			_, err := s.invoke(bomb, local)
			var f *xmlrpc.Fault
			if !errors.As(err, &f) {
				t.Fatalf("%s = %v, want a fault", bomb, err)
			}
			t.Logf("%s answered after %v with fault %d: %s", bomb, time.Since(start).Round(time.Millisecond), f.Code, f.String)
			if time.Since(start) > 15*time.Second {
				t.Errorf("%s took %v", bomb, time.Since(start))
			}
			waitUntil(t, 30*time.Second, "lb serves again", func() bool {
				for range 4 {
					if r, err := s.invoke("hello", nil); err != nil || r["result"] != "ok" {
						return false
					}
				}
				return true
			})
			for _, name := range s.containers() {
				out, err := exec.Command("docker", "exec", name, "sh", "-c", "ls /proc | grep -c '^[0-9]'").Output()
				if err == nil {
					if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n > 20 {
						t.Errorf("%s still has %d processes after %s", name, n, bomb)
					}
				}
			}
		})
	}
}
