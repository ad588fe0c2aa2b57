package policy

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

func near(a, b, tol time.Duration) bool { d := a - b; return d >= -tol && d <= tol }

func TestEstimatorPriors(t *testing.T) {
	e := NewEstimator(EstimatorConfig{})
	got := e.Estimates(t0)
	d := DefaultEstimatorConfig()
	if got.LocalService != d.LocalService || got.WorkerColdStart != d.WorkerColdStart || got.ArrivalRate != 0 {
		t.Fatalf("priors: %+v", got)
	}
	if got.CloudRoundTrip != d.CloudCold {
		t.Fatalf("no cloud call yet: round trip %v, want the cold prior %v", got.CloudRoundTrip, d.CloudCold)
	}
}

func TestEstimatorLearns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		feed  func(e *Estimator)
		at    time.Time
		check func(t *testing.T, got Estimates)
	}{
		{"local mean", func(e *Estimator) {
			for i := range 400 {
				e.Observe(spillway.RouteLocal, time.Duration(40+20*(i%2))*ms, false, t0)
			}
		}, t0, func(t *testing.T, got Estimates) {
			if !near(got.LocalService, 50*ms, 2*ms) || got.LocalSamples != 400 {
				t.Fatalf("local %v (n=%d), want 50ms", got.LocalService, got.LocalSamples)
			}
		}},
		{"first sample replaces the prior", func(e *Estimator) {
			e.Observe(spillway.RouteLocal, 7*ms, false, t0)
		}, t0, func(t *testing.T, got Estimates) {
			if got.LocalService != 7*ms {
				t.Fatalf("local %v, want 7ms", got.LocalService)
			}
		}},
		{"cloud warm and cold", func(e *Estimator) {
			for i := range 1000 {
				cold := i%4 == 0
				d := 200 * ms
				if cold {
					d = 1200 * ms
				}
				e.Observe(spillway.RouteCloud, d, cold, t0)
			}
		}, t0.Add(time.Second), func(t *testing.T, got Estimates) {
			if !near(got.CloudWarm, 200*ms, ms) || !near(got.CloudCold, 1200*ms, ms) {
				t.Fatalf("warm %v cold %v", got.CloudWarm, got.CloudCold)
			}
			if math.Abs(got.CloudColdFraction-0.25) > 0.1 || !near(got.CloudRoundTrip, 450*ms, 100*ms) {
				t.Fatalf("cold fraction %v round trip %v, want about 0.25 and 450ms", got.CloudColdFraction, got.CloudRoundTrip)
			}
		}},
		{"cloud idle past keep-alive is cold", func(e *Estimator) {
			for range 100 {
				e.Observe(spillway.RouteCloud, 200*ms, false, t0)
			}
			e.Observe(spillway.RouteCloud, 900*ms, true, t0)
		}, t0.Add(6 * time.Minute), func(t *testing.T, got Estimates) {
			if got.CloudRoundTrip != got.CloudCold || !near(got.CloudCold, 900*ms, ms) {
				t.Fatalf("round trip %v, want the cold %v", got.CloudRoundTrip, got.CloudCold)
			}
		}},
		{"worker start", func(e *Estimator) {
			for range 50 {
				e.ObserveWorkerStart(3*time.Second, t0)
			}
		}, t0, func(t *testing.T, got Estimates) {
			if !near(got.WorkerColdStart, 3*time.Second, 10*ms) {
				t.Fatalf("worker start %v", got.WorkerColdStart)
			}
		}},
		{"steady arrivals", func(e *Estimator) {
			for i := range 5000 { // 50/s for 100s
				e.ObserveArrival(t0.Add(time.Duration(i) * 20 * ms))
			}
		}, t0.Add(100 * time.Second), func(t *testing.T, got Estimates) {
			if math.Abs(got.ArrivalRate-50) > 2 {
				t.Fatalf("rate %v, want 50", got.ArrivalRate)
			}
		}},
		{"arrivals stop", func(e *Estimator) {
			for i := range 500 {
				e.ObserveArrival(t0.Add(time.Duration(i) * 20 * ms))
			}
		}, t0.Add(40 * time.Second), func(t *testing.T, got Estimates) {
			if got.ArrivalRate > 0.01 {
				t.Fatalf("rate %v after 30s of silence, want ~0", got.ArrivalRate)
			}
		}},
		{"zero arrivals", func(e *Estimator) {}, t0.Add(time.Hour), func(t *testing.T, got Estimates) {
			if got.ArrivalRate != 0 {
				t.Fatalf("rate %v", got.ArrivalRate)
			}
		}},
		{"negative and unknown ignored", func(e *Estimator) {
			e.Observe(spillway.RouteLocal, -time.Second, false, t0)
			e.Observe("elsewhere", time.Second, false, t0)
			e.ObserveWorkerStart(-time.Second, t0)
		}, t0, func(t *testing.T, got Estimates) {
			if got.LocalSamples != 0 || got.CloudSamples != 0 || got.WorkerColdStart != 2*time.Second {
				t.Fatalf("%+v", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEstimator(EstimatorConfig{})
			tc.feed(e)
			tc.check(t, e.Estimates(tc.at))
		})
	}
}

func TestEstimatorConcurrent(t *testing.T) {
	e := NewEstimator(EstimatorConfig{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				now := t0.Add(time.Duration(i) * ms)
				e.ObserveArrival(now)
				e.Observe(spillway.RouteLocal, 10*ms, false, now)
				e.Observe(spillway.RouteCloud, 100*ms, g == 0, now)
				_ = e.Estimates(now)
			}
		})
	}
	wg.Wait()
	if got := e.Estimates(t0); got.LocalSamples != 4000 || got.CloudSamples != 4000 {
		t.Fatalf("lost observations: %+v", got)
	}
}

func TestEstimatorCloudEnvs(t *testing.T) {
	e := NewEstimator(EstimatorConfig{CloudKeepAlive: 10 * time.Minute})
	if got := e.Estimates(t0).CloudEnvs; got != 0 {
		t.Fatalf("envs before any call: %d", got)
	}
	for _, n := range []int{1, 2, 3, 2, 1} {
		e.ObserveCloudStart(n, t0)
	}
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{
		{0, 3}, {4 * time.Minute, 3}, {9 * time.Minute, 3}, {10 * time.Minute, 0}, {time.Hour, 0},
	} {
		if got := e.Estimates(t0.Add(tc.at)).CloudEnvs; got != tc.want {
			t.Errorf("envs at +%v: %d, want %d", tc.at, got, tc.want)
		}
	}
	// A call 6 minutes in keeps its own count alive for another window.
	e.ObserveCloudStart(1, t0.Add(6*time.Minute))
	if got := e.Estimates(t0.Add(12 * time.Minute)).CloudEnvs; got != 1 {
		t.Errorf("envs after the window moved: %d, want 1", got)
	}
}

func TestCloudRoundTrip(t *testing.T) {
	est := Estimates{CloudRoundTrip: 400 * ms, CloudWarm: 200 * ms, CloudCold: 1200 * ms}
	for _, tc := range []struct {
		name          string
		envs, inCloud int
		want          time.Duration
	}{
		{"envs unknown: blended", 0, 5, 400 * ms},
		{"a warm environment is free", 4, 3, 200 * ms},
		{"all environments busy: cold", 4, 4, 1200 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := est
			e.CloudEnvs = tc.envs
			if got := CloudRoundTrip(OffloadInput{CloudInFlight: tc.inCloud, Estimates: e}); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestEstimatorKeepWarm: an answered keep-warm ping makes the next cloud
// call expected warm until the keep-alive passes with no other ping or call;
// latency-aware then sends a call at zero to the warm cloud rather than
// waiting for a worker that starts about as fast as a cold Lambda.
func TestEstimatorKeepWarm(t *testing.T) {
	d := DefaultEstimatorConfig()
	for _, tc := range []struct {
		name   string
		pingAt []time.Duration // offsets from t0
		at     time.Duration
		warm   bool
	}{
		{"never pinged: cold", nil, 0, false},
		{"just pinged: warm", []time.Duration{0}, time.Second, true},
		{"pinged within the keep-alive", []time.Duration{0}, d.CloudKeepAlive - time.Second, true},
		{"keep-alive passed: cold", []time.Duration{0}, d.CloudKeepAlive + time.Second, false},
		{"pinged every 4 minutes: warm", []time.Duration{0, 4 * time.Minute, 8 * time.Minute}, 12*time.Minute - time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEstimator(EstimatorConfig{})
			for _, p := range tc.pingAt {
				e.ObserveKeepWarm(t0.Add(p))
			}
			est := e.Estimates(t0.Add(tc.at))
			est.WorkerColdStart = d.CloudCold - 200*ms
			in := OffloadInput{Now: t0.Add(tc.at), MaxSlots: 2, CloudAvailable: true, Estimates: est}
			want, wantRTT := goLocal, d.CloudCold
			want.MaxWait = 2 * est.WorkerColdStart
			if tc.warm {
				want, wantRTT = goCold, d.CloudWarm
			}
			if got := CloudRoundTrip(in); got != wantRTT {
				t.Fatalf("expected cloud round trip %v, want %v", got, wantRTT)
			}
			if dec := mustOffloader(t, OffloadLatencyAware, withLBDefaults(OffloadConfig{})).Decide(in); dec != want {
				t.Fatalf("at zero: %+v, want %+v", dec, want)
			}
		})
	}
}
