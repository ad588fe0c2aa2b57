package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/testutil"
)

var workerImage = testutil.Image("worker")

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// startContainer runs the worker image the way lb does: hardened, function
// copied into the /var/task anonymous volume before start, port published
// on loopback only. It returns the worker's URL and the container name.
func startContainer(t *testing.T, function string, env ...string) (string, string) {
	t.Helper()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "spillway-test-worker-" + hex.EncodeToString(suffix)
	args := []string{"create", "--name", name,
		"--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges", "--user", "10001",
		"--pids-limit", "64", "--memory", "256m",
		"-v", "/var/task", "-p", "127.0.0.1::8001",
		"--label", "spillway.test=worker"}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	args = append(args, workerImage)
	docker(t, args...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", "--tail", "50", name).CombinedOutput()
			t.Logf("container logs:\n%s", out)
		}
		_ = exec.Command("docker", "rm", "-f", "-v", name).Run()
	})
	docker(t, "cp", function, name+":/var/task/function.py")
	docker(t, "start", name)
	hostPort := docker(t, "port", name, "8001/tcp")
	hostPort = strings.Split(hostPort, "\n")[0]
	url := "http://" + hostPort
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, name
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := exec.Command("docker", "logs", name).CombinedOutput()
	t.Fatalf("worker container %s not healthy within 30s:\n%s", name, out)
	return "", ""
}

func TestWorkerContainer(t *testing.T) {
	testutil.DockerImage(t, workerImage)
	examples := filepath.Join(testutil.RepoRoot(t), "examples")
	var wg sync.WaitGroup
	wg.Go(func() {
		t.Run("fib script", func(t *testing.T) {
			url, name := startContainer(t, filepath.Join(examples, "fib.py"),
				"FUNCTION_STYLE=script", "LOCAL_TIMEOUT=1", "WORKER_CONCURRENCY=2")
			got := pyCalls(t, url, false,
				call("call_function", "20"),
				call("call_function", "x"),
				call("call_function", "40"), // far past 1 s: killed
				call("call_function", "21"),
			)
			if got[0].Value != "The Fibonacci number of 20 is 6765\n" {
				t.Errorf("call_function(\"20\") = %+v", got[0])
			}
			if s, _ := got[1].Value.(string); !strings.HasPrefix(s, "Usage:") {
				t.Errorf("call_function(\"x\") = %+v, want the usage line", got[1])
			}
			// fib(40) runs for tens of seconds here: 5 s still proves the kill
			// at the 1 s timeout, with room for a loaded machine.
			if got[2].Fault != spillway.FaultTimeout || got[2].Seconds > 5 {
				t.Errorf("call_function(\"40\") = %+v, want a timeout fault within 5 s", got[2])
			}
			if got[3].Value != "The Fibonacci number of 21 is 10946\n" {
				t.Errorf("call after a timeout = %+v", got[3])
			}
			// The killed runner has been replaced, and its script child
			// reaped (the worker is PID 1 in the container).
			var health []pyAnswer
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				health = pyCalls(t, url, false, call("health"))
				h, _ := health[0].Value.(map[string]any)
				if h["runners"] == 2.0 && h["ready"] == true && h["failed"] == 1.0 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("health() = %+v, want 2 runners ready and 1 failed call within 15s", health[0])
					break
				}
			}
			// A process killed a moment ago is a zombie until it is reaped:
			// allow a few seconds on a loaded machine, but none may stay.
			var zombies string
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				zombies = docker(t, "exec", name, "/usr/bin/python3", "-c",
					`import glob
n = 0
for p in glob.glob("/proc/[0-9]*/stat"):
    try:
        s = open(p).read()
    except OSError:
        continue
    if s.rsplit(")", 1)[1].split()[0] == "Z":
        n += 1
print(n)`)
				if zombies == "0" || time.Now().After(deadline) {
					break
				}
			}
			if zombies != "0" {
				t.Errorf("%s zombie processes in the container after 5s", zombies)
			}
		})
	})
	wg.Go(func() {
		t.Run("handler returning a dict", func(t *testing.T) {
			url, _ := startContainer(t, filepath.Join(examples, "hello_handler.py"),
				"FUNCTION_STYLE=handler")
			got := pyCalls(t, url, false, call("call_function", "Spillway"))
			m, _ := got[0].Value.(map[string]any)
			if m["greeting"] != "Hello, Spillway!" || m["length"] != 8.0 {
				t.Errorf("call_function(\"Spillway\") = %+v", got[0])
			}
		})
		t.Run("runners see no worker environment", func(t *testing.T) {
			fn := filepath.Join(t.TempDir(), "function.py")
			code := "import os\ndef handler(event, context):\n    return sorted(os.environ)\n"
			if err := os.WriteFile(fn, []byte(code), 0o644); err != nil {
				t.Fatal(err)
			}
			url, _ := startContainer(t, fn, "FUNCTION_STYLE=handler", "AWS_SECRET_ACCESS_KEY=must-not-leak")
			got := pyCalls(t, url, false, call("call_function", ""))
			keys, _ := got[0].Value.([]any)
			if len(keys) == 0 {
				t.Fatalf("environment keys = %+v", got[0])
			}
			for _, k := range keys {
				if s, _ := k.(string); strings.HasPrefix(s, "AWS_") || s == "FUNCTION_PATH" {
					t.Errorf("runner sees %s", s)
				}
			}
		})
	})
	wg.Wait()
}
