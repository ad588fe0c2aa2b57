package cloud

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	// A step either asks Allow (want allowed) or records an outcome, then
	// checks the state.
	type step struct {
		at      time.Duration
		allow   bool     // call Allow and compare with allowed
		allowed bool     //
		record  *Outcome // call Record with this
		state   string   // expected State afterwards; "" skips the check
	}
	fail, ok, neutral := OutcomeFailure, OutcomeSuccess, OutcomeNeutral
	tests := []struct {
		name  string
		steps []step
	}{
		{"closed lets calls through", []step{
			{allow: true, allowed: true, state: "closed"},
			{record: &ok, state: "closed"},
		}},
		{"opens after threshold consecutive failures", []step{
			{record: &fail, state: "closed"},
			{record: &fail, state: "closed"},
			{record: &fail, state: "open"},
			{at: time.Second, allow: true, allowed: false, state: "open"},
		}},
		{"a success resets the count", []step{
			{record: &fail, state: "closed"},
			{record: &fail, state: "closed"},
			{record: &ok, state: "closed"},
			{record: &fail, state: "closed"},
			{record: &fail, state: "closed"},
			{record: &fail, state: "open"},
		}},
		{"neutral outcomes neither count nor reset", []step{
			{record: &fail, state: "closed"},
			{record: &neutral, state: "closed"},
			{record: &fail, state: "closed"},
			{record: &fail, state: "open"},
		}},
		{"half-open after cool-down lets one probe through", []step{
			{record: &fail}, {record: &fail}, {record: &fail, state: "open"},
			{at: 9999 * time.Millisecond, allow: true, allowed: false, state: "open"},
			{at: 10 * time.Second, state: "half-open"},
			{at: 10 * time.Second, allow: true, allowed: true, state: "half-open"},
			{at: 10 * time.Second, allow: true, allowed: false, state: "half-open"},
			{at: 11 * time.Second, allow: true, allowed: false, state: "half-open"},
		}},
		{"probe success closes", []step{
			{record: &fail}, {record: &fail}, {record: &fail},
			{at: 10 * time.Second, allow: true, allowed: true},
			{at: 10 * time.Second, record: &ok, state: "closed"},
			{at: 10 * time.Second, allow: true, allowed: true, state: "closed"},
		}},
		{"probe failure reopens for a new cool-down", []step{
			{record: &fail}, {record: &fail}, {record: &fail},
			{at: 10 * time.Second, allow: true, allowed: true},
			{at: 12 * time.Second, record: &fail, state: "open"},
			{at: 21 * time.Second, allow: true, allowed: false, state: "open"},
			{at: 22 * time.Second, allow: true, allowed: true, state: "half-open"},
		}},
		{"neutral probe frees the slot for another probe", []step{
			{record: &fail}, {record: &fail}, {record: &fail},
			{at: 10 * time.Second, allow: true, allowed: true},
			{at: 10 * time.Second, record: &neutral, state: "half-open"},
			{at: 10 * time.Second, allow: true, allowed: true, state: "half-open"},
			{at: 10 * time.Second, allow: true, allowed: false, state: "half-open"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBreaker(3, 10*time.Second)
			for i, s := range tt.steps {
				now := at(s.at)
				if s.allow {
					if got := b.Allow(now); got != s.allowed {
						t.Fatalf("step %d: Allow(%s) = %v, want %v", i, s.at, got, s.allowed)
					}
				}
				if s.record != nil {
					b.Record(*s.record, now)
				}
				if got := b.State(now).String(); s.state != "" && got != s.state {
					t.Fatalf("step %d: State = %s, want %s", i, got, s.state)
				}
			}
		})
	}
}

func TestBreakerRetryIn(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBreaker(1, 5*time.Second)
	if got := b.RetryIn(t0); got != 0 {
		t.Fatalf("closed RetryIn = %s, want 0", got)
	}
	b.Record(OutcomeFailure, t0)
	if got := b.RetryIn(t0.Add(2 * time.Second)); got != 3*time.Second {
		t.Fatalf("RetryIn = %s, want 3s", got)
	}
	if got := b.RetryIn(t0.Add(7 * time.Second)); got != 0 {
		t.Fatalf("RetryIn after cool-down = %s, want 0", got)
	}
}

func TestBackoffDelay(t *testing.T) {
	base, limit := 50*time.Millisecond, time.Second
	tests := []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{0, 0, 25 * time.Millisecond},
		{0, 0.999999, 50 * time.Millisecond},
		{1, 0, 50 * time.Millisecond},
		{1, 0.5, 75 * time.Millisecond},
		{2, 0, 100 * time.Millisecond},
		{4, 0, 400 * time.Millisecond},
		{5, 0, 500 * time.Millisecond}, // 1.6s capped at 1s
		{5, 0.999999, time.Second},
		{60, 0.5, 750 * time.Millisecond}, // no overflow
	}
	for _, tt := range tests {
		got := backoffDelay(tt.attempt, base, limit, tt.r)
		// allow rounding of the jitter to a microsecond
		if d := got - tt.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("backoffDelay(%d, r=%v) = %s, want %s", tt.attempt, tt.r, got, tt.want)
		}
	}
}
