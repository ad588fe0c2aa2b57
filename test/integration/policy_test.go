package integration

import (
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// desiredTrace polls status until stop and records each change of pool_desired.
func desiredTrace(s *stack, stop <-chan struct{}) []int64 {
	var trace []int64
	for {
		select {
		case <-stop:
			return trace
		default:
		}
		if d, ok := s.status()["pool_desired"].(int64); ok && (len(trace) == 0 || trace[len(trace)-1] != d) {
			trace = append(trace, d)
		}
		time.Sleep(40 * time.Millisecond)
	}
}

func burst(t *testing.T, s *stack, n int, param string) []map[string]any {
	t.Helper()
	var wg sync.WaitGroup
	out := make([]map[string]any, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.invoke(param, nil)
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
			out[i] = r
		}()
	}
	wg.Wait()
	return out
}

// TestAutoscalerStepsAndShrink: a burst of 4 slow calls on N=1, MAX=4. The
// predictive autoscaler asks for 4 in one tick; the reference rule climbs one
// worker per tick. After SCALE_DOWN_DELAY of quiet the pool is back to N.
func TestAutoscalerStepsAndShrink(t *testing.T) {
	tests := []struct {
		autoscaler string
		oneStep    bool
	}{
		{"predictive", true},
		{"reference", false},
	}
	for _, tt := range tests {
		t.Run(tt.autoscaler, func(t *testing.T) {
			s := newStack(t, stackOptions{env: map[string]string{
				"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "4", "AUTOSCALER": tt.autoscaler,
				"OFFLOAD_POLICY": "never", "ELASTICITY_SLEEP": "500ms", "SCALE_DOWN_DELAY": "2s",
			}})
			s.publish(sleeper, spillway.StyleHandler)
			s.startLB()

			stop := make(chan struct{})
			traceCh := make(chan []int64)
			go func() { traceCh <- desiredTrace(s, stop) }()
			began := time.Now()
			results := burst(t, s, 4, "sleep:3")
			took := time.Since(began)
			close(stop)
			trace := <-traceCh
			t.Logf("pool_desired over the burst: %v", trace)

			if len(trace) < 2 || trace[0] != 1 || trace[len(trace)-1] != 4 && maxOf(trace) != 4 {
				t.Fatalf("desired trace %v: want it to start at 1 and reach 4", trace)
			}
			steps := 0
			for i := 1; i < len(trace) && trace[i-1] < 4; i++ {
				if trace[i] > trace[i-1] {
					steps++
				}
			}
			if tt.oneStep && steps != 1 {
				t.Errorf("predictive reached 4 in %d steps (%v), want 1", steps, trace)
			}
			if !tt.oneStep && steps < 2 {
				t.Errorf("reference reached 4 in %d steps (%v), want several", steps, trace)
			}
			workers := map[string]bool{}
			for _, r := range results {
				if r != nil {
					workers[str(r["worker"])] = true
				}
			}
			t.Logf("burst ran on %d workers in %v", len(workers), took.Round(time.Millisecond))
			// The scale-up served the burst: on the first worker alone the four
			// 3 s calls take 12 s; workers that started for the burst ran some.
			if len(workers) < 2 || workers[""] {
				t.Errorf("burst ran on workers %v, want at least 2 named ones", workers)
			}
			if took >= 12*time.Second {
				t.Errorf("burst took %v, as long as on one worker: the new workers served nothing", took)
			}

			// Quiet: back to NUMBER_OF_SERVERS after SCALE_DOWN_DELAY (+ ticks and drain).
			start := time.Now()
			waitUntil(t, 20*time.Second, "pool back to 1", func() bool {
				st := s.status()
				return st["pool_size"] == int64(1) && st["pool_desired"] == int64(1)
			})
			took = time.Since(start)
			t.Logf("back to 1 worker %v after the burst", took.Round(time.Millisecond))
			if tt.autoscaler == "predictive" && took < 1500*time.Millisecond {
				t.Errorf("shrank after %v, before SCALE_DOWN_DELAY=2s", took)
			}
			// Removed workers' containers go too.
			waitUntil(t, 15*time.Second, "one container left", func() bool { return len(s.containers()) == 1 })
		})
	}
}

// TestLatencyAwareOffloadsSlowLocal: one local worker and a burst of calls
// that would queue behind each other; latency-aware sends the ones whose
// local wait exceeds the cloud's round trip to the cloud with reason policy.
func TestLatencyAwareOffloadsSlowLocal(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{
		"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "1", "OFFLOAD_POLICY": "latency-aware",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()
	// Teach the estimator both sides: local calls take ~0.5s; the cloud's
	// round trip (cold start included) is measured too.
	for _, route := range []string{"local", "local", "cloud", "cloud"} {
		if _, err := s.invoke("sleep:0.5", map[string]any{"route": route}); err != nil {
			t.Fatal(err)
		}
	}
	results := burst(t, s, 6, "sleep:0.5")
	var local, policy int
	for _, r := range results {
		switch {
		case r == nil:
		case r["route"] == "local":
			local++
		case r["route"] == "cloud" && r["reason"] == "policy":
			policy++
		default:
			t.Errorf("unexpected placement %v", r)
		}
	}
	t.Logf("burst of 6: %d local, %d cloud (policy)", local, policy)
	if local == 0 || policy == 0 {
		t.Errorf("latency-aware placed %d local and %d cloud; want both", local, policy)
	}
}

func maxOf(xs []int64) int64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
