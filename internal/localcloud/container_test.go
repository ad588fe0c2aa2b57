package localcloud_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/localcloud/localcloudtest"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// probePy tries, from inside an execution environment, everything function
// code must not reach. Each answer is "reached…" or "refused…".
var probePy = testutil.Probes + `
def handler(event, context):
    out = {"uid": os.getuid(), "interfaces": sorted(os.listdir("/sys/class/net"))}
    for name, addr in event.get("targets", {}).items():
        out[name] = tcp(addr)
    if event.get("runtime_api"):
        out["runtime_api"] = other_runtime_api()
    if event.get("write"):
        out["write"] = write_own_dir()
    if event.get("memory_mb"):
        out["memory"] = memory(event["memory_mb"])
    if event.get("processes"):
        out["processes"] = processes(event["processes"])
    return out
`

// startContainerCloud runs localcloud with container isolation on the
// worker image, with an instance label of the test's own.
func startContainerCloud(t *testing.T, cfg localcloud.Config) *localcloudtest.Cloud {
	t.Helper()
	image := testutil.Image("worker")
	testutil.DockerImage(t, image)
	cfg.Isolation = localcloud.IsolationContainer
	cfg.Image = image
	if cfg.Instance == "" {
		cfg.Instance = fmt.Sprintf("lctest-%d", time.Now().UnixNano())
	}
	return localcloudtest.Start(t, cfg)
}

// instanceContainers lists the containers labelled with instance.
func instanceContainers(t *testing.T, instance string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label="+localcloud.LabelInstance+"="+instance).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}

// hostService listens on every interface of the host, like a service a
// function should not reach, and returns the addresses to try it at: the
// loopback and a non-loopback address.
func hostService(t *testing.T) map[string]string {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	targets := map[string]string{"host_loopback": "127.0.0.1:" + port}
	// And a non-loopback address of the host (the Docker bridge's, say):
	// where a container with a network would find it.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			targets["host_address"] = net.JoinHostPort(ipn.IP.String(), port)
			break
		}
	}
	if targets["host_address"] == "" {
		t.Fatal("the host has no non-loopback IPv4 address to probe")
	}
	return targets
}

func invokeJSON(t *testing.T, ctx context.Context, lc *lambda.Client, name string, event any) (map[string]any, string) {
	t.Helper()
	b, _ := json.Marshal(event)
	out, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), Payload: b})
	if err != nil {
		t.Fatalf("Invoke %s: %v", name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Payload, &m); err != nil {
		t.Fatalf("Invoke %s payload %q: %v", name, out.Payload, err)
	}
	return m, aws.ToString(out.FunctionError)
}

func createWithMemory(t *testing.T, ctx context.Context, lc *lambda.Client, name, code string, timeout, memoryMB int32) {
	t.Helper()
	if _, err := lc.CreateFunction(ctx, &lambda.CreateFunctionInput{
		FunctionName: aws.String(name), Runtime: types.RuntimePython312, Role: aws.String(role),
		Handler: aws.String("app.handler"), Code: &types.FunctionCode{ZipFile: zipOf(t, map[string]string{"app.py": code})},
		Timeout: aws.Int32(timeout), MemorySize: aws.Int32(memoryMB),
	}); err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
}

// TestEnvironmentIsolation runs the probe in both modes. In a container,
// each attempt is refused: no interface but loopback, no host service (on
// loopback or another address of the host), no localcloud API, no other
// environment's runtime API, a read-only code directory, and the memory and
// process limits hold. The unsafe-process variant is the same probe with
// the protection off: every attempt succeeds there, so the container
// results are the container's doing.
func TestEnvironmentIsolation(t *testing.T) {
	for _, mode := range []localcloud.Isolation{localcloud.IsolationContainer, localcloud.IsolationUnsafeProcess} {
		t.Run(string(mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			defer cancel()
			cfg := localcloud.Config{TransitionDelay: -1, PidsLimit: 64, MaxMemoryMB: 128}
			var cloud *localcloudtest.Cloud
			if mode == localcloud.IsolationContainer {
				cloud = startContainerCloud(t, cfg)
			} else {
				cloud = localcloudtest.Start(t, cfg)
			}
			lc := cloud.Lambda()
			createWithMemory(t, ctx, lc, "victim", echoPy, 30, 128)
			createWithMemory(t, ctx, lc, "probe", probePy, 60, 128)
			waitActive(t, ctx, lc, "victim", "probe")
			// A warm victim: its bootstrap waits on its runtime API.
			if _, fe := invokeJSON(t, ctx, lc, "victim", map[string]any{"x": 1}); fe != "" {
				t.Fatalf("victim failed: %s", fe)
			}

			targets := hostService(t)
			targets["localcloud_api"] = strings.TrimPrefix(cloud.URL, "http://")
			got, fe := invokeJSON(t, ctx, lc, "probe", map[string]any{
				"targets": targets, "runtime_api": true, "write": true,
				// Twice the memory limit; more processes than the pids limit.
				"memory_mb": 256, "processes": 100,
			})
			if fe != "" && mode == localcloud.IsolationUnsafeProcess {
				t.Fatalf("probe failed: %s %v", fe, got)
			}
			t.Logf("%s probe: %v", mode, got)

			checks := []string{"runtime_api", "write", "processes"}
			for name := range targets {
				checks = append(checks, name)
			}
			if mode == localcloud.IsolationContainer {
				if fe != "" {
					// The memory limit killed the whole environment: run the
					// rest of the probe again without the memory attempt.
					if !strings.Contains(fmt.Sprint(got), "out of memory") {
						t.Errorf("probe in a container failed with %v, want the out-of-memory kill", got)
					}
					got, fe = invokeJSON(t, ctx, lc, "probe", map[string]any{
						"targets": targets, "runtime_api": true, "write": true, "processes": 100,
					})
					if fe != "" {
						t.Fatalf("probe without the memory attempt failed: %v", got)
					}
					t.Logf("%s probe without the memory attempt: %v", mode, got)
				} else if m, _ := got["memory"].(string); !strings.HasPrefix(m, "refused") {
					t.Errorf("memory = %q, want refused (killed or MemoryError) at the 128 MB limit", m)
				}
				for _, k := range checks {
					if v, _ := got[k].(string); !strings.HasPrefix(v, "refused") {
						t.Errorf("%s = %q, want refused", k, v)
					}
				}
				if ifs := fmt.Sprint(got["interfaces"]); ifs != "[lo]" {
					t.Errorf("interfaces = %s, want only [lo]", ifs)
				}
				if uid, _ := got["uid"].(float64); uid == 0 {
					t.Errorf("probe runs as root")
				}
				return
			}
			// Protection off: the same attempts succeed.
			checks = append(checks, "memory")
			for _, k := range checks {
				if v, _ := got[k].(string); !strings.HasPrefix(v, "reached") {
					t.Errorf("unsafe-process %s = %q, want reached (the attack works without the container)", k, v)
				}
			}
		})
	}
}

func waitActive(t *testing.T, ctx context.Context, lc *lambda.Client, names ...string) {
	t.Helper()
	w := lambda.NewFunctionActiveV2Waiter(lc, func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
	})
	for _, n := range names {
		if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(n)}, 30*time.Second); err != nil {
			t.Fatalf("wait for %s to be Active: %v", n, err)
		}
	}
}

// TestContainerEnvironmentLifecycle: in container mode, environments stay
// warm and are reused, the function's timeout ends one (its container
// removed), the concurrency limit answers 429, leftovers of a crashed
// localcloud with the same instance are removed at start, and Close
// removes every container.
func TestContainerEnvironmentLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	instance := fmt.Sprintf("lclife-%d", time.Now().UnixNano())
	image := testutil.Image("worker")
	testutil.DockerImage(t, image)
	// A leftover of a crashed localcloud of this instance.
	if out, err := exec.Command("docker", "create", "--label", localcloud.LabelInstance+"="+instance, "--network", "none",
		"--entrypoint", "/bin/true", image).CombinedOutput(); err != nil {
		t.Fatalf("docker create: %v %s", err, out)
	}
	t.Cleanup(func() {
		for _, id := range instanceContainers(t, instance) {
			_ = exec.Command("docker", "rm", "-f", "-v", id).Run()
		}
	})

	cloud := startContainerCloud(t, localcloud.Config{TransitionDelay: -1, Concurrency: 2, Instance: instance})
	if n := len(instanceContainers(t, instance)); n != 0 {
		t.Errorf("%d containers of the instance after start, want the leftover removed", n)
	}
	lc := cloud.Lambda(localcloudtest.NoRetries)
	createWithMemory(t, ctx, lc, "echo", echoPy, 4, 128)
	waitActive(t, ctx, lc, "echo")

	_, m := mustInvoke(t, ctx, lc, "echo", map[string]any{"n": 1})
	if fmt.Sprint(m["event"]) != "map[n:1]" {
		t.Fatalf("cold invoke = %v", m)
	}
	out, m := mustInvoke(t, ctx, lc, "echo", map[string]any{"n": 2})
	if fmt.Sprint(m["event"]) != "map[n:2]" {
		t.Fatalf("warm invoke = %v", m)
	}
	if !strings.Contains(decodeLog(t, out.LogResult), "echo called") {
		t.Errorf("LogResult lacks the function's output: %q", decodeLog(t, out.LogResult))
	}
	if st := cloud.Server.Stats(); st.ColdStarts != 1 || st.Invocations != 2 || st.Environments != 1 {
		t.Errorf("after a cold and a warm call: %+v, want 1 cold start, 2 invocations, 1 environment", st)
	}
	if n := len(instanceContainers(t, instance)); n != 1 {
		t.Errorf("%d environment containers, want 1", n)
	}

	// Two slow calls hold both slots; a third gets 429.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(map[string]any{"sleep": 3})
			_, _ = lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: b})
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for cloud.Server.Stats().InFlight < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("two calls never in flight: %+v", cloud.Server.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{}`)})
	var tooMany *types.TooManyRequestsException
	if !errors.As(err, &tooMany) {
		t.Errorf("third concurrent call: %v, want TooManyRequestsException", err)
	}
	wg.Wait()

	// The timeout (4s) ends the environment; its container goes.
	b, _ := json.Marshal(map[string]any{"sleep": 20})
	res, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: b})
	if err != nil || aws.ToString(res.FunctionError) == "" || !strings.Contains(string(res.Payload), "Task timed out") {
		t.Errorf("slow call = %v %s, want a timeout error", err, resPayload(res))
	}
	before := cloud.Server.Stats()
	if before.Timeouts != 1 {
		t.Errorf("timeouts = %d, want 1", before.Timeouts)
	}
	waitFor(t, "at most the warm containers left", 60*time.Second, func() bool {
		return len(instanceContainers(t, instance)) == cloud.Server.Stats().Environments
	})
	_, m = mustInvoke(t, ctx, lc, "echo", map[string]any{"n": 3})
	if fmt.Sprint(m["event"]) != "map[n:3]" {
		t.Errorf("after the timeout = %v", m)
	}

	closeCtx, cancelClose := context.WithTimeout(ctx, 60*time.Second)
	defer cancelClose()
	if err := cloud.Server.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if ids := instanceContainers(t, instance); len(ids) != 0 {
		t.Errorf("containers left after Close: %v", ids)
	}
}

func resPayload(res *lambda.InvokeOutput) string {
	if res == nil {
		return ""
	}
	return string(res.Payload)
}

func decodeLog(t *testing.T, b64 *string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(aws.ToString(b64))
	if err != nil {
		t.Fatalf("LogResult: %v", err)
	}
	return string(b)
}

// TestCloseDuringColdStart: Close while an environment's container is being
// started (created, not yet answering) ends the invocation and leaves no
// container behind. Close waits for starts in flight, so a container created
// after its sweep is still removed; this test checks the outcome, it does
// not force that interleaving.
func TestCloseDuringColdStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	instance := fmt.Sprintf("lcclose-%d", time.Now().UnixNano())
	cloud := startContainerCloud(t, localcloud.Config{TransitionDelay: -1, Instance: instance})
	lc := cloud.Lambda(localcloudtest.NoRetries)
	createWithMemory(t, ctx, lc, "echo", echoPy, 10, 128)
	waitActive(t, ctx, lc, "echo")

	done := make(chan error, 1)
	go func() {
		_, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"sleep": 30}`)})
		done <- err
	}()
	waitFor(t, "a cold start in flight", 60*time.Second, func() bool { return len(instanceContainers(t, instance)) == 1 })
	closeCtx, cancelClose := context.WithTimeout(ctx, 60*time.Second)
	defer cancelClose()
	if err := cloud.Server.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Once the invocation has ended too, nothing of the start is left.
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the invocation did not end after Close")
	}
	if ids := instanceContainers(t, instance); len(ids) != 0 {
		t.Errorf("containers left after Close during a cold start: %v", ids)
	}
}
