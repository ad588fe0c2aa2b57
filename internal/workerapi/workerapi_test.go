package workerapi

import (
	"context"
	"errors"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// TestEnvRoundTrip: every field survives Env and FromEnv, and a zero field
// is left out of the environment.
func TestEnvRoundTrip(t *testing.T) {
	full := Env{
		Port: 8001, ListenHost: "127.0.0.1", FunctionPath: FunctionPath, Style: spillway.StyleHandler,
		Handler: "main", ReuseProcess: true, Version: 42, FunctionName: "fib", Concurrency: 3, LocalTimeout: 2500 * time.Millisecond,
		Python: "/usr/bin/python3", MaxRequestBytes: 1 << 20, MaxResultBytes: 6 << 20, LogLevel: "debug", StopDelay: 1500 * time.Millisecond,
	}
	// Every field is set: a field added to Env without an encoding fails here.
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("test value leaves %s zero", v.Type().Field(i).Name)
		}
	}
	for _, e := range []Env{full, {}, {Port: 9000, Concurrency: 1}} {
		got, err := FromEnv(e.Env())
		if err != nil {
			t.Fatalf("FromEnv(%v): %v", e.Env(), err)
		}
		if got != e {
			t.Errorf("round trip of %+v = %+v (env %v)", e, got, e.Env())
		}
	}
	if n := len(full.Env()); n != v.NumField() {
		t.Errorf("Env() has %d variables for %d fields: %v", n, v.NumField(), full.Env())
	}
	if env := (Env{}).Env(); len(env) != 0 {
		t.Errorf("zero Env encodes %v, want nothing", env)
	}
	// What lb set on workers before this package: the same strings.
	lb := Env{Port: 8001, FunctionPath: FunctionPath, Style: spillway.StyleScript, Handler: "handler",
		Version: 7, Concurrency: 2, LocalTimeout: 3 * time.Second, MaxResultBytes: 1 << 20}
	want := []string{"SERVER_PORT=8001", "FUNCTION_PATH=/var/task/function.py", "FUNCTION_STYLE=script",
		"FUNCTION_HANDLER=handler", "FUNCTION_VERSION=7", "WORKER_CONCURRENCY=2", "LOCAL_TIMEOUT=3s",
		"MAX_RESULT_BYTES=1048576"}
	if got := lb.Env(); !slices.Equal(got, want) {
		t.Errorf("Env() = %v, want %v", got, want)
	}
}

func TestFromEnvErrorsNameTheVariable(t *testing.T) {
	_, err := FromEnv([]string{"PATH=/bin", "SERVER_PORT=http", "LOCAL_TIMEOUT=soon", "FUNCTION_VERSION=x", "FUNCTION_REUSE_PROCESS=yes", "junk"})
	if err == nil {
		t.Fatal("FromEnv accepted bad values")
	}
	for _, w := range []string{`SERVER_PORT="http"`, `LOCAL_TIMEOUT="soon"`, `FUNCTION_VERSION="x"`, `FUNCTION_REUSE_PROCESS="yes"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %s", err, w)
		}
	}
}

// TestHealthRoundTrip: what a worker answers (Health.Map through the
// XML-RPC server) is what Client.Health reads back.
func TestHealthRoundTrip(t *testing.T) {
	want := Health{InFlight: 2, Completed: 10, ColdStarts: 3, Failed: 1, SHA256: strings.Repeat("ab", 32),
		Version: 9, Style: spillway.StyleScript, Ready: true, Runners: 4, Concurrency: 4, Busy: 5}
	v := reflect.ValueOf(want)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("test value leaves %s zero", v.Type().Field(i).Name)
		}
	}
	if n := len(want.Map()); n != v.NumField() {
		t.Errorf("Map() has %d members for %d fields", n, v.NumField())
	}
	h := want
	srv := xmlrpc.NewServer()
	srv.Register(MethodHealth, "", func(context.Context, []any) (any, error) { return h.Map(), nil })
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := NewClient(hs.Listener.Addr().String(), ClientOptions{DialTimeout: time.Second, IdleConns: 2})
	defer c.CloseIdleConnections()
	got, err := c.Health(context.Background())
	if err != nil || got != want {
		t.Fatalf("Health() = %+v, %v; want %+v", got, err, want)
	}
	h = Health{Style: spillway.StyleHandler} // not ready, all counters zero
	if got, err := c.Health(context.Background()); err != nil || got != h {
		t.Fatalf("Health() = %+v, %v; want %+v", got, err, h)
	}
	// A worker that leaves ready out is ready; a non-struct is an error.
	if got, err := HealthFrom(map[string]any{"sha256": "x"}); err != nil || !got.Ready || got.SHA256 != "x" {
		t.Errorf("HealthFrom without ready = %+v, %v", got, err)
	}
	if _, err := HealthFrom("ok"); err == nil {
		t.Error("HealthFrom(string) succeeded")
	}
}

// TestCallFaults: the client tells a fault (the worker answered) from a
// failed call, and a fault maps back to its domain error.
func TestCallFaults(t *testing.T) {
	srv := xmlrpc.NewServer()
	srv.Register(MethodCallFunction, "", func(_ context.Context, params []any) (any, error) {
		switch params[0] {
		case "raise":
			return nil, &spillway.FunctionError{Type: "ValueError", Message: "no"}
		case "busy":
			return nil, BusyError(2)
		case "timeout":
			return nil, xmlrpc.NewFault(FaultTimeout, "call passed LOCAL_TIMEOUT")
		}
		return "ok:" + params[0].(string), nil
	})
	hs := httptest.NewServer(srv)
	c := NewClient(hs.Listener.Addr().String(), ClientOptions{MaxResultBytes: 1 << 20})
	ctx := context.Background()
	if v, err := c.Call(ctx, "a"); err != nil || v != "ok:a" {
		t.Fatalf("Call(a) = %v, %v", v, err)
	}
	for param, want := range map[string]error{"busy": spillway.ErrWorkerBusy, "timeout": spillway.ErrTimeout} {
		_, err := c.Call(ctx, param)
		var f *Fault
		if !errors.As(err, &f) || !errors.Is(FaultError(f), want) {
			t.Errorf("Call(%s) = %v, want a fault of %v", param, err, want)
		}
	}
	_, err := c.Call(ctx, "raise")
	var f *Fault
	var fe *spillway.FunctionError
	if !errors.As(err, &f) || f.Code != FaultFunction || !errors.As(FaultError(f), &fe) || fe.Type != "ValueError" {
		t.Errorf("Call(raise) = %v", err)
	}
	hs.Close()
	if _, err := c.Call(ctx, "a"); err == nil || errors.As(err, &f) {
		t.Errorf("Call on a closed worker = %v, want a transport error", err)
	}
}
