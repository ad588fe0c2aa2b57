// Package spillway holds the domain types the whole system talks in: function
// records, routes and reasons of an invocation, the types that cross between
// packages (a worker lease, the pool's counts, a replica's load, a cloud call
// and its result), lb's status (status.go), and the error kinds that map to
// XML-RPC fault codes. It imports nothing of ours; the packages under internal/
// implement and consume these types, and only cmd/ wires them together.
package spillway

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Style is how a function's source is run.
type Style string

const (
	// StyleScript is the reference style: a program run as `python function.py ARG`
	// whose stdout is the result.
	StyleScript Style = "script"
	// StyleHandler is Lambda style: `def handler(event, context)` whose
	// JSON-serialisable return value is the result.
	StyleHandler Style = "handler"
)

// DefaultHandler is the handler name used when a record does not name one.
const DefaultHandler = "handler"

// DefaultRuntime is the Lambda runtime the shim targets.
const DefaultRuntime = "python3.12"

// ParseStyle accepts "script" or "handler".
func ParseStyle(s string) (Style, error) {
	switch Style(s) {
	case StyleScript, StyleHandler:
		return Style(s), nil
	}
	return "", fmt.Errorf("unknown function style %q (want script or handler)", s)
}

// Function is one published function record (Redis hash spillway:fn:<name>).
type Function struct {
	Name      string
	Code      string
	Style     Style
	Handler   string // handler-style only; DefaultHandler when empty
	Runtime   string
	SHA256    string // hex sha256 of Code
	Version   int64  // monotonic per name, assigned by the registry
	UpdatedAt time.Time
	// Idempotent (addfaas --idempotent, field "idempotent" = "1") lets lb
	// retry a call after a cloud 5xx or a lost answer, when the function may
	// already have run; other functions run at most once.
	Idempotent bool
	// ReuseProcess (addfaas --reuse-process, field "reuse_process" = "1")
	// runs a script-style function in its warm runner instead of a fresh
	// process per call: each call gets a fresh __main__, its own sys.argv
	// and captured stdout, but module state, threads and the like persist
	// between calls. Much faster; not the semantics of a spawned process.
	ReuseProcess bool
	// Settings are the function's own pool settings (addfaas --min, --max,
	// --concurrency, --timeout); what is unset takes lb's .env value.
	Settings Settings
}

// Settings are a function's own pool settings, stored in its record
// (fields "min", "max", "concurrency", "timeout"). A nil field, or a zero
// Timeout, is unset: lb uses NUMBER_OF_SERVERS, MAX_SERVERS,
// WORKER_CONCURRENCY or LOCAL_TIMEOUT for it.
type Settings struct {
	Min         *int          // addfaas --min: workers kept (0: scale to zero)
	Max         *int          // addfaas --max: workers at most
	Concurrency *int          // addfaas --concurrency: calls per worker at once
	Timeout     time.Duration // addfaas --timeout: a local call's deadline
	// Constraints (addfaas --constraint, repeatable; field "constraints",
	// one a line) are Swarm placement constraints of the function's
	// workers, e.g. node.labels.gpu==true; POOL_BACKEND=docker ignores them.
	// One string, one constraint a line, so that Settings stays comparable.
	Constraints string
}

// ConstraintList is Constraints, one element a constraint.
func (s Settings) ConstraintList() []string {
	var out []string
	for _, c := range strings.Split(s.Constraints, "\n") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// IsZero reports whether nothing is set.
func (s Settings) IsZero() bool {
	return s.Min == nil && s.Max == nil && s.Concurrency == nil && s.Timeout == 0 && s.Constraints == ""
}

// String lists the settings that are set, as "min=1 max=4 concurrency=2
// timeout=45s", or "defaults" when none is; for logs.
func (s Settings) String() string {
	var parts []string
	for _, f := range []struct {
		name string
		v    *int
	}{{"min", s.Min}, {"max", s.Max}, {"concurrency", s.Concurrency}} {
		if f.v != nil {
			parts = append(parts, f.name+"="+strconv.Itoa(*f.v))
		}
	}
	if s.Timeout != 0 {
		parts = append(parts, "timeout="+s.Timeout.String())
	}
	for _, c := range s.ConstraintList() {
		parts = append(parts, "constraint="+c)
	}
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, " ")
}

// HandlerName returns the handler to call, defaulting to DefaultHandler.
func (f Function) HandlerName() string {
	if f.Handler == "" {
		return DefaultHandler
	}
	return f.Handler
}

// Route is where a call ran.
type Route string

const (
	RouteLocal Route = "local"
	RouteCloud Route = "cloud"
)

// Reason says why a call ran where it did. Empty means the normal local path.
type Reason string

const (
	ReasonNone     Reason = ""
	ReasonOverflow Reason = "overflow" // the local pool was full
	ReasonTimeout  Reason = "timeout"  // the local run passed LOCAL_TIMEOUT
	ReasonPolicy   Reason = "policy"   // the offload policy chose the cloud
	ReasonForced   Reason = "forced"   // the caller forced the route
	ReasonRetry    Reason = "retry"    // a worker failed and the call was retried
	ReasonCold     Reason = "cold"     // the function had no ready worker (scaled to zero); one is starting
)

// Invocation is the outcome of one call as `invoke` reports it.
type Invocation struct {
	Result    any
	Route     Route
	Worker    string // worker name for local calls, empty for cloud
	Reason    Reason
	Duration  time.Duration
	ColdStart bool
}

// Lease is one call slot on one local worker, held for one call. The pool
// hands leases out; the gateway runs calls on them.
type Lease interface {
	// Worker is the worker's name (invoke's `worker` field).
	Worker() string
	// ColdStart reports whether this is the worker's first call.
	ColdStart() bool
	// Call runs the function; a worker that cannot be reached fails with an
	// error wrapping ErrWorkerFailed.
	Call(ctx context.Context, param any) (any, error)
	// Release gives the slot back; it is called exactly once.
	Release()
}

// PoolCounts are a pool's sizes, cheap to take on every call: what the
// offload policy and the autoscaler read.
type PoolCounts struct {
	Members       int // all members, starting ones included, draining ones not
	Ready         int
	ReadySlots    int // slots of ready members
	StartingSlots int // slots of members still starting
	FreeSlots     int // free slots of ready members
	// SpareSlots are the slots of a frozen spare worker of the current
	// version: it joins in tens of milliseconds when a worker is asked for.
	SpareSlots int
	Desired    int
}

// CloudCall is one call to send to the cloud.
type CloudCall struct {
	// ID identifies the call in lb's logs; it is sent to the cloud as the
	// X-Spillway-Call-Id header, so both sides' logs name the same call.
	ID    string
	Param any
	// Idempotent says the function may run twice (addfaas --idempotent):
	// a 5xx or a lost answer, after which the function may have run, is then
	// retried too. Without it only answers that prove the function did not
	// run (429, a refused connection) are.
	Idempotent bool
	// Resend, when set, is asked before each request after the first, with
	// the reason ("throttled", "not_sent", "server_error", "lost"); false
	// stops the retries. lb charges the cloud budget and counts the re-run
	// there.
	Resend func(reason string) bool
}

// CloudResult is the outcome of one call run in the cloud.
type CloudResult struct {
	Value     any           // the function's result (script: stdout string; handler: return value, ints as int64)
	ColdStart bool          // Lambda reported a cold start for this call
	Latency   time.Duration // wall time of the whole call, retries included
	Attempts  int           // requests sent (1 without retries)
}

// Load is one lb replica's load of one function: what the controller sizes
// the pool for.
type Load struct {
	InFlight    int     `json:"in_flight"`    // calls holding a worker slot
	Queued      int     `json:"queued"`       // calls waiting for a slot
	ArrivalRate float64 `json:"arrival_rate"` // calls per second
	// LastCall is when the last call arrived (zero: none yet); a function
	// that may scale to zero keeps a worker while any replica had a call
	// within SCALE_TO_ZERO_AFTER.
	LastCall time.Time `json:"last_call,omitzero"`
}

// Add sums two loads; the last call is the later of the two.
func (a Load) Add(b Load) Load {
	last := a.LastCall
	if b.LastCall.After(last) {
		last = b.LastCall
	}
	return Load{InFlight: a.InFlight + b.InFlight, Queued: a.Queued + b.Queued, ArrivalRate: a.ArrivalRate + b.ArrivalRate, LastCall: last}
}

// EventKind names a change in lb that an operator wants to see (the events
// list of the /ui page).
type EventKind string

const (
	EventStart            EventKind = "lb"                // lb starting, ready, cloud deployed
	EventScaleUp          EventKind = "scale up"          // the autoscaler asked for more workers
	EventScaleDown        EventKind = "scale down"        // the autoscaler asked for fewer workers
	EventRoll             EventKind = "roll"              // the pool moves to a new function version
	EventWorkerReplaced   EventKind = "worker replaced"   // a failed worker is being replaced
	EventBreakerChange    EventKind = "breaker change"    // the cloud's circuit breaker changed state
	EventControllerChange EventKind = "controller change" // another lb replica became the controller
)

// EventSink receives operator events. Event must be cheap and never block:
// callers may hold their own locks.
type EventSink interface {
	Event(kind EventKind, cause string)
}
