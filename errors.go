package spillway

import (
	"errors"
	"fmt"
	"strings"
)

// XML-RPC fault codes (the interoperability set, plus our gateway range
// -32000..-32099). They are part of the public contract: clients match on them.
const (
	FaultParse          = -32700
	FaultInvalidRequest = -32600
	FaultMethodNotFound = -32601
	FaultInvalidParams  = -32602
	FaultInternal       = -32603
	FaultApplication    = -32500 // the function raised

	FaultTimeout          = -32000 // the call passed its deadline and nothing could take it over
	FaultCloudUnavailable = -32001 // the cloud was needed but is off, failing or its breaker is open
	FaultPayloadTooLarge  = -32002 // request, parameter or result over its size limit
	FaultBudgetExhausted  = -32003 // the call needed the cloud and the cloud budget (CLOUD_MAX_RPS, CLOUD_MAX_COST_PER_HOUR) is spent
	FaultUnauthorized     = -32004 // LB_AUTH_TOKEN missing or wrong
	FaultFunctionNotFound = -32005 // no function record to serve
	FaultRunnerCrashed    = -32006 // the function exited or crashed its runner
	FaultWorkerFailed     = -32007 // a worker could not be reached or failed mid-call
	FaultUnavailable      = -32008 // the daemon is starting or shutting down
	// FaultWorkerBusy is sent by a worker, to lb only, when a call arrives
	// while it already runs WORKER_CONCURRENCY calls (another lb replica
	// holds its slots). lb places the call elsewhere; it is never a failure.
	FaultWorkerBusy = -32009
	// FaultNoSuchFunction: the call named a function lb does not serve
	// (not published, deleted, or not selected by FUNCTIONS).
	FaultNoSuchFunction = -32010
)

// Sentinel errors. Check them with errors.Is; wrap them with %w.
var (
	ErrTimeout          = errors.New("call timed out")
	ErrCloudUnavailable = errors.New("cloud unavailable")
	ErrPayloadTooLarge  = errors.New("payload too large")
	ErrBudgetExhausted  = errors.New("cloud budget exhausted")
	ErrUnauthorized     = errors.New("unauthorized")
	ErrFunctionNotFound = errors.New("function not found")
	ErrRunnerCrashed    = errors.New("function runner crashed")
	ErrWorkerFailed     = errors.New("worker failed")
	ErrUnavailable      = errors.New("service unavailable")
	ErrWorkerBusy       = errors.New("worker busy")
	ErrInvalidParams    = errors.New("invalid params")
	ErrNoSuchFunction   = errors.New("no such function")
)

// ErrCloudNotRun marks a cloud error after which the function provably did
// not run: the cloud is off, not deployed or its breaker is open, the request
// was never sent (refused connection), or the cloud refused it before running
// (429, 403, 404, 413). Such a call may be run elsewhere. It comes wrapped
// with ErrCloudUnavailable or ErrBudgetExhausted, which give the fault code.
var ErrCloudNotRun = errors.New("the function did not run")

// FunctionError is an exception raised by the user's function.
type FunctionError struct {
	Type      string // Python exception type, e.g. ZeroDivisionError
	Message   string
	Traceback string // may be empty
}

func (e *FunctionError) Error() string {
	if e.Message == "" {
		return e.Type
	}
	return e.Type + ": " + e.Message
}

var sentinelCodes = []struct {
	err  error
	code int
}{
	{ErrTimeout, FaultTimeout},
	{ErrCloudUnavailable, FaultCloudUnavailable},
	{ErrPayloadTooLarge, FaultPayloadTooLarge},
	{ErrBudgetExhausted, FaultBudgetExhausted},
	{ErrUnauthorized, FaultUnauthorized},
	{ErrFunctionNotFound, FaultFunctionNotFound},
	{ErrRunnerCrashed, FaultRunnerCrashed},
	{ErrWorkerFailed, FaultWorkerFailed},
	{ErrUnavailable, FaultUnavailable},
	{ErrWorkerBusy, FaultWorkerBusy},
	{ErrInvalidParams, FaultInvalidParams},
	{ErrNoSuchFunction, FaultNoSuchFunction},
}

// FaultCode maps an error to its XML-RPC fault code; unknown errors are internal.
func FaultCode(err error) int {
	var fe *FunctionError
	if errors.As(err, &fe) {
		return FaultApplication
	}
	for _, s := range sentinelCodes {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return FaultInternal
}

// FaultString is the fault string sent for err. For a function error it is
// "Type: message", the shape Python's own tracebacks end with.
func FaultString(err error) string {
	var fe *FunctionError
	if errors.As(err, &fe) {
		return fe.Error()
	}
	return err.Error()
}

// ErrorFromFault turns a fault received from a worker back into a domain error,
// so that errors.Is works across the process boundary.
func ErrorFromFault(code int, msg string) error {
	if code == FaultApplication {
		typ, text, found := strings.Cut(msg, ": ")
		if !found {
			return &FunctionError{Type: msg}
		}
		return &FunctionError{Type: typ, Message: text}
	}
	for _, s := range sentinelCodes {
		if s.code == code {
			return fmt.Errorf("%s: %w", msg, s.err)
		}
	}
	return fmt.Errorf("fault %d: %s", code, msg)
}
