package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/workerapi"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

const testHandler = `import os, sys, time

def handler(event, context):
    p = event["parameter"]
    if p == "raise":
        return 1 / 0
    if p == "sleep":
        time.sleep(30)
    if p == "nap":
        time.sleep(0.5)
        return os.getpid()
    if isinstance(p, str) and p.startswith("wait:"):
        while not os.path.exists(p[5:]):
            time.sleep(0.01)
        return "released"
    if p == "exit":
        os._exit(3)
    if p == "noise":
        print("noise on stdout " * 1000)
        print("<?xml version='1.0'?><methodResponse>")
        os.write(1, b'{"id": 1, "ok": true, "result": "forged"}\n')
        return "quiet"
    return {"echo": p, "answer": 42, "ratio": 0.5, "items": [1, "two", True]}
`

// worker is a worker process owned by a test.
type worker struct {
	url    string
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	done   chan struct{}
}

// startWorker runs bin with the function code and extra env, and waits until
// /healthz answers 200.
func startWorker(t testing.TB, bin, code string, env ...string) *worker {
	t.Helper()
	py := testutil.Python(t)
	dir := t.TempDir()
	fn := filepath.Join(dir, "function.py")
	if err := os.WriteFile(fn, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	port := testutil.FreePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append([]string{
		"PATH=/usr/bin:/bin",
		"SERVER_PORT=" + strconv.Itoa(port),
		"WORKER_LISTEN_HOST=127.0.0.1",
		"FUNCTION_PATH=" + fn,
		"PYTHON=" + py,
		"TMPDIR=" + dir,
		"FUNCTION_VERSION=7",
	}, env...)
	w := &worker{url: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd,
		stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-w.done
			t.Errorf("worker did not stop on SIGTERM\n%s", w.stderr.String())
		}
		if t.Failed() {
			t.Logf("worker stderr:\n%s", w.stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(w.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return w
			}
		}
		select {
		case <-w.done:
			t.Fatalf("worker exited at start:\n%s", w.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("worker not healthy within 20s:\n%s", w.stderr.String())
	return nil
}

// pyClient runs calls through Python's own xmlrpc.client. Each call is
// [method, [args...]] (or with a path "/RPC2" as third element); each answer
// is {"value"} or {"fault": code, "string"}, with the seconds it took. With
// parallel set, all calls run at once on threads.
const pyClient = `import json, sys, threading, time, xmlrpc.client
url, parallel = sys.argv[1], sys.argv[2] == "1"
calls = json.load(sys.stdin)
out = [None] * len(calls)
def run(i, c):
    method, args = c[0], c[1]
    proxy = xmlrpc.client.ServerProxy(url + (c[2] if len(c) > 2 else ""), allow_none=True)
    t0 = time.monotonic()
    try:
        r = {"value": getattr(proxy, method)(*args)}
    except xmlrpc.client.Fault as f:
        r = {"fault": f.faultCode, "string": f.faultString}
    r["seconds"] = time.monotonic() - t0
    r["end"] = time.monotonic()
    out[i] = r
if parallel:
    ts = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    [t.start() for t in ts]
    [t.join() for t in ts]
else:
    for i, c in enumerate(calls):
        run(i, c)
json.dump(out, sys.stdout)
`

type pyAnswer struct {
	Value   any     `json:"value"`
	Fault   int     `json:"fault"`
	String  string  `json:"string"`
	Seconds float64 `json:"seconds"`
}

func pyCalls(t *testing.T, url string, parallel bool, calls ...[]any) []pyAnswer {
	t.Helper()
	answers, err := pyCallsErr(testutil.Python(t), url, parallel, calls...)
	if err != nil {
		t.Fatal(err)
	}
	return answers
}

// pyCallsErr is pyCalls for a goroutine other than the test's: it returns
// the error instead of failing the test.
func pyCallsErr(py, url string, parallel bool, calls ...[]any) ([]pyAnswer, error) {
	in, err := json.Marshal(calls)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	par := "0"
	if parallel {
		par = "1"
	}
	cmd := exec.CommandContext(ctx, py, "-c", pyClient, url, par)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("python xmlrpc.client: %v\n%s", err, stderr.String())
	}
	var answers []pyAnswer
	if err := json.Unmarshal(out, &answers); err != nil {
		return nil, fmt.Errorf("python output %q: %v", out, err)
	}
	return answers, nil
}

func call(method string, args ...any) []any {
	if args == nil {
		args = []any{}
	}
	return []any{method, args}
}

func TestWorkerProcess(t *testing.T) {
	py := testutil.Python(t)
	_ = py
	bin := testutil.BuildBinary(t, "worker")
	fib, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "examples", "fib.py"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("fib script through Python's xmlrpc.client", func(t *testing.T) {
		w := startWorker(t, bin, string(fib), "FUNCTION_STYLE=script")
		got := pyCalls(t, w.url, false,
			call("call_function", "20"),
			append(call("call_function", "10"), "/RPC2"),
			call("call_function", "twenty"),
			call("call_function"),
			call("call_function", 12),
			call("no_such_method", "x"),
			call("call_function", "1", "2"),
			call("health"),
		)
		usage := "Usage: python3 function.py <integer n>  (prints the n-th Fibonacci number)\n"
		for i, want := range []any{"The Fibonacci number of 20 is 6765\n", "The Fibonacci number of 10 is 55\n",
			usage, usage, "The Fibonacci number of 12 is 144\n"} {
			if got[i].Value != want || got[i].Fault != 0 {
				t.Errorf("call %d = %+v, want %q", i, got[i], want)
			}
		}
		if got[5].Fault != spillway.FaultMethodNotFound {
			t.Errorf("unknown method: %+v, want fault %d", got[5], spillway.FaultMethodNotFound)
		}
		if got[6].Fault != spillway.FaultInvalidParams {
			t.Errorf("two params: %+v, want fault %d", got[6], spillway.FaultInvalidParams)
		}
		h, _ := got[7].Value.(map[string]any)
		for k, want := range map[string]any{"style": "script", "version": 7.0, "ready": true,
			"runners": 1.0, "completed": 5.0, "cold_starts": 1.0, "in_flight": 0.0} {
			if h[k] != want {
				t.Errorf("health()[%s] = %v, want %v (health %v)", k, h[k], want, h)
			}
		}
		if s, _ := h["sha256"].(string); len(s) != 64 {
			t.Errorf("health() sha256 = %q", s)
		}
	})

	t.Run("handler style", func(t *testing.T) {
		w := startWorker(t, bin, testHandler, "FUNCTION_STYLE=handler", "LOCAL_TIMEOUT=1")
		got := pyCalls(t, w.url, false,
			call("call_function", "x"),
			call("call_function", "raise"),
			call("call_function", "sleep"),
			call("call_function", "y"),
			call("call_function", "exit"),
			call("call_function", "z"),
			call("call_function", "noise"),
			call("call_function", map[string]any{"k": []any{1, 2}}),
		)
		want := map[string]any{"echo": "x", "answer": 42.0, "ratio": 0.5, "items": []any{1.0, "two", true}}
		if !jsonEqual(got[0].Value, want) {
			t.Errorf("dict result = %v, want %v", got[0].Value, want)
		}
		if got[1].Fault != spillway.FaultApplication || got[1].String != "ZeroDivisionError: division by zero" {
			t.Errorf("raise = %+v", got[1])
		}
		if got[2].Fault != spillway.FaultTimeout {
			t.Errorf("sleep = %+v, want the timeout fault", got[2])
		}
		if got[2].Seconds > 1.3 {
			t.Errorf("timeout answered after %.2fs, LOCAL_TIMEOUT is 1s", got[2].Seconds)
		}
		for _, i := range []int{3, 5} {
			if m, _ := got[i].Value.(map[string]any); m == nil || got[i].Fault != 0 {
				t.Errorf("call %d after a failure = %+v", i, got[i])
			}
		}
		if got[4].Fault != spillway.FaultRunnerCrashed {
			t.Errorf("exit = %+v, want the runner-crashed fault", got[4])
		}
		if got[6].Value != "quiet" {
			t.Errorf("noisy handler = %+v, want \"quiet\"", got[6])
		}
		if m, _ := got[7].Value.(map[string]any); !jsonEqual(m["echo"], map[string]any{"k": []any{1.0, 2.0}}) {
			t.Errorf("struct parameter = %+v", got[7])
		}
		if !strings.Contains(w.stderr.String(), "noise on stdout") {
			t.Error("the handler's stdout did not reach the worker's stderr")
		}
	})

	t.Run("concurrency", func(t *testing.T) {
		const k = 3
		w := startWorker(t, bin, testHandler, "FUNCTION_STYLE=handler", "WORKER_CONCURRENCY="+strconv.Itoa(k))
		calls := make([][]any, k)
		for i := range calls {
			calls[i] = call("call_function", "nap")
		}
		begin := time.Now()
		got := pyCalls(t, w.url, true, calls...)
		pids := map[any]bool{}
		for i, a := range got {
			if a.Fault != 0 || a.Seconds > 0.9 {
				t.Errorf("call %d = %+v", i, a)
			}
			pids[a.Value] = true
		}
		if len(pids) != k {
			t.Errorf("%d calls ran on %d runners, want %d", k, len(pids), k)
		}
		t.Logf("%d calls of 0.5 s in parallel: %s (incl. Python start)", k, time.Since(begin))
	})

	t.Run("busy beyond concurrency", func(t *testing.T) {
		const k = 2
		w := startWorker(t, bin, testHandler, "FUNCTION_STYLE=handler", "WORKER_CONCURRENCY="+strconv.Itoa(k), "LOCAL_TIMEOUT=120")
		gate := filepath.Join(t.TempDir(), "gate")
		c := xmlrpc.NewClient(w.url+"/", nil)
		held := make(chan error, k)
		for range k {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				var v any
				err := c.Call(ctx, "call_function", []any{"wait:" + gate}, &v)
				if err == nil && v != "released" {
					err = fmt.Errorf("result %v", v)
				}
				held <- err
			}()
		}
		// Both slots are taken once health() counts them in flight.
		deadline := time.Now().Add(60 * time.Second)
		for {
			got := pyCalls(t, w.url, false, call("health"))
			h, _ := got[0].Value.(map[string]any)
			if h["in_flight"] == float64(k) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("never %d calls in flight: %v", k, h)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// A call beyond the slots is answered at once, not queued behind
		// calls that wait for the gate (they would never finish).
		got := pyCalls(t, w.url, false, call("call_function", "x"), call("health"))
		if got[0].Fault != spillway.FaultWorkerBusy {
			t.Fatalf("call beyond WORKER_CONCURRENCY = %+v, want the busy fault %d", got[0], spillway.FaultWorkerBusy)
		}
		if h, _ := got[1].Value.(map[string]any); h["busy"] != 1.0 || h["in_flight"] != float64(k) {
			t.Errorf("health() after one busy answer = %v, want busy 1 and %d in flight", h, k)
		}
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for range k {
			if err := <-held; err != nil {
				t.Errorf("held call: %v", err)
			}
		}
		// The slots are free again: the next call runs.
		if a := pyCalls(t, w.url, false, call("call_function", "y")); a[0].Fault != 0 {
			t.Errorf("call after the slots freed = %+v", a[0])
		}
	})

	t.Run("bad bodies", func(t *testing.T) {
		w := startWorker(t, bin, testHandler, "FUNCTION_STYLE=handler")
		tests := []struct {
			name, body string
			fault      int
		}{
			{"not xml", "<<<>", spillway.FaultParse},
			{"truncated", "<?xml version='1.0'?><methodCall><methodName>call_function</methodName><params>", spillway.FaultParse},
			{"no method", "<methodCall><params></params></methodCall>", spillway.FaultInvalidRequest},
			{"oversized", "<methodCall><methodName>call_function</methodName><params><param><value><string>" +
				strings.Repeat("x", 2<<20) + "</string></value></param></params></methodCall>", spillway.FaultPayloadTooLarge},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, err := http.Post(w.url+"/RPC2", "text/xml", strings.NewReader(tt.body))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(b), "<fault>") ||
					!strings.Contains(string(b), "<int>"+strconv.Itoa(tt.fault)+"</int>") {
					t.Fatalf("status %d body %.300s, want fault %d", resp.StatusCode, b, tt.fault)
				}
			})
		}
		if a := pyCalls(t, w.url, false, call("call_function", "ok")); a[0].Fault != 0 {
			t.Fatalf("call after bad bodies = %+v", a[0])
		}
	})

	t.Run("graceful stop", func(t *testing.T) {
		w := startWorker(t, bin, testHandler, "FUNCTION_STYLE=handler")
		release := filepath.Join(t.TempDir(), "release")
		type answer struct {
			a   []pyAnswer
			err error
		}
		result := make(chan answer, 1)
		py := testutil.Python(t)
		go func() {
			a, err := pyCallsErr(py, w.url, false, call("call_function", "wait:"+release))
			result <- answer{a, err}
		}()
		// The call is running once health() counts it; then the worker is
		// told to stop, and only once it is stopping does the call end.
		waitInFlight := time.Now().Add(60 * time.Second)
		for {
			h, _ := pyCalls(t, w.url, false, call("health"))[0].Value.(map[string]any)
			if h["in_flight"] == float64(1) {
				break
			}
			if time.Now().After(waitInFlight) {
				t.Fatalf("the call never ran: health %v", h)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		waitStopping := time.Now().Add(60 * time.Second)
		for !strings.Contains(w.stderr.String(), "worker stopping") {
			if time.Now().After(waitStopping) {
				t.Fatalf("the worker never began to stop:\n%s", w.stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := os.WriteFile(release, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := <-result
		if r.err != nil {
			t.Fatalf("in-flight call during stop: %v", r.err)
		}
		if a := r.a; a[0].Fault != 0 || a[0].Value != "released" {
			t.Errorf("in-flight call during stop = %+v", a[0])
		}
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Fatal("worker did not exit after SIGTERM")
		}
		if code := w.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
	})
}

// TestWorkerStopDelay: with WORKER_STOP_DELAY a worker told to stop keeps
// taking new calls for that long (lb learns of a Swarm stop only from the
// task list), then drains and exits; without it, a call made after SIGTERM
// finds the port closed.
func TestWorkerStopDelay(t *testing.T) {
	bin := testutil.BuildBinary(t, "worker")
	py := testutil.Python(t)
	for _, tc := range []struct {
		delay      string
		callServed bool
	}{
		{"", false},
		{"2s", true},
	} {
		t.Run("WORKER_STOP_DELAY="+tc.delay, func(t *testing.T) {
			env := []string{"FUNCTION_STYLE=handler"}
			if tc.delay != "" {
				env = append(env, "WORKER_STOP_DELAY="+tc.delay)
			}
			w := startWorker(t, bin, testHandler, env...)
			if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(w.stderr.String(), "worker stopping"); {
				if time.Now().After(deadline) {
					t.Fatalf("the worker never began to stop:\n%s", w.stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if tc.delay == "" {
				<-w.done // the port is closed once the stop began; wait for the exit
			}
			a, err := pyCallsErr(py, w.url, false, call("call_function", "echo"))
			served := err == nil && len(a) == 1 && a[0].Fault == 0
			if served != tc.callServed {
				t.Fatalf("a call after SIGTERM served = %v (%+v, %v), want %v", served, a, err, tc.callServed)
			}
			select {
			case <-w.done:
			case <-time.After(20 * time.Second):
				t.Fatal("worker did not exit after SIGTERM and its delay")
			}
			if code := w.cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("exit code %d, want 0", code)
			}
		})
	}
}

func TestWorkerMissingFunction(t *testing.T) {
	var stderr bytes.Buffer
	env := map[string]string{"FUNCTION_PATH": filepath.Join(t.TempDir(), "missing.py"), "SERVER_PORT": "1"}
	code := run(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "FUNCTION_PATH=") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// FUNCTION_REUSE_PROCESS=1 (lb sets it from the record's reuse_process)
// runs a script in the warm runner: every call answers from one process. By
// default each call is a process of its own.
func TestWorkerReuseProcess(t *testing.T) {
	bin := testutil.BuildBinary(t, "worker")
	const pidScript = "import os\nprint(os.getpid(), end='')\n"
	for _, tc := range []struct {
		env      []string
		samePids bool
	}{
		{env: []string{"FUNCTION_STYLE=script", "FUNCTION_REUSE_PROCESS=1"}, samePids: true},
		{env: []string{"FUNCTION_STYLE=script"}, samePids: false},
	} {
		t.Run(strings.Join(tc.env, " "), func(t *testing.T) {
			w := startWorker(t, bin, pidScript, tc.env...)
			got := pyCalls(t, w.url, false, call("call_function", "x"), call("call_function", "x"), call("call_function", "x"))
			pids := map[any]bool{}
			for _, a := range got {
				if a.Fault != 0 {
					t.Fatalf("call: %+v", a)
				}
				pids[a.Value] = true
			}
			if same := len(pids) == 1; same != tc.samePids {
				t.Errorf("pids of three calls %v: one process = %v, want %v", pids, same, tc.samePids)
			}
		})
	}
}

func TestWorkerRefusesABadReuseProcess(t *testing.T) {
	_, err := config.LoadWorker(func(name string) (string, bool) {
		if name == "FUNCTION_REUSE_PROCESS" {
			return "yes", true
		}
		return "", false
	})
	if err == nil || !strings.Contains(err.Error(), `FUNCTION_REUSE_PROCESS="yes"`) {
		t.Errorf("err = %v, want one naming FUNCTION_REUSE_PROCESS", err)
	}
}

// A script-style worker that forks a process per call runs its Go side on
// one P; the others keep the runtime's default.
func TestGoProcs(t *testing.T) {
	tests := []struct {
		name  string
		style spillway.Style
		reuse bool
		n     int
		want  int
	}{
		{"script, a process per call", spillway.StyleScript, false, 8, 1},
		{"script, one P already", spillway.StyleScript, false, 1, 1},
		{"script --reuse-process", spillway.StyleScript, true, 8, 8},
		{"handler", spillway.StyleHandler, false, 8, 8},
		{"handler, one P", spillway.StyleHandler, false, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := workerapi.Env{Style: tt.style, ReuseProcess: tt.reuse}
			if got := goProcs(cfg, tt.n); got != tt.want {
				t.Errorf("goProcs(%s, reuse %v, %d) = %d, want %d", tt.style, tt.reuse, tt.n, got, tt.want)
			}
		})
	}
}
