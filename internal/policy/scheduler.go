package policy

import (
	"fmt"
	"sync/atomic"
)

// Scheduler names accepted by NewScheduler (env SCHEDULER).
const (
	SchedulerRoundRobin       = "round-robin"
	SchedulerLeastConnections = "least-connections"
)

// Member is one ready pool member as the scheduler sees it.
type Member struct {
	Name     string
	InFlight int // calls running on the member now
	Capacity int // calls it may run at once (WORKER_CONCURRENCY); <= 0 means full
}

func (m Member) free() bool { return m.InFlight < m.Capacity }

// Scheduler picks the member that runs the next local call.
type Scheduler interface {
	// Pick returns the index in members of a member with InFlight < Capacity,
	// or -1 when every member is full (or members is empty). The lb passes only
	// ready members, in a stable order. Pick is advisory: the counts may be
	// stale by the time the lb acquires the slot, so the lb re-checks and picks
	// again on contention.
	Pick(members []Member) int
}

// NewScheduler returns the scheduler called name ("" means round-robin).
// The result is safe for concurrent use.
func NewScheduler(name string) (Scheduler, error) {
	switch name {
	case "", SchedulerRoundRobin:
		return &RoundRobin{}, nil
	case SchedulerLeastConnections:
		return &LeastConnections{}, nil
	}
	return nil, fmt.Errorf("unknown scheduler %q (want %s or %s)", name, SchedulerRoundRobin, SchedulerLeastConnections)
}

// RoundRobin is the reference behaviour: the next member in order after the
// last pick, skipping full ones. The zero value is ready to use and safe for
// concurrent use.
type RoundRobin struct {
	next atomic.Uint64 // position the next scan starts at
}

var _ Scheduler = (*RoundRobin)(nil)

// Pick implements Scheduler.
func (r *RoundRobin) Pick(members []Member) int {
	n := len(members)
	if n == 0 {
		return -1
	}
	start := int((r.next.Add(1) - 1) % uint64(n))
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		if members[i].free() {
			if k > 0 {
				// Resume after the member we skipped to, as the reference does.
				r.next.Store(uint64(i + 1))
			}
			return i
		}
	}
	return -1
}

// LeastConnections picks the member with the lowest load (InFlight/Capacity),
// rotating among ties so equal members share the work. The zero value is ready
// to use and safe for concurrent use.
type LeastConnections struct {
	next atomic.Uint64 // rotation among ties
}

var _ Scheduler = (*LeastConnections)(nil)

// Pick implements Scheduler.
func (l *LeastConnections) Pick(members []Member) int {
	n := len(members)
	if n == 0 {
		return -1
	}
	start := int((l.next.Add(1) - 1) % uint64(n))
	best := -1
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		m := members[i]
		if !m.free() {
			continue
		}
		if m.InFlight == 0 {
			return i // cannot do better
		}
		if best < 0 || lessLoaded(m, members[best]) {
			best = i
		}
	}
	return best
}

// lessLoaded reports a.InFlight/a.Capacity < b.InFlight/b.Capacity without
// division. Both capacities are positive (the members are free).
func lessLoaded(a, b Member) bool {
	return a.InFlight*b.Capacity < b.InFlight*a.Capacity
}
