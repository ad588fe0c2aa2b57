// Package share keeps the ledger of MAX_TOTAL_WORKERS: how many workers each
// function lb serves holds, wants and may have, so that all of them together
// stay within the cap (except for their mins).
//
// The rule itself is policy.ShareRule.Allot, a pure function of the
// functions' standings; the Ledger collects those standings (each
// function's elasticity tick reports its size, its autoscaler's wish and its
// calls in flight; the request path reports arrivals) and answers every
// function with its part of the latest decision. Each decision uses every
// function's latest report, so a function marked to give a worker back sees
// it at its own next tick, and the needy function gets the worker on a tick
// after the giver reported its smaller size.
package share

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-faas/spillway/internal/policy"

	"github.com/spillway-faas/spillway"
)

// Ledger is the shared count of workers. It is safe for concurrent use.
type Ledger struct {
	total int
	rule  policy.ShareRule
	now   func() time.Time

	// index is fns published for Arrived, which reads it without a lock;
	// replaced (never changed) under mu when a function joins or leaves.
	index atomic.Pointer[map[string]*entry]

	mu  sync.Mutex        // guards the fields below (entries' own fields say what guards them)
	fns map[string]*entry // by name
	// order lists the entries in the order they joined: the decision's input
	// order, so ties break the same way every time.
	order []*entry
	held  int // sum over entries of held()
	// buf and out are the decision's scratch space, reused under mu.
	buf []policy.FunctionShare
	out []int
}

type entry struct {
	name     string
	lastCall atomic.Int64 // unix nanoseconds of the last arrival; 0: never
	limit    atomic.Int64 // Limit, set under Ledger.mu whenever a decision or the count changes

	// Guarded by Ledger.mu.
	min, max int
	have     int // workers at the last Target (members, starting ones included)
	want     int // the autoscaler's wish at the last Target
	inFlight int
	returned int // what the last Target returned: the pool is moving there
	allotted int // the function's size in the latest decision (any function's Target)
}

// held is what the entry counts against the cap: what it has, or what it
// was last told it may have if more (those workers are starting), and at
// least its min.
func (e *entry) held() int { return max(e.have, e.returned, e.min) }

// New returns a ledger for total workers under policy.DefaultShareRule. now
// is the clock (time.Now in lb).
func New(total int, now func() time.Time) *Ledger {
	return NewRule(total, policy.DefaultShareRule, now)
}

// NewRule returns a ledger that shares under rule (the simulator compares
// rules with it).
func NewRule(total int, rule policy.ShareRule, now func() time.Time) *Ledger {
	if now == nil {
		now = time.Now
	}
	l := &Ledger{total: total, rule: rule, now: now, fns: map[string]*entry{}}
	l.publishLocked()
	return l
}

// publishLocked replaces index with a copy of fns.
func (l *Ledger) publishLocked() {
	m := make(map[string]*entry, len(l.fns))
	for k, v := range l.fns {
		m[k] = v
	}
	l.index.Store(&m)
}

// Join records that the function is served, with its min and max; on a
// function already served it updates them.
func (l *Ledger) Join(name string, min, max int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.fns[name]
	if ok {
		l.held -= e.held()
	} else {
		e = &entry{name: name, allotted: min}
		l.fns[name] = e
		l.order = append(l.order, e)
	}
	e.min, e.max = min, max
	l.held += e.held()
	l.limitsLocked()
	if !ok {
		l.publishLocked() // with its limit set
	}
}

// Leave forgets the function (deleted, or no longer served): its workers
// stop counting.
func (l *Ledger) Leave(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.fns[name]
	if !ok {
		return
	}
	delete(l.fns, name)
	l.held -= e.held()
	l.order = slices.DeleteFunc(l.order, func(x *entry) bool { return x == e })
	l.publishLocked()
	l.limitsLocked()
}

// Arrived records a call to the function: a lock-free map read and an
// atomic store, for the request path.
func (l *Ledger) Arrived(name string) {
	if e := (*l.index.Load())[name]; e != nil {
		e.lastCall.Store(l.now().UnixNano())
	}
}

// Target is called at every elasticity tick of the function with its
// autoscaler's wish, its current workers (starting ones included) and its
// calls in flight. It returns the size the function may have now, in [min,
// max]: the wish when the cap allows it, less when the cap is reached or
// when the function was picked to give a worker to another one. A function
// that has not joined gets its wish.
func (l *Ledger) Target(name string, want, have, inFlight int) int {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.fns[name]
	if !ok {
		return want
	}
	l.held -= e.held()
	e.want, e.have, e.inFlight = want, have, inFlight
	l.held += e.held()
	l.decideLocked(now)
	l.held -= e.held()
	e.returned = e.allotted
	l.held += e.held()
	l.limitsLocked()
	return e.allotted
}

// decideLocked runs the rule over every function's latest report and
// records each one's size.
func (l *Ledger) decideLocked(now time.Time) {
	l.buf = l.buf[:0]
	for _, e := range l.order {
		var last time.Time
		if ns := e.lastCall.Load(); ns != 0 {
			last = time.Unix(0, ns)
		}
		l.buf = append(l.buf, policy.FunctionShare{
			Name: e.name, Min: e.min, Max: e.max, Workers: max(e.have, e.returned), Want: e.want,
			InFlight: e.inFlight, LastCall: last,
		})
	}
	l.out = l.rule.Allot(l.total, l.buf, now, l.out)
	for i, e := range l.order {
		e.allotted = l.out[i]
	}
}

// limitsLocked sets every entry's Limit from the latest decision and count.
func (l *Ledger) limitsLocked() {
	free := max(0, l.total-l.held)
	for _, e := range l.order {
		e.limit.Store(int64(max(e.min, min(e.max, e.allotted+free))))
	}
}

// Limit is the most workers the function may have now: its size in the
// latest decision plus the capacity no function holds, within [min, max]
// (lb sizes the offload policy's local slots with it). Like Arrived it takes
// no lock, for the request path. A function that has not joined gets 0.
func (l *Ledger) Limit(name string) int {
	if e := (*l.index.Load())[name]; e != nil {
		return int(e.limit.Load())
	}
	return 0
}

// Standing is one function's line in status.
type Standing struct {
	Name     string    `json:"name"`
	Min      int       `json:"min"`
	Max      int       `json:"max"`
	Workers  int       `json:"workers"`   // at its last tick
	Want     int       `json:"want"`      // its autoscaler's wish at its last tick
	Allotted int       `json:"allotted"`  // its size in the latest decision
	Limit    int       `json:"limit"`     // Limit
	LastCall time.Time `json:"last_call"` // zero: never
}

// Held is the workers counted against the cap now (mins included) and the cap.
func (l *Ledger) Held() (held, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, l.total
}

// Standings lists every function in the order they joined.
func (l *Ledger) Standings() []Standing {
	var fns []Standing
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.order {
		var last time.Time
		if ns := e.lastCall.Load(); ns != 0 {
			last = time.Unix(0, ns).UTC()
		}
		fns = append(fns, Standing{
			Name: e.name, Min: e.min, Max: e.max, Workers: e.have, Want: e.want, Allotted: e.allotted,
			Limit: int(e.limit.Load()), LastCall: last,
		})
	}
	return fns
}

// Status is the cap and every function's standing, for status(); nil when
// the ledger has no cap.
func (l *Ledger) Status() *spillway.ShareStatus {
	held, total := l.Held()
	if total <= 0 {
		return nil
	}
	now := l.now()
	st := &spillway.ShareStatus{MaxTotalWorkers: total, Held: held, Functions: []spillway.ShareStanding{}}
	for _, f := range l.Standings() {
		idle := -1.0
		if !f.LastCall.IsZero() {
			idle = math.Round(max(now.Sub(f.LastCall).Seconds(), 0)*10) / 10
		}
		st.Functions = append(st.Functions, spillway.ShareStanding{Name: f.Name, Min: f.Min, Max: f.Max, Workers: f.Workers,
			Want: f.Want, Allotted: f.Allotted, Limit: f.Limit, IdleSeconds: idle})
	}
	return st
}
