package policy

import (
	"testing"
	"time"
)

func mustAutoscaler(t *testing.T, name string, cfg ScaleConfig) Autoscaler {
	t.Helper()
	a, err := NewAutoscaler(name, cfg)
	if err != nil {
		t.Fatalf("NewAutoscaler(%q): %v", name, err)
	}
	return a
}

func TestNewAutoscaler(t *testing.T) {
	ok := ScaleConfig{N: 2, Max: 4, Concurrency: 1, ScaleDownDelay: 30 * time.Second, Tick: time.Second, TargetUtilization: 0.8}
	for _, tc := range []struct {
		name    string
		mod     func(*ScaleConfig)
		wantErr bool
	}{
		{"", nil, false},
		{"reference", nil, false},
		{"predictive", nil, false},
		{"magic", nil, true},
		{"predictive", func(c *ScaleConfig) { c.N = 0 }, true},
		{"predictive", func(c *ScaleConfig) { c.Max = 1 }, true},
		{"predictive", func(c *ScaleConfig) { c.Concurrency = 0 }, true},
		{"predictive", func(c *ScaleConfig) { c.ScaleDownDelay = -1 }, true},
		{"predictive", func(c *ScaleConfig) { c.TargetUtilization = 1.5 }, true},
		{"predictive", func(c *ScaleConfig) { c.TargetUtilization = 0 }, true},
		{"reference", func(c *ScaleConfig) { c.TargetUtilization = 0 }, false},
		{"reference", func(c *ScaleConfig) { c.N, c.Max = 1, 1 }, false},
		{"predictive", func(c *ScaleConfig) { c.N, c.ZeroAfter = 0, time.Minute }, false},
		{"reference", func(c *ScaleConfig) { c.N, c.ZeroAfter = 0, time.Minute }, false},
		{"predictive", func(c *ScaleConfig) { c.N, c.Max, c.ZeroAfter = 0, 0, time.Minute }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			if tc.mod != nil {
				tc.mod(&c)
			}
			_, err := NewAutoscaler(tc.name, c)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

// step is one tick: what the lb saw and what the autoscaler must answer. The
// pool follows each decision (Members = previous Desired) unless members is
// set (>0).
type step struct {
	at       time.Duration
	members  int
	inFlight int
	queued   int
	rate     float64
	want     int
	reason   string
}

func runSteps(t *testing.T, a Autoscaler, start int, svc time.Duration, steps []step) {
	t.Helper()
	cur := start
	for i, s := range steps {
		if s.members > 0 {
			cur = s.members
		}
		got := a.Decide(ScaleSnapshot{Now: t0.Add(s.at), Members: cur, Ready: cur, InFlight: s.inFlight,
			Queued: s.queued, ArrivalRate: s.rate, ServiceTime: svc, ColdStart: time.Second})
		if got.Desired != s.want || (s.reason != "" && got.Reason != s.reason) {
			t.Fatalf("step %d (t=%v, members %d): got %+v, want %d %q", i, s.at, cur, got, s.want, s.reason)
		}
		cur = got.Desired
	}
}

func TestReferenceAutoscaler(t *testing.T) {
	sec := time.Second
	for _, tc := range []struct {
		name  string
		cfg   ScaleConfig
		start int
		steps []step
	}{
		{"one per tick up, one per tick down", ScaleConfig{N: 2, Max: 6, Concurrency: 1}, 2, []step{
			{at: 0, inFlight: 6, want: 3, reason: ScaleUp},
			{at: sec, inFlight: 6, want: 4},
			{at: 2 * sec, inFlight: 5, queued: 1, want: 5},
			{at: 3 * sec, inFlight: 6, want: 6},
			{at: 4 * sec, inFlight: 6, queued: 9, want: 6, reason: ScaleHold},
			{at: 5 * sec, inFlight: 0, want: 5, reason: ScaleDown},
			{at: 6 * sec, inFlight: 0, want: 4},
			{at: 7 * sec, inFlight: 3, want: 3},
			{at: 8 * sec, inFlight: 3, want: 3, reason: ScaleHold},
			{at: 9 * sec, want: 2},
			{at: 10 * sec, want: 2, reason: ScaleHold},
		}},
		{"concurrency counts slots", ScaleConfig{N: 1, Max: 4, Concurrency: 4}, 1, []step{
			{at: 0, inFlight: 4, want: 1, reason: ScaleHold},
			{at: sec, inFlight: 4, queued: 1, want: 2},
			{at: 2 * sec, inFlight: 5, want: 2},
		}},
		{"MAX=N", ScaleConfig{N: 3, Max: 3, Concurrency: 1}, 3, []step{
			{at: 0, inFlight: 30, want: 3, reason: ScaleHold},
			{at: sec, want: 3, reason: ScaleHold},
		}},
		{"N=1 zero load", ScaleConfig{N: 1, Max: 2, Concurrency: 1}, 1, []step{
			{at: 0, want: 1, reason: ScaleHold},
		}},
		{"below N after a crash", ScaleConfig{N: 2, Max: 4, Concurrency: 1}, 1, []step{
			{at: 0, want: 2, reason: ScaleToMinimum},
		}},
		{"above MAX", ScaleConfig{N: 2, Max: 4, Concurrency: 1}, 7, []step{
			{at: 0, inFlight: 9, want: 4, reason: ScaleToMaximum},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, mustAutoscaler(t, AutoscalerReference, tc.cfg), tc.start, 100*time.Millisecond, tc.steps)
		})
	}
}

func TestPredictiveAutoscaler(t *testing.T) {
	sec := time.Second
	cfg := func(n, mx, c int) ScaleConfig {
		return ScaleConfig{N: n, Max: mx, Concurrency: c, ScaleDownDelay: 5 * sec, Tick: sec, TargetUtilization: 0.8}
	}
	for _, tc := range []struct {
		name  string
		cfg   ScaleConfig
		start int
		svc   time.Duration
		steps []step
	}{
		{"burst in one step", cfg(2, 20, 1), 2, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 2, queued: 10, rate: 10, want: 12, reason: ScaleUp},
			{at: sec, inFlight: 12, rate: 10, want: 12, reason: ScaleHold},
		}},
		{"little's law from the rate", cfg(2, 50, 2), 2, 500 * time.Millisecond, []step{
			// 40/s × 0.5s = 20 busy slots / 0.8 = 25 slots = 13 workers of 2.
			{at: 0, inFlight: 4, rate: 40, want: 13, reason: ScaleUp},
			{at: sec, inFlight: 20, rate: 40, want: 13, reason: ScaleHold},
		}},
		{"capped at MAX", cfg(2, 4, 1), 2, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 2, queued: 100, rate: 500, want: 4, reason: ScaleUp},
		}},
		{"MAX=N holds", cfg(3, 3, 1), 3, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 3, queued: 50, rate: 500, want: 3, reason: ScaleHold},
			{at: 10 * sec, want: 3, reason: ScaleHold},
		}},
		{"N=1 zero arrivals", cfg(1, 4, 1), 1, 100 * time.Millisecond, []step{
			{at: 0, want: 1, reason: ScaleHold},
			{at: sec, want: 1, reason: ScaleHold},
		}},
		{"zero arrivals, zero service time", cfg(2, 4, 1), 2, 0, []step{
			{at: 0, rate: 100, want: 2, reason: ScaleHold},
		}},
		{"scale down waits for the delay, then in one step", cfg(2, 20, 1), 12, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 1, want: 12, reason: ScaleDownWait},
			{at: 2 * sec, inFlight: 1, want: 12, reason: ScaleDownWait},
			{at: 4 * sec, inFlight: 1, want: 12, reason: ScaleDownWait},
			{at: 5 * sec, inFlight: 1, want: 2, reason: ScaleDown},
			{at: 6 * sec, inFlight: 1, want: 2, reason: ScaleHold},
		}},
		{"a dip does not flap", cfg(2, 20, 1), 10, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 10, want: 10, reason: ScaleHold},
			{at: sec, inFlight: 1, want: 10, reason: ScaleDownWait},
			{at: 2 * sec, inFlight: 10, want: 10, reason: ScaleHold},
			{at: 3 * sec, inFlight: 1, want: 10, reason: ScaleDownWait},
			{at: 7 * sec, inFlight: 1, want: 10, reason: ScaleDownWait},
			{at: 8 * sec, inFlight: 1, want: 2, reason: ScaleDown},
		}},
		{"scale down to the peak seen during the delay", cfg(2, 20, 1), 12, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 3, want: 12, reason: ScaleDownWait},
			{at: 2 * sec, inFlight: 6, want: 12, reason: ScaleDownWait},
			{at: 5 * sec, inFlight: 1, want: 6, reason: ScaleDown},
		}},
		{"zero delay scales down at once", ScaleConfig{N: 1, Max: 8, Concurrency: 1, Tick: sec, TargetUtilization: 0.8}, 8, 100 * time.Millisecond, []step{
			{at: 0, want: 1, reason: ScaleDown},
		}},
		{"rising rate starts warm spares", cfg(2, 40, 1), 2, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 1, rate: 10, want: 2, reason: ScaleHold},
			// 50/s rising by 40/s per tick: 2 busy now, 50+20(smoothed)×2s
			// = 90/s expected ahead → 90×0.1/0.8 = 12.
			{at: sec, inFlight: 2, rate: 50, want: 12, reason: ScaleWarm},
		}},
		{"noise is not a trend", cfg(2, 40, 1), 2, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 1, rate: 10, want: 2, reason: ScaleHold},
			{at: sec, inFlight: 1, rate: 10.4, want: 2, reason: ScaleHold},
		}},
		{"below N after a crash", cfg(2, 4, 1), 1, 100 * time.Millisecond, []step{
			{at: 0, want: 2, reason: ScaleToMinimum},
		}},
		{"above MAX", cfg(2, 4, 1), 9, 100 * time.Millisecond, []step{
			{at: 0, inFlight: 9, want: 4, reason: ScaleToMaximum},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, mustAutoscaler(t, AutoscalerPredictive, tc.cfg), tc.start, tc.svc, tc.steps)
		})
	}
}

// TestPredictiveReachesSizeInOneTick is the goal in table form: a
// step of load needing K workers is met by the predictive autoscaler in one
// tick and by the reference one in K-N ticks.
func TestPredictiveReachesSizeInOneTick(t *testing.T) {
	for _, need := range []int{3, 8, 16} {
		cfg := ScaleConfig{N: 2, Max: 16, Concurrency: 1, ScaleDownDelay: 30 * time.Second, Tick: time.Second, TargetUtilization: 0.8}
		ticks := map[string]int{}
		for _, name := range []string{AutoscalerReference, AutoscalerPredictive} {
			a := mustAutoscaler(t, name, cfg)
			cur := 2
			for tick := 1; tick <= 20; tick++ {
				cur = a.Decide(ScaleSnapshot{Now: t0.Add(time.Duration(tick) * time.Second), Members: cur, Ready: cur,
					InFlight: min(cur, need), Queued: need - min(cur, need)}).Desired
				if cur >= need {
					ticks[name] = tick
					break
				}
			}
		}
		if ticks[AutoscalerPredictive] != 1 || ticks[AutoscalerReference] != need-2 {
			t.Errorf("need %d workers: ticks %v, want predictive 1, reference %d", need, ticks, need-2)
		}
	}
}

// With a minimum of 0 a function has no worker until a call arrives, one
// from the first call until SCALE_TO_ZERO_AFTER passes without calls, and
// none again after; calls running or waiting always keep one.
func TestScaleToZero(t *testing.T) {
	cfg := ScaleConfig{N: 0, Max: 3, Concurrency: 1, ScaleDownDelay: 30 * time.Second, Tick: time.Second,
		TargetUtilization: 0.8, ZeroAfter: time.Minute}
	t0 := time.Unix(1_000_000, 0)
	type tick struct {
		at       time.Duration // since t0
		members  int
		inFlight int
		lastCall time.Duration // since t0; <0: no call yet
		want     int
		reason   string
	}
	steps := []tick{
		{0, 0, 0, -1, 0, ScaleHold},                         // published, never called: nothing runs
		{time.Second, 0, 0, time.Second, 1, ScaleFromZero},  // a call went to the cloud: one worker
		{2 * time.Second, 1, 0, time.Second, 1, ScaleHold},  // it is up; the call was answered
		{50 * time.Second, 1, 0, time.Second, 1, ScaleHold}, // idle, but within SCALE_TO_ZERO_AFTER
		{70 * time.Second, 1, 1, time.Second, 1, ScaleHold}, // a call runs (its arrival not yet seen): kept
		{70 * time.Second, 1, 0, 70 * time.Second, 1, ScaleHold},
		{129 * time.Second, 1, 0, 70 * time.Second, 1, ScaleHold},
		{131 * time.Second, 1, 0, 70 * time.Second, 0, ScaleToZero}, // a minute without calls
		{132 * time.Second, 0, 0, 70 * time.Second, 0, ScaleHold},
	}
	for _, name := range []string{AutoscalerPredictive, AutoscalerReference} {
		t.Run(name, func(t *testing.T) {
			a := mustAutoscaler(t, name, cfg)
			for i, st := range steps {
				snap := ScaleSnapshot{Now: t0.Add(st.at), Members: st.members, Ready: st.members, InFlight: st.inFlight}
				if st.lastCall >= 0 {
					snap.LastCall = t0.Add(st.lastCall)
				}
				d := a.Decide(snap)
				if d.Desired != st.want || d.Reason != st.reason {
					t.Errorf("step %d (t=%v, members %d, in flight %d): %d %q, want %d %q",
						i, st.at, st.members, st.inFlight, d.Desired, d.Reason, st.want, st.reason)
				}
			}
		})
	}
}
