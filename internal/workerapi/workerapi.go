// Package workerapi is the typed contract between lb and a worker: the
// worker's environment (what lb sets in each worker container and the
// worker reads at start), the XML-RPC methods the worker serves, the
// struct health() answers, the fault codes the worker returns, and a small
// client for call_function and health.
//
// internal/docker encodes the environment (Env.Env), internal/config reads
// it in the worker (config.LoadWorker, by the names declared here),
// cmd/worker serves the methods and answers Health, and internal/pool calls
// the worker through Client behind an interface of its own. A field renamed
// here is a compile error in each of them, not a silent mismatch at run
// time.
//
// The package imports only the domain package and internal/xmlrpc, so
// every side can use it; in particular it does not import internal/config
// (config builds pool's configuration, and pool uses this package).
package workerapi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// The XML-RPC methods a worker serves (at / and /RPC2).
const (
	// MethodCallFunction runs the function once: call_function(param) →
	// its result, or a fault (Fault* below).
	MethodCallFunction = "call_function"
	// MethodHealth answers the worker's state: health() → Health.
	MethodHealth = "health"
)

// HealthzPath is the worker's plain-HTTP readiness check: 200 once its
// runners are warm, else 503.
const HealthzPath = "/healthz"

// Fault codes a worker answers call_function with. They are the domain's
// codes (spillway.Fault*); these are the ones a worker sends.
const (
	FaultFunction      = spillway.FaultApplication     // the function raised: "Type: message"
	FaultTimeout       = spillway.FaultTimeout         // the call passed LOCAL_TIMEOUT and was killed
	FaultTooLarge      = spillway.FaultPayloadTooLarge // the request or the result is over its limit
	FaultRunnerCrashed = spillway.FaultRunnerCrashed   // the function exited or crashed its runner
	FaultBusy          = spillway.FaultWorkerBusy      // WORKER_CONCURRENCY calls run already: place it elsewhere
	FaultInvalidParams = spillway.FaultInvalidParams   // call_function takes at most one parameter
)

// Fault is a fault a worker answered with; FaultError turns it into the
// domain error it stands for.
type Fault = xmlrpc.Fault

// FaultError is the domain error of a fault (spillway.ErrorFromFault):
// *spillway.FunctionError, or an error wrapping spillway.ErrTimeout,
// spillway.ErrWorkerBusy, ...
func FaultError(f *Fault) error { return spillway.ErrorFromFault(f.Code, f.String) }

// BusyError is what a worker running its WORKER_CONCURRENCY calls answers a
// further call with: the FaultBusy fault.
func BusyError(concurrency int) error {
	return fmt.Errorf("worker runs %d calls already (WORKER_CONCURRENCY): %w", concurrency, spillway.ErrWorkerBusy)
}

// ErrResponseTooLarge is wrapped by Client.Call when the worker answered
// with more than the client takes: the worker is fine, its answer was not.
var ErrResponseTooLarge = xmlrpc.ErrResponseTooLarge

// The worker container's layout (see build/worker.Dockerfile): lb copies
// the function to FunctionPath before the container starts.
const (
	TaskDir      = "/var/task"
	FunctionFile = "function.py"
	FunctionPath = TaskDir + "/" + FunctionFile
)

// The names of the worker's environment variables, one per Env field.
const (
	VarPort            = "SERVER_PORT"
	VarListenHost      = "WORKER_LISTEN_HOST"
	VarFunctionPath    = "FUNCTION_PATH"
	VarStyle           = "FUNCTION_STYLE"
	VarHandler         = "FUNCTION_HANDLER"
	VarReuseProcess    = "FUNCTION_REUSE_PROCESS"
	VarVersion         = "FUNCTION_VERSION"
	VarFunctionName    = "FUNCTION_NAME"
	VarConcurrency     = "WORKER_CONCURRENCY"
	VarLocalTimeout    = "LOCAL_TIMEOUT"
	VarPython          = "PYTHON"
	VarMaxRequestBytes = "WORKER_MAX_REQUEST_BYTES"
	VarMaxResultBytes  = "MAX_RESULT_BYTES"
	VarLogLevel        = "LOG_LEVEL"
	VarStopDelay       = "WORKER_STOP_DELAY"
)

// Env is a worker's environment. lb fills what it decides (where the
// function is, how it is called, its version, the concurrency, the
// deadline and the result limit); the image sets PYTHON; the rest keep the
// defaults internal/config gives them.
type Env struct {
	Port            int            // SERVER_PORT: the XML-RPC server's port
	ListenHost      string         // WORKER_LISTEN_HOST: interface to bind; empty means all
	FunctionPath    string         // FUNCTION_PATH: the function's source
	Style           spillway.Style // FUNCTION_STYLE: script | handler
	Handler         string         // FUNCTION_HANDLER: a handler-style function's entry point
	ReuseProcess    bool           // FUNCTION_REUSE_PROCESS=1: a script runs in its warm runner, not a fresh process per call
	Version         int64          // FUNCTION_VERSION: reported by health()
	FunctionName    string         // FUNCTION_NAME: handlers' context.function_name
	Concurrency     int            // WORKER_CONCURRENCY: warm runners, calls at once
	LocalTimeout    time.Duration  // LOCAL_TIMEOUT: a call past it is killed
	Python          string         // PYTHON: the interpreter
	MaxRequestBytes int64          // WORKER_MAX_REQUEST_BYTES: largest XML-RPC request body
	MaxResultBytes  int64          // MAX_RESULT_BYTES: a larger result is a FaultTooLarge fault
	LogLevel        string         // LOG_LEVEL: debug | info | warn | error
	// StopDelay (WORKER_STOP_DELAY) is how long a worker told to stop keeps
	// taking calls before it drains: an engine that stops workers on its own
	// (a Swarm scale-down or update) tells lb only through its task list,
	// which lb reads every few hundred milliseconds.
	StopDelay time.Duration
}

// Env encodes e as NAME=value pairs, one per field that is set (a zero
// field is left out: the worker then takes its default), in a fixed order.
// Durations are written as Go durations (5s), sizes as bytes.
func (e Env) Env() []string {
	out := make([]string, 0, 13)
	str := func(name, v string) {
		if v != "" {
			out = append(out, name+"="+v)
		}
	}
	num := func(name string, v int64) {
		if v != 0 {
			out = append(out, name+"="+strconv.FormatInt(v, 10))
		}
	}
	num(VarPort, int64(e.Port))
	str(VarListenHost, e.ListenHost)
	str(VarFunctionPath, e.FunctionPath)
	str(VarStyle, string(e.Style))
	str(VarHandler, e.Handler)
	if e.ReuseProcess {
		out = append(out, VarReuseProcess+"=1")
	}
	num(VarVersion, e.Version)
	str(VarFunctionName, e.FunctionName)
	num(VarConcurrency, int64(e.Concurrency))
	if e.LocalTimeout != 0 {
		out = append(out, VarLocalTimeout+"="+e.LocalTimeout.String())
	}
	str(VarPython, e.Python)
	num(VarMaxRequestBytes, e.MaxRequestBytes)
	num(VarMaxResultBytes, e.MaxResultBytes)
	str(VarLogLevel, e.LogLevel)
	if e.StopDelay != 0 {
		out = append(out, VarStopDelay+"="+e.StopDelay.String())
	}
	return out
}

// FromEnv decodes what Env encodes: NAME=value pairs (os.Environ's form,
// and what Docker reports of a container); other variables are ignored and
// a variable missing leaves its field zero. It checks syntax only: the
// defaults and the ranges are internal/config's (config.LoadWorker).
func FromEnv(environ []string) (Env, error) {
	var e Env
	var errs []error
	integer := func(name, v string, bits int) int64 {
		n, err := strconv.ParseInt(v, 10, bits)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not an integer", name, v))
		}
		return n
	}
	for _, kv := range environ {
		name, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch name {
		case VarPort:
			e.Port = int(integer(name, v, 32))
		case VarListenHost:
			e.ListenHost = v
		case VarFunctionPath:
			e.FunctionPath = v
		case VarStyle:
			e.Style = spillway.Style(v)
		case VarHandler:
			e.Handler = v
		case VarReuseProcess:
			switch v {
			case "1", "true":
				e.ReuseProcess = true
			case "", "0", "false":
			default:
				errs = append(errs, fmt.Errorf("%s=%q: want 1 or 0", name, v))
			}
		case VarVersion:
			e.Version = integer(name, v, 64)
		case VarFunctionName:
			e.FunctionName = v
		case VarConcurrency:
			e.Concurrency = int(integer(name, v, 32))
		case VarLocalTimeout, VarStopDelay:
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a duration", name, v))
			}
			if name == VarStopDelay {
				e.StopDelay = d
			} else {
				e.LocalTimeout = d
			}
		case VarPython:
			e.Python = v
		case VarMaxRequestBytes:
			e.MaxRequestBytes = integer(name, v, 64)
		case VarMaxResultBytes:
			e.MaxResultBytes = integer(name, v, 64)
		case VarLogLevel:
			e.LogLevel = v
		}
	}
	if len(errs) > 0 {
		return Env{}, errors.Join(errs...)
	}
	return e, nil
}
