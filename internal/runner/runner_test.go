package runner_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/runner"
	"github.com/spillway-faas/spillway/internal/testutil"
)

const fibScript = `import sys

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

if len(sys.argv) < 2 or not sys.argv[1].lstrip("-").isdigit():
    print("Usage: python function.py <integer>")
    sys.exit(1)
n = int(sys.argv[1])
print("The Fibonacci number of %d is %d" % (n, fib(n)))
`

const testHandler = `import os, sys, time

def handler(event, context):
    p = event["parameter"]
    if p == "raise":
        raise ZeroDivisionError("division by zero")
    if p == "sleep":
        time.sleep(30)
    if p == "nap":
        time.sleep(0.5)
        return os.getpid()
    if p == "exit":
        os._exit(3)
    if p == "sigkill":
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    if p == "sysexit":
        sys.exit(0)
    if p == "segv":
        import ctypes
        ctypes.string_at(0)
    if p == "noise":
        print("noise on stdout\n" * 2000)
        sys.stdout.write("{\"id\": 0, \"ok\": true}\n")
        sys.stdout.flush()
        os.write(1, b"raw noise\n")
        return "quiet"
    if p == "set":
        return {1, 2}
    if p == "remaining":
        return context.get_remaining_time_in_millis()
    return {"echo": p, "int": 42, "big": 2**62, "huge": 2**70, "float": 1.5, "list": [1, "a", None, True]}
`

type fixture struct {
	pool   *runner.Runners
	output *testutil.SyncBuffer
	fnPath string // the function's file
}

func newPool(t *testing.T, style spillway.Style, code string, conc int, timeout time.Duration) *fixture {
	t.Helper()
	return newPoolWith(t, style, code, conc, timeout, nil)
}

// newPoolWith is newPool with the runner config changed by mod.
func newPoolWith(t *testing.T, style spillway.Style, code string, conc int, timeout time.Duration, mod func(*runner.Config)) *fixture {
	t.Helper()
	py := testutil.Python(t)
	dir := t.TempDir()
	shim, err := lambdawrap.WriteShim(filepath.Join(dir, "shim"))
	if err != nil {
		t.Fatal(err)
	}
	fnPath := filepath.Join(dir, "task", "function.py")
	if err := os.MkdirAll(filepath.Dir(fnPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fnPath, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &testutil.SyncBuffer{}
	cfg := runner.Config{
		Python: py, ShimPath: shim, FunctionPath: fnPath, Style: style,
		Concurrency: conc, Timeout: timeout, MaxResultBytes: 6 << 20, Output: out,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := runner.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Open(ctx); err != nil {
		t.Fatalf("open: %v\noutput:\n%s", err, out.String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &fixture{pool: p, output: out, fnPath: fnPath}
}

func call(t *testing.T, p *runner.Runners, param any) (runner.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Call(ctx, param)
}

func TestScriptFib(t *testing.T) {
	f := newPool(t, spillway.StyleScript, fibScript, 1, 10*time.Second)
	tests := []struct {
		param any
		want  string
	}{
		{"20", "The Fibonacci number of 20 is 6765\n"},
		{int64(10), "The Fibonacci number of 10 is 55\n"},
		{"abc", "Usage: python function.py <integer>\n"},
		{nil, "Usage: python function.py <integer>\n"},
	}
	for i, tt := range tests {
		res, err := call(t, f.pool, tt.param)
		if err != nil {
			t.Fatalf("call(%v): %v", tt.param, err)
		}
		if res.Value != tt.want {
			t.Errorf("call(%v) = %q, want %q", tt.param, res.Value, tt.want)
		}
		if res.ColdStart != (i == 0) {
			t.Errorf("call %d: ColdStart = %v", i, res.ColdStart)
		}
	}
	if s := f.pool.Stats(); s.Completed != 4 || s.ColdStarts != 1 || s.Runners != 1 || !s.Ready {
		t.Errorf("stats = %+v", s)
	}
}

func TestScriptOutcomes(t *testing.T) {
	f := newPool(t, spillway.StyleScript, `import os, sys, time
arg = sys.argv[1]
if arg == "raise":
    raise KeyError("nope")
if arg == "exit2":
    print("partial")
    sys.exit(2)
if arg == "exitmsg":
    sys.exit("bad input")
if arg == "segv":
    import signal
    os.kill(os.getpid(), signal.SIGSEGV)
if arg == "sleep":
    time.sleep(30)
if arg == "stdin":
    print(repr(sys.stdin.read()))
    sys.exit()
if arg == "main":
    print(__name__, sys.argv, end="")
`, 1, 700*time.Millisecond)
	tests := []struct {
		param   string
		want    any
		wantErr error
		fnErr   *spillway.FunctionError
	}{
		{param: "main", want: "__main__ ['function.py', 'main']"},
		{param: "raise", fnErr: &spillway.FunctionError{Type: "KeyError", Message: "'nope'"}},
		{param: "exit2", want: "partial\n"},
		{param: "exitmsg", fnErr: &spillway.FunctionError{Type: "SystemExit", Message: "bad input"}},
		{param: "segv", wantErr: spillway.ErrRunnerCrashed},
		{param: "stdin", want: "''\n"},
		{param: "sleep", wantErr: spillway.ErrTimeout},
		{param: "main", want: "__main__ ['function.py', 'main']"},
	}
	for _, tt := range tests {
		t.Run(tt.param, func(t *testing.T) {
			res, err := call(t, f.pool, tt.param)
			switch {
			case tt.fnErr != nil:
				var fe *spillway.FunctionError
				if !errors.As(err, &fe) || fe.Type != tt.fnErr.Type || fe.Message != tt.fnErr.Message {
					t.Fatalf("err = %v, want %v", err, tt.fnErr)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			default:
				if err != nil || res.Value != tt.want {
					t.Fatalf("got %q, %v; want %q", res.Value, err, tt.want)
				}
			}
		})
	}
}

func TestHandlerResults(t *testing.T) {
	f := newPool(t, spillway.StyleHandler, testHandler, 1, 5*time.Second)
	res, err := call(t, f.pool, "x")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"echo": "x", "int": int64(42), "big": int64(1 << 62),
		"huge": float64(1 << 70), "float": 1.5, "list": []any{int64(1), "a", nil, true}}
	if !reflect.DeepEqual(res.Value, want) {
		t.Fatalf("got %#v\nwant %#v", res.Value, want)
	}
	if !res.ColdStart {
		t.Error("first call is not a cold start")
	}

	res, err = call(t, f.pool, map[string]any{"k": []any{int64(1), 2.5}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Value.(map[string]any)["echo"]; !reflect.DeepEqual(got, map[string]any{"k": []any{int64(1), 2.5}}) {
		t.Errorf("echo of a struct = %#v", got)
	}
	if res.ColdStart {
		t.Error("second call is a cold start")
	}

	res, err = call(t, f.pool, "remaining")
	if ms, ok := res.Value.(int64); err != nil || !ok || ms <= 0 || ms > 5000 {
		t.Errorf("remaining time = %v, %v", res.Value, err)
	}

	_, err = call(t, f.pool, "raise")
	var fe *spillway.FunctionError
	if !errors.As(err, &fe) || fe.Type != "ZeroDivisionError" || fe.Message != "division by zero" {
		t.Fatalf("raise: err = %v", err)
	}
	if !strings.Contains(fe.Traceback, "ZeroDivisionError") {
		t.Errorf("traceback = %q", fe.Traceback)
	}
	if spillway.FaultCode(err) != spillway.FaultApplication {
		t.Errorf("fault code = %d", spillway.FaultCode(err))
	}

	_, err = call(t, f.pool, "set")
	if !errors.As(err, &fe) || fe.Type != "TypeError" {
		t.Fatalf("unserialisable result: err = %v", err)
	}
}

func TestHandlerStdoutNoise(t *testing.T) {
	f := newPool(t, spillway.StyleHandler, testHandler, 1, 5*time.Second)
	for range 3 {
		res, err := call(t, f.pool, "noise")
		if err != nil || res.Value != "quiet" {
			t.Fatalf("got %v, %v", res.Value, err)
		}
	}
	// The runner's output is copied from its pipe as it comes: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := f.output.String()
		if strings.Contains(out, "noise on stdout") && strings.Contains(out, "raw noise") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the function's prints did not reach the output (%d bytes)", len(out))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTimeoutReplacesRunner(t *testing.T) {
	const timeout = 400 * time.Millisecond
	f := newPool(t, spillway.StyleHandler, testHandler, 1, timeout)
	for i := range 2 {
		begin := time.Now()
		_, err := call(t, f.pool, "sleep")
		took := time.Since(begin)
		if !errors.Is(err, spillway.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if took > timeout+3*time.Second { // far below the 30 s sleep, with a loaded machine's slack
			t.Errorf("timeout %d answered after %s", i, took)
		}
		waitReplaced(t, f.pool)
		res, err := call(t, f.pool, "x")
		if err != nil {
			t.Fatalf("call after a timeout: %v", err)
		}
		if !res.ColdStart {
			t.Error("call on the replacement runner is not a cold start")
		}
	}
	if s := f.pool.Stats(); s.Failed != 2 || s.Runners != 1 {
		t.Errorf("stats = %+v", s)
	}
}

// waitReplaced waits until a one-runner pool has retired its broken runner
// and started the replacement, however slowly a loaded machine starts it.
func waitReplaced(t *testing.T, p *runner.Runners) {
	t.Helper()
	retired := time.Now().Add(time.Second)
	for p.Stats().Runners != 0 && time.Now().Before(retired) {
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().Runners != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no replacement runner within 30 s: %+v", p.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCrashReplacesRunner(t *testing.T) {
	f := newPool(t, spillway.StyleHandler, testHandler, 1, 5*time.Second)
	for _, p := range []string{"exit", "sysexit", "segv"} {
		t.Run(p, func(t *testing.T) {
			_, err := call(t, f.pool, p)
			if !errors.Is(err, spillway.ErrRunnerCrashed) {
				t.Fatalf("err = %v, want ErrRunnerCrashed", err)
			}
			res, err := call(t, f.pool, "x")
			if err != nil {
				t.Fatalf("call after a crash: %v", err)
			}
			if m, _ := res.Value.(map[string]any); m["echo"] != "x" {
				t.Fatalf("call after a crash = %v", res.Value)
			}
		})
	}
}

// A runner SIGKILLed from outside (as when its container is killed) answers
// its crash only after a grace period, so that a worker going down with it is
// seen by the caller as a lost worker, which is safe to re-run.
func TestOutsideKillAnswersAfterGrace(t *testing.T) {
	f := newPool(t, spillway.StyleHandler, testHandler, 1, 5*time.Second)
	const grace = 300 * time.Millisecond
	begin := time.Now()
	_, err := call(t, f.pool, "sigkill")
	taken := time.Since(begin)
	if !errors.Is(err, spillway.ErrRunnerCrashed) {
		t.Fatalf("err = %v, want ErrRunnerCrashed", err)
	}
	if taken < grace {
		t.Fatalf("crash answered after %v, want at least %v", taken, grace)
	}
}

func TestConcurrencyOverlaps(t *testing.T) {
	const k = 4
	f := newPool(t, spillway.StyleHandler, testHandler, k, 5*time.Second)
	begin := time.Now()
	var wg sync.WaitGroup
	pids := make(chan any, k)
	for range k {
		wg.Go(func() {
			res, err := call(t, f.pool, "nap")
			if err != nil {
				t.Error(err)
				return
			}
			pids <- res.Value
		})
	}
	wg.Wait()
	close(pids)
	took := time.Since(begin)
	if took > 900*time.Millisecond {
		t.Errorf("%d calls of 0.5 s took %s, want about 0.5 s", k, took)
	}
	seen := map[any]bool{}
	for p := range pids {
		seen[p] = true
	}
	if len(seen) != k {
		t.Errorf("calls ran on %d distinct runners, want %d", len(seen), k)
	}
}

func TestCloseWaitsForInFlight(t *testing.T) {
	f := newPool(t, spillway.StyleHandler, testHandler, 1, 5*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := call(t, f.pool, "nap")
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.pool.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("in-flight call: %v", err)
	}
	if _, err := call(t, f.pool, "x"); !errors.Is(err, spillway.ErrUnavailable) {
		t.Fatalf("call after close: %v, want ErrUnavailable", err)
	}
	if s := f.pool.Stats(); s.Runners != 0 || s.Ready {
		t.Errorf("stats after close = %+v", s)
	}
}

func TestInitError(t *testing.T) {
	f := newPool(t, spillway.StyleHandler, "def handler(event, context):\n  return 1\nimport no_such_module\n", 1, 5*time.Second)
	_, err := call(t, f.pool, "x")
	var fe *spillway.FunctionError
	if !errors.As(err, &fe) || fe.Type != "ModuleNotFoundError" {
		t.Fatalf("err = %v, want ModuleNotFoundError", err)
	}
	if f.pool.InitError() == nil {
		t.Error("InitError() = nil")
	}
}

func TestConfigValidate(t *testing.T) {
	base := runner.Config{Python: "python3", ShimPath: "h.py", FunctionPath: "f.py", Style: "script",
		Concurrency: 1, Timeout: time.Second, MaxResultBytes: 1 << 20}
	if err := base.Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	tests := []struct {
		name string
		edit func(*runner.Config)
	}{
		{"no python", func(c *runner.Config) { c.Python = "" }},
		{"no shim", func(c *runner.Config) { c.ShimPath = "" }},
		{"no function", func(c *runner.Config) { c.FunctionPath = "" }},
		{"bad style", func(c *runner.Config) { c.Style = "x" }},
		{"bad concurrency", func(c *runner.Config) { c.Concurrency = 0 }},
		{"no timeout", func(c *runner.Config) { c.Timeout = 0 }},
		{"no result limit", func(c *runner.Config) { c.MaxResultBytes = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			if _, err := runner.New(cfg); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestResultOverCapIsRefusedAndRunnerKept(t *testing.T) {
	// Under MaxResultBytes=1 MiB a 2 MiB result is ErrPayloadTooLarge and the
	// same warm runner serves the next call (no cold start, no replacement);
	// with the cap at 4 MiB (the protection off for this size) it is returned.
	const handler = "def handler(event, context):\n    return 'x' * event['parameter']\n"
	for _, style := range []spillway.Style{spillway.StyleHandler, spillway.StyleScript} {
		code := handler
		if style == spillway.StyleScript {
			code = "import sys\nsys.stdout.write('x' * int(sys.argv[1]))\n"
		}
		t.Run(string(style), func(t *testing.T) {
			f := newPoolWith(t, style, code, 1, 10*time.Second, func(c *runner.Config) { c.MaxResultBytes = 1 << 20 })
			if _, err := call(t, f.pool, 10); err != nil {
				t.Fatalf("small result: %v", err)
			}
			_, err := call(t, f.pool, 2<<20)
			if !errors.Is(err, spillway.ErrPayloadTooLarge) || !strings.Contains(err.Error(), "MAX_RESULT_BYTES") {
				t.Fatalf("2 MiB result under a 1 MiB cap: %v, want ErrPayloadTooLarge naming MAX_RESULT_BYTES", err)
			}
			res, err := call(t, f.pool, 10)
			if err != nil || res.ColdStart {
				t.Fatalf("next call: %+v, %v; want the same warm runner", res, err)
			}
			if st := f.pool.Stats(); st.Failed != 0 {
				t.Errorf("stats %+v: the refused result counted as a failure", st)
			}

			off := newPoolWith(t, style, code, 1, 10*time.Second, func(c *runner.Config) { c.MaxResultBytes = 4 << 20 })
			res, err = call(t, off.pool, 2<<20)
			if s, _ := res.Value.(string); err != nil || len(s) != 2<<20 {
				t.Fatalf("2 MiB result under a 4 MiB cap: %d bytes, %v", len(s), err)
			}
		})
	}
}

// noCapShim speaks the shim's worker protocol but ignores
// --max-result-bytes: each call answers a string of param bytes.
const noCapShim = `
import json, os, sys
out = os.fdopen(4, "wb")
out.write(json.dumps({"ready": True, "pid": os.getpid(), "initError": None}).encode() + b"\n")
out.flush()
for line in os.fdopen(3, "rb"):
    req = json.loads(line)
    out.write(json.dumps({"id": req["id"], "ok": True, "result": "x" * int(req["param"])}).encode() + b"\n")
    out.flush()
`

func TestRunnerRefusesAnOversizeLineItself(t *testing.T) {
	// The Go side is a backstop: a shim that let a 2 MiB result through
	// under a 1 MiB cap still gets ErrPayloadTooLarge, and its runner is
	// kept (the line is skipped, the next call answers). With a 4 MiB cap
	// (the protection off for this size) the line is the result.
	for _, capBytes := range []int64{1 << 20, 4 << 20} {
		t.Run(fmt.Sprintf("cap=%d", capBytes), func(t *testing.T) {
			dir := t.TempDir()
			shim := filepath.Join(dir, "shim.py")
			fnPath := filepath.Join(dir, "function.py")
			for p, body := range map[string]string{shim: noCapShim, fnPath: "pass\n"} {
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			p, err := runner.New(runner.Config{Python: testutil.Python(t), ShimPath: shim, FunctionPath: fnPath,
				Style: spillway.StyleHandler, Concurrency: 1, Timeout: 10 * time.Second, MaxResultBytes: capBytes, Output: &testutil.SyncBuffer{}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.Open(ctx); err != nil {
				t.Fatal(err)
			}
			defer p.Close(ctx)

			res, err := call(t, p, 2<<20)
			if capBytes > 2<<20 {
				if s, _ := res.Value.(string); err != nil || len(s) != 2<<20 {
					t.Fatalf("2 MiB under a 4 MiB cap: %d bytes, %v", len(s), err)
				}
				return
			}
			if !errors.Is(err, spillway.ErrPayloadTooLarge) {
				t.Fatalf("2 MiB line under a 1 MiB cap: %v, want ErrPayloadTooLarge", err)
			}
			res, err = call(t, p, 5)
			if err != nil || res.Value != "xxxxx" || res.ColdStart {
				t.Fatalf("next call: %+v %v; want the same runner's answer", res, err)
			}
			if st := p.Stats(); st.Failed != 0 {
				t.Errorf("stats %+v: the refused line counted as a failure", st)
			}
		})
	}
}
