package ui

import (
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
)

// MaxEvents is how many events the log keeps (the newest).
const MaxEvents = 50

// Event is one line of the page's events list.
type Event struct {
	Time  time.Time          `json:"time"`
	Kind  spillway.EventKind `json:"kind"`
	Cause string             `json:"cause"`
}

// Events is an in-memory log of the last MaxEvents events. It is the
// spillway.EventSink the pool, the gateway and cmd/lb report to; Event takes
// a short lock and does no I/O, so callers may hold their own locks.
type Events struct {
	now func() time.Time

	mu   sync.Mutex // guards ring, next, n
	ring [MaxEvents]Event
	next int // where the next event goes
	n    int // events held, at most MaxEvents
}

var _ spillway.EventSink = (*Events)(nil)

// NewEvents returns an empty log; now nil means time.Now.
func NewEvents(now func() time.Time) *Events {
	if now == nil {
		now = time.Now
	}
	return &Events{now: now}
}

// Event records one event at the current time.
func (e *Events) Event(kind spillway.EventKind, cause string) {
	t := e.now().UTC()
	e.mu.Lock()
	e.ring[e.next] = Event{Time: t, Kind: kind, Cause: cause}
	e.next = (e.next + 1) % MaxEvents
	e.n = min(e.n+1, MaxEvents)
	e.mu.Unlock()
}

// Last returns the events held, newest first.
func (e *Events) Last() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Event, 0, e.n)
	for i := 1; i <= e.n; i++ {
		out = append(out, e.ring[(e.next-i+MaxEvents)%MaxEvents])
	}
	return out
}
