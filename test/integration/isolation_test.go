package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// probe is a handler-style function that tries, on request, to reach what
// function code must not: each answer is "reached…" or "refused…". Its
// parameter is a JSON object (see the tests).
var probe = testutil.Probes + `
import json, time

def handler(event, context):
    req = json.loads(event["parameter"])
    if req.get("sleep"):
        time.sleep(req["sleep"])
        return {"slept": req["sleep"]}
    if req.get("fork_bomb"):
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
    if req.get("memory_bomb"):
        hog = []
        while True:
            hog.append(b"\x01" * (16 << 20))
    out = {"where": os.environ.get("AWS_LAMBDA_RUNTIME_API", "worker")}
    for name, addr in req.get("targets", {}).items():
        out[name] = tcp(addr)
    if req.get("runtime_api"):
        out["runtime_api"] = other_runtime_api()
    if req.get("write"):
        out["write"] = write_own_dir()
    if req.get("memory_mb"):
        out["memory"] = memory(req["memory_mb"])
    if req.get("processes"):
        out["processes"] = processes(req["processes"])
    return out
`

func probeParam(t *testing.T, req map[string]any) string {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// probeResult invokes the probe with route forced and returns its answers.
func probeResult(t *testing.T, s *stack, route string, req map[string]any) map[string]any {
	t.Helper()
	r, err := s.invoke(probeParam(t, req), map[string]any{"route": route})
	if err != nil {
		t.Fatalf("probe forced %s: %v", route, err)
	}
	if r["route"] != route {
		t.Fatalf("probe forced %s ran %v", route, r["route"])
	}
	got, ok := r["result"].(map[string]any)
	if !ok {
		t.Fatalf("probe forced %s answered %v", route, r)
	}
	return got
}

// cloudStats reads localcloud's counters.
func (s *stack) cloudStats() map[string]any {
	s.t.Helper()
	resp, err := http.Get(s.cloudURL + "/_localcloud/stats")
	if err != nil {
		s.t.Fatalf("localcloud stats: %v", err)
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("localcloud stats: %v", err)
	}
	return st
}

// TestProbeLocalAndForcedCloud runs the probe in a worker and forced to the
// cloud (lb → API Gateway → localcloud). It tries Redis, lb, localcloud's
// API, another environment's Runtime API (a second environment is kept busy
// meanwhile) and writing its own code. With localcloud's containers every
// attempt is refused, in the worker too; the unsafe-process variant is the
// same probe with the protection off, and there every cloud attempt
// succeeds, so the refusals are the containers' doing.
func TestProbeLocalAndForcedCloud(t *testing.T) {
	for _, unsafe := range []bool{false, true} {
		name := "container"
		if unsafe {
			name = "unsafe-process"
		}
		t.Run(name, func(t *testing.T) {
			s := newStack(t, stackOptions{cloud: true, unsafeCloud: unsafe, env: map[string]string{
				"NUMBER_OF_SERVERS": "1", "LAMBDA_MEMORY": "128", "LOCAL_TIMEOUT": "30s",
			}})
			s.publish(probe, spillway.StyleHandler)
			s.startLB()
			s.waitCloudReady()
			targets := map[string]string{
				"redis":          s.redis.Addr,
				"lb":             strings.TrimSuffix(strings.TrimPrefix(s.lbURL, "http://"), "/"),
				"localcloud_api": strings.TrimPrefix(s.cloudURL, "http://"),
			}

			// A second environment, busy while the probe runs.
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.invoke(probeParam(t, map[string]any{"sleep": 15}), map[string]any{"route": "cloud"}); err != nil {
					t.Errorf("busy call: %v", err)
				}
			}()
			waitUntil(t, 60*time.Second, "a busy environment in localcloud", func() bool {
				f, _ := s.cloudStats()["in_flight"].(float64)
				return f >= 1
			})
			cloud := probeResult(t, s, "cloud", map[string]any{"targets": targets, "runtime_api": true, "write": true})
			wg.Wait()
			t.Logf("%s, in the cloud: %v", name, cloud)
			local := probeResult(t, s, "local", map[string]any{"targets": targets, "write": true})
			t.Logf("%s, in a worker: %v", name, local)

			want := "refused"
			if unsafe {
				want = "reached"
			}
			for _, k := range []string{"redis", "lb", "localcloud_api", "runtime_api", "write"} {
				if v, _ := cloud[k].(string); !strings.HasPrefix(v, want) {
					t.Errorf("cloud %s = %q, want %s", k, v, want)
				}
			}
			// In a worker (whose protection-off variants are in
			// security_test.go) the same attempts are refused.
			for _, k := range []string{"redis", "lb", "localcloud_api", "write"} {
				if v, _ := local[k].(string); !strings.HasPrefix(v, "refused") {
					t.Errorf("worker %s = %q, want refused", k, v)
				}
			}
		})
	}
}

// TestBombsForcedToCloud: a fork bomb and a memory bomb forced to the cloud
// end as faults, while lb and localcloud keep serving other calls. What
// contains them is the environment container's pids and memory limits: the
// unsafe-process variant shows, with bounded attempts instead of bombs
// (never a real bomb on the host), that without the container the same
// function exceeds both limits.
func TestBombsForcedToCloud(t *testing.T) {
	const limitMB, pids = 128, 64
	env := map[string]string{"NUMBER_OF_SERVERS": "1", "LAMBDA_MEMORY": fmt.Sprint(limitMB), "LAMBDA_TIMEOUT": "5s", "LOCAL_TIMEOUT": "30s"}
	cloudEnv := []string{"LOCALCLOUD_PIDS_LIMIT=" + fmt.Sprint(pids), "LOCALCLOUD_CONCURRENCY=6"}
	bounded := map[string]any{"memory_mb": 2 * limitMB, "processes": pids + 36}

	t.Run("unsafe-process", func(t *testing.T) {
		s := newStack(t, stackOptions{cloud: true, unsafeCloud: true, cloudEnv: cloudEnv, env: env})
		s.publish(probe, spillway.StyleHandler)
		s.startLB()
		s.waitCloudReady()
		got := probeResult(t, s, "cloud", bounded)
		for _, k := range []string{"memory", "processes"} {
			if v, _ := got[k].(string); !strings.HasPrefix(v, "reached") {
				t.Errorf("unsafe-process %s = %q, want reached: no limit holds a bare process", k, v)
			}
		}
	})

	t.Run("container", func(t *testing.T) {
		s := newStack(t, stackOptions{cloud: true, cloudEnv: cloudEnv, env: env})
		s.publish(probe, spillway.StyleHandler)
		s.startLB()
		s.waitCloudReady()
		// The bounded attempts are refused here (the memory one kills its
		// environment: a fault).
		if _, err := s.invoke(probeParam(t, map[string]any{"memory_mb": 2 * limitMB}), map[string]any{"route": "cloud"}); err == nil {
			t.Errorf("holding %d MB in a %d MB environment succeeded", 2*limitMB, limitMB)
		}
		got := probeResult(t, s, "cloud", map[string]any{"processes": pids + 36})
		if v, _ := got["processes"].(string); !strings.HasPrefix(v, "refused") {
			t.Errorf("processes = %q, want refused at the pids limit", v)
		}

		// The bombs, two of each, all at once.
		var wg sync.WaitGroup
		bombErrs := make(chan error, 4)
		for _, bomb := range []string{"fork_bomb", "memory_bomb", "fork_bomb", "memory_bomb"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.invoke(probeParam(t, map[string]any{bomb: true}), map[string]any{"route": "cloud"})
				bombErrs <- err
			}()
		}
		// While they run, lb and localcloud serve: health and real calls,
		// local and in the cloud.
		waitUntil(t, 60*time.Second, "bombs running in localcloud", func() bool {
			f, _ := s.cloudStats()["in_flight"].(float64)
			return f >= 2
		})
		for i := range 3 {
			for _, url := range []string{s.lbURL + "healthz", s.cloudURL + "/health"} {
				resp, err := http.Get(url)
				if err != nil {
					t.Fatalf("%s during the bombs: %v", url, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s during the bombs: HTTP %d", url, resp.StatusCode)
				}
			}
			for _, route := range []string{"local", "cloud"} {
				got := probeResult(t, s, route, map[string]any{"targets": map[string]string{}})
				if got["where"] == nil {
					t.Errorf("call %d forced %s during the bombs answered %v", i, route, got)
				}
			}
		}
		wg.Wait()
		close(bombErrs)
		for err := range bombErrs {
			if err == nil {
				t.Errorf("a bomb returned a result; want a fault (killed or timed out)")
			}
		}
		// And after them.
		if got := probeResult(t, s, "cloud", map[string]any{}); got["where"] != "stdio" {
			t.Errorf("call after the bombs ran in %v, want a container environment (stdio)", got["where"])
		}

		// localcloud's SIGTERM removes every environment container.
		label := "label=spillway.localcloud=" + s.pool
		if len(dockerLines(t, "ps", "-aq", "--filter", label)) == 0 {
			t.Fatalf("no environment container of %s before localcloud stops", s.pool)
		}
		if err, exited := s.cloud.stop(syscall.SIGTERM, 60*time.Second); !exited || err != nil {
			t.Fatalf("localcloud after SIGTERM: exited %v, %v", exited, err)
		}
		if left := dockerLines(t, "ps", "-aq", "--filter", label); len(left) != 0 {
			t.Errorf("environment containers left after localcloud stopped: %v", left)
		}
	})
}
