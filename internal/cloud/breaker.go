package cloud

import (
	"sync"
	"time"
)

// BreakerState is the circuit breaker's state as metrics and the policy see it.
type BreakerState int

const (
	BreakerClosed   BreakerState = iota // calls go through
	BreakerOpen                         // calls fail fast until the cool-down ends
	BreakerHalfOpen                     // one probe call is let through
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "unknown"
}

// Outcome is how one offloaded call ended, as far as the breaker cares.
type Outcome int

const (
	// OutcomeSuccess: the cloud answered (with a result, a function error or
	// a Lambda timeout). Closes the breaker.
	OutcomeSuccess Outcome = iota
	// OutcomeFailure: the cloud could not be reached or failed (connection
	// errors, 5xx after retries, rejected key). Counts toward opening.
	OutcomeFailure
	// OutcomeNeutral: says nothing about the cloud's health (throttled, the
	// caller gave up, bad parameter). Only frees a half-open probe.
	OutcomeNeutral
)

// Breaker is a consecutive-failure circuit breaker. Its methods take the
// current time; it never reads the clock. It is safe for concurrent use.
//
// Closed: every call is allowed; Threshold consecutive failures open it.
// Open: calls are refused until Cooldown has passed since it opened; then the
// next Allow turns it half-open and lets that one call through as a probe.
// Half-open: other calls are refused while the probe runs; the probe's
// success closes the breaker, its failure opens it again for a new cool-down.
type Breaker struct {
	Threshold int
	Cooldown  time.Duration

	mu       sync.Mutex // guards the fields below
	state    BreakerState
	failures int       // consecutive failures while closed
	openedAt time.Time // when it last opened
	probing  bool      // a half-open probe is in flight
}

// NewBreaker returns a closed breaker.
func NewBreaker(threshold int, cooldown time.Duration) *Breaker {
	if threshold < 1 {
		threshold = 1
	}
	return &Breaker{Threshold: threshold, Cooldown: cooldown}
}

// Allow reports whether a call may start at now. A true answer in the
// half-open state makes the caller the probe: it must Record its outcome.
func (b *Breaker) Allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case BreakerClosed:
		return true
	case BreakerOpen:
		if now.Sub(b.openedAt) < b.Cooldown {
			return false
		}
		b.state = BreakerHalfOpen
		b.probing = true
		return true
	default: // half-open
		if b.probing {
			return false
		}
		b.probing = true
		return true
	}
}

// Record feeds the outcome of a call that Allow let through.
func (b *Breaker) Record(o Outcome, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch o {
	case OutcomeSuccess:
		b.state = BreakerClosed
		b.failures = 0
		b.probing = false
	case OutcomeFailure:
		switch b.state {
		case BreakerClosed:
			b.failures++
			if b.failures >= b.Threshold {
				b.openLocked(now)
			}
		case BreakerHalfOpen:
			b.openLocked(now)
		}
	case OutcomeNeutral:
		if b.state == BreakerHalfOpen {
			b.probing = false
		}
	}
}

func (b *Breaker) openLocked(now time.Time) {
	b.state = BreakerOpen
	b.openedAt = now
	b.failures = 0
	b.probing = false
}

// State reports the state at now: an open breaker whose cool-down has passed
// reads as half-open (the next call will be the probe).
func (b *Breaker) State(now time.Time) BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen && now.Sub(b.openedAt) >= b.Cooldown {
		return BreakerHalfOpen
	}
	return b.state
}

// RetryIn is how long an open breaker still refuses calls at now (0 otherwise).
func (b *Breaker) RetryIn(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != BreakerOpen {
		return 0
	}
	return max(0, b.Cooldown-now.Sub(b.openedAt))
}

// backoffDelay is the wait before retry number attempt (0 for the first
// retry): exponential from base, capped at limit, with "equal jitter" (half
// fixed, half scaled by r in [0,1)) so that a burst of callers spreads out.
func backoffDelay(attempt int, base, limit time.Duration, r float64) time.Duration {
	d := base
	for i := 0; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	half := d / 2
	return half + time.Duration(r*float64(d-half))
}
