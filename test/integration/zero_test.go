package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// poolSize is status().functions[name].pool_size and pool_ready.
func (s *stack) poolSize(name string) (size, ready int) {
	sec := s.section(name)
	sz, _ := sec["pool_size"].(int64)
	rd, _ := sec["pool_ready"].(int64)
	return int(sz), int(rd)
}

// runningContainers are the function's running containers: its workers,
// not its frozen spare (WORKER_SPARE), which the engine lists as paused.
func (s *stack) runningContainers(name string) []string {
	s.t.Helper()
	return dockerLines(s.t, "ps", "--filter", "label=spillway.pool="+s.pool,
		"--filter", "label=spillway.function="+name, "--filter", "status=running", "--format", "{{.Names}}")
}

// pausedContainers are the function's paused containers: its frozen spare.
func (s *stack) pausedContainers(name string) []string {
	s.t.Helper()
	return dockerLines(s.t, "ps", "--filter", "label=spillway.pool="+s.pool,
		"--filter", "label=spillway.function="+name, "--filter", "status=paused", "--format", "{{.Names}}")
}

// A function with --min 0 runs no worker until called. Its first call is
// answered by the cloud (reason cold) while a worker starts, or, when a
// frozen spare is there (WORKER_SPARE), by the spare, thawed in tens of
// milliseconds; with the cloud off and no spare it waits for the worker.
// The next calls are local, and after SCALE_TO_ZERO_AFTER without calls
// the function is at zero again.
func TestScaleToZero(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cloud, spare bool
		wantRoute    string
		wantReason   string
		within       time.Duration // the first call's answer
	}{
		{"the cloud hides the cold start", true, false, "cloud", "cold", 10 * time.Second},
		{"a frozen spare answers", true, true, "local", "", time.Second},
		{"cloud off: the call waits", false, false, "local", "", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{cloud: tc.cloud, env: map[string]string{
				"SCALE_TO_ZERO_AFTER": "4s", "ELASTICITY_SLEEP": "250ms", "NUMBER_OF_SERVERS": "1",
				"WORKER_SPARE": fmt.Sprint(tc.spare),
			}})
			zero := 0
			s.publishAs(s.name, sleeper, spillway.StyleHandler, spillway.Settings{Min: &zero})
			s.startLB()
			if tc.cloud {
				waitUntil(t, 90*time.Second, "faas deployed to the cloud", func() bool {
					c, _ := s.section("faas")["cloud"].(map[string]any)
					ready, _ := c["ready"].(bool)
					return ready
				})
			}
			if tc.spare {
				// The function's one frozen spare runs while it is made,
				// then is paused: no worker.
				waitUntil(t, 60*time.Second, "the frozen spare", func() bool { return len(s.pausedContainers("faas")) == 1 })
			}
			if size, _ := s.poolSize("faas"); size != 0 || len(s.runningContainers("faas")) != 0 {
				t.Fatalf("a function with --min 0 runs %d workers before its first call", size)
			}

			first := time.Now()
			r, err := s.invoke("first", nil)
			took := time.Since(first)
			if err != nil {
				t.Fatalf("first call: %v", err)
			}
			if str(r["route"]) != tc.wantRoute || str(r["reason"]) != tc.wantReason {
				t.Errorf("first call ran %v/%q, want %s/%q", r["route"], r["reason"], tc.wantRoute, tc.wantReason)
			}
			if took > tc.within {
				t.Errorf("first call answered in %v, want within %v", took, tc.within)
			}
			t.Logf("first call answered (%v) in %v", r["route"], took.Round(time.Millisecond))
			waitUntil(t, 30*time.Second, "a worker ready", func() bool { _, ready := s.poolSize("faas"); return ready >= 1 })
			up := time.Since(first)
			t.Logf("a worker ready %v after the first call", up.Round(time.Millisecond))
			// A start from nothing takes about a second here (more under a
			// loaded test run); a thawed spare, tens of milliseconds.
			limit := 5 * time.Second
			if tc.spare {
				limit = 2 * time.Second
			}
			if up > limit {
				t.Errorf("a worker was ready %v after the first call, want within %v", up, limit)
			}
			for i := range 3 {
				r, err := s.invoke(fmt.Sprint("next", i), nil)
				if err != nil || r["route"] != "local" {
					t.Errorf("call %d after the worker is up: %v, %v; want local", i, r, err)
				}
			}

			// Idle past SCALE_TO_ZERO_AFTER: back to zero.
			idle := time.Now()
			waitUntil(t, 60*time.Second, "scaled to zero", func() bool {
				size, _ := s.poolSize("faas")
				return size == 0 && len(s.runningContainers("faas")) == 0
			})
			if d := time.Since(idle); d < 3*time.Second {
				t.Errorf("scaled to zero %v after the last call, before SCALE_TO_ZERO_AFTER (4s)", d)
			}
		})
	}
}
