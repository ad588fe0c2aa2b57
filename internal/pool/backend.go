package pool

import (
	"context"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

// Backend is the part of a container engine the pool needs. internal/docker
// implements it on the Docker Engine API; unit tests use a fake.
type Backend interface {
	// Start creates a worker for spec, copies the function in, starts it
	// and returns where it listens. It does not wait for the worker to be
	// healthy; the pool does that.
	Start(ctx context.Context, spec WorkerSpec) (Worker, error)
	// Remove stops a worker (short grace) and removes it with its volumes.
	// Removing a worker that no longer exists is not an error.
	Remove(ctx context.Context, id string) error
	// List returns the workers of this pool, running or not, including
	// those a previous run left behind.
	List(ctx context.Context) ([]Worker, error)
}

// WorkerConn is how the pool talks to one worker. workerapi.Client
// implements it; its errors follow workerapi.Client.Call's contract.
type WorkerConn interface {
	// Call runs call_function(param).
	Call(ctx context.Context, param any) (any, error)
	// Health calls health().
	Health(ctx context.Context) (workerapi.Health, error)
	// CloseIdleConnections drops the idle connections.
	CloseIdleConnections()
	// Close drops every connection and interrupts the calls in flight:
	// the member left.
	Close()
}

var _ WorkerConn = (*workerapi.Client)(nil)

// WorkerSpec is what a new worker runs.
type WorkerSpec struct {
	Function     spillway.Function
	Concurrency  int           // WORKER_CONCURRENCY: calls one worker runs at once
	LocalTimeout time.Duration // LOCAL_TIMEOUT: the worker kills a call past it
	// MaxResultBytes (MAX_RESULT_BYTES): the worker refuses a larger result
	// with a -32002 fault; 0 leaves the worker's default.
	MaxResultBytes int64
}

// Worker is one worker container as the backend sees it.
type Worker struct {
	ID       string         // engine id, the key for Remove
	Name     string         // container name, <POOL_NAME>-<function>-<version>-<random>
	Addr     string         // host:port the pool dials (XML-RPC at http://Addr/)
	Function string         // spillway.function label
	Version  int64          // spillway.version label
	SHA256   string         // spillway.sha256 label
	Style    spillway.Style // spillway.style label
	Handler  string         // spillway.handler label
	// ReuseProcess is the spillway.reuse_process label: the worker runs a
	// script in its warm runner (the record's reuse_process).
	ReuseProcess bool
	Running      bool
	// Stopping: the engine is stopping this running worker (a service's
	// scale-down or roll); it takes no new calls once lb has seen this.
	Stopping bool
	// Created is when the engine made the worker, where it tells (a Swarm
	// task's creation); a pool on a ServiceBackend measures starts from it.
	Created time.Time
}

// Labels every worker carries, on either backend (a container's labels,
// or a Swarm service's). A restarted lb finds its pool's leftovers by
// LabelPool, a function's by LabelFunction, and decides from the others
// (Worker.Key) whether to keep them.
const (
	LabelPool     = "spillway.pool"
	LabelFunction = "spillway.function"
	LabelVersion  = "spillway.version"
	LabelSHA256   = "spillway.sha256"
	LabelStyle    = "spillway.style"
	LabelHandler  = "spillway.handler"
	// LabelReuseProcess is "1" on a worker that runs a script in its warm
	// runner (the record's reuse_process), absent otherwise.
	LabelReuseProcess = "spillway.reuse_process"
)

// Key identifies what a worker runs: the code and how it is called. Two
// functions with the same key need no roll between them.
func Key(fn spillway.Function) string {
	if fn.Style == spillway.StyleHandler {
		return fn.SHA256 + "/" + string(fn.Style) + "/" + fn.HandlerName()
	}
	if fn.ReuseProcess {
		return fn.SHA256 + "/" + string(fn.Style) + "/reuse-process"
	}
	return fn.SHA256 + "/" + string(fn.Style)
}

// Key is the key of the function the worker runs, from its labels.
func (w Worker) Key() string {
	return Key(spillway.Function{SHA256: w.SHA256, Style: w.Style, Handler: w.Handler, ReuseProcess: w.ReuseProcess})
}
