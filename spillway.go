// Package spillway holds the domain types the whole system talks in: function
// records, routes and reasons of an invocation, and the error kinds that map to
// XML-RPC fault codes. It imports nothing of ours; the packages under internal/
// implement and consume these types, and only cmd/ wires them together.
package spillway

import (
	"fmt"
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
