package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// runsCounter answers how many times it ran in its execution environment.
const runsCounter = `runs = 0

def handler(event, context):
    global runs
    runs += 1
    return runs
`

// With CLOUD_KEEP_WARM=true lb pings the Lambda of a function at zero: the
// first call, sent to the cloud with reason cold, finds a warm environment
// that has not run the function (the counter answers 1). Without it the
// same call cold-starts the Lambda.
func TestKeepWarm(t *testing.T) {
	for _, keepWarm := range []bool{true, false} {
		t.Run(fmt.Sprintf("keep-warm=%v", keepWarm), func(t *testing.T) {
			s := newStack(t, stackOptions{cloud: true, env: map[string]string{
				"CLOUD_KEEP_WARM": fmt.Sprint(keepWarm), "CLOUD_KEEP_WARM_EVERY": "30s",
				"ELASTICITY_SLEEP": "250ms", "SCALE_TO_ZERO_AFTER": "1m",
				// No frozen spare: it would answer the first call locally.
				"WORKER_SPARE": "false",
			}})
			zero := 0
			s.publishAs(s.name, runsCounter, spillway.StyleHandler, spillway.Settings{Min: &zero})
			s.startLB()
			waitUntil(t, 90*time.Second, "faas deployed to the cloud", func() bool {
				c, _ := s.section("faas")["cloud"].(map[string]any)
				ready, _ := c["ready"].(bool)
				return ready
			})
			if keepWarm {
				// A ping started an environment and answered: it is idle, warm.
				waitUntil(t, 60*time.Second, "an environment warmed by a keep-warm ping", func() bool {
					return s.cloudInvocations() >= 1 && s.cloudIdleEnvironments() >= 1
				})
			} else if n := s.cloudInvocations(); n != 0 {
				t.Fatalf("localcloud ran %d invocations without keep-warm, want none", n)
			}
			r, err := s.invoke("first", nil)
			if err != nil {
				t.Fatalf("first call: %v", err)
			}
			cold, _ := r["cold_start"].(bool)
			if r["route"] != "cloud" || r["reason"] != "cold" || cold == keepWarm || r["result"] != int64(1) {
				t.Fatalf("first call: route %v, reason %v, cold start %v, result %v; want cloud, cold, cold start %v, result 1 (the function's first run)",
					r["route"], r["reason"], cold, r["result"], !keepWarm)
			}
			t.Logf("first call answered by the cloud in %v ms, cold start %v", r["duration_ms"], cold)
			if ms, _ := r["duration_ms"].(float64); keepWarm && ms >= 1000 {
				t.Errorf("first call of a function at zero took %v ms with a warm cloud, want under 1 s", ms)
			}
		})
	}
}

// cloudIdleEnvironments is how many of localcloud's execution environments
// are warm and idle, over all functions.
func (s *stack) cloudIdleEnvironments() int {
	s.t.Helper()
	resp, err := http.Get(s.cloudURL + "/_localcloud/stats")
	if err != nil {
		s.t.Fatalf("localcloud stats: %v", err)
	}
	defer resp.Body.Close()
	var st struct {
		PerFunction map[string]struct {
			Idle int `json:"idle"`
		} `json:"per_function"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("localcloud stats: %v", err)
	}
	n := 0
	for _, f := range st.PerFunction {
		n += f.Idle
	}
	return n
}
