package pool

import (
	"time"

	"github.com/spillway-faas/spillway"
)

// MemberInfo is one member as Snapshot reports it.
type MemberInfo struct {
	ID         string
	Name       string
	Addr       string
	State      State
	Since      time.Time // when it entered State
	InFlight   int
	Capacity   int
	Version    int64
	SHA256     string
	Completed  int64 // from its last health() answer
	ColdStarts int64
}

// Snapshot is the pool at one moment, for status, metrics and the
// autoscaler.
type Snapshot struct {
	Members  []MemberInfo
	Desired  int
	Starting int
	Ready    int
	Draining int
	InFlight int // calls holding a lease
	Capacity int // slots of ready members
	Waiting  int // Acquires blocked for a slot
	Version  int64
	SHA256   string
	Counters Counters
	// Spare names the frozen spare worker (Config.Spare), "" when none is
	// ready.
	Spare string
}

// Snapshot copies the pool's state under a short lock.
func (p *Pool) Snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Snapshot{
		Members:  make([]MemberInfo, 0, len(p.members)),
		Desired:  p.desired,
		Waiting:  len(p.waiters),
		Version:  p.fn.Version,
		SHA256:   p.fn.SHA256,
		Counters: p.counters,
	}
	if p.spare != nil {
		s.Spare = p.spare.w.Name
	}
	for _, m := range p.members {
		s.Members = append(s.Members, MemberInfo{
			ID: m.id, Name: m.name, Addr: m.addr, State: m.state, Since: m.since,
			InFlight: int(m.inFlight.Load()), Capacity: m.capacity, Version: m.version, SHA256: m.sha256,
			Completed: m.completed, ColdStarts: m.coldStarts,
		})
		s.InFlight += int(m.inFlight.Load())
		switch m.state {
		case StateStarting:
			s.Starting++
		case StateReady:
			s.Ready++
			s.Capacity += m.capacity
		case StateDraining:
			s.Draining++
		}
	}
	return s
}

// Counts takes the sizes under a short lock without allocating.
func (p *Pool) Counts() spillway.PoolCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.countsLocked()
}

func (p *Pool) countsLocked() spillway.PoolCounts {
	c := spillway.PoolCounts{Desired: p.desired}
	if p.spare != nil && p.spare.key == Key(p.fn) {
		c.SpareSlots = p.cfg.Concurrency
	}
	for _, m := range p.members {
		switch m.state {
		case StateStarting:
			c.Members++
			c.StartingSlots += m.capacity
		case StateReady:
			c.Members++
			c.Ready++
			c.ReadySlots += m.capacity
			c.FreeSlots += max(0, m.capacity-int(m.inFlight.Load()))
		}
	}
	return c
}
