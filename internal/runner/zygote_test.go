package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/runner"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// asSpawned is a script whose every outcome depends on the process it runs
// in; each call must print what a fresh `python3 function.py ARG` prints.
const asSpawned = `import atexit, json, os, random, sys, threading, time
import helper

arg = sys.argv[1] if len(sys.argv) > 1 else None
if arg is None:
    print("no argument", sys.argv)
elif arg == "globals":
    print(sorted(globals()), __name__, __doc__, __package__, __spec__, __cached__,
          type(__loader__).__name__, __file__ == os.path.abspath("function.py"))
elif arg == "sys":
    print(sys.argv, sys.path[0] == os.getcwd(), os.getcwd() == os.path.dirname(__file__),
          sys.stdin.read(), sys.stdout.isatty(), sys.stdout.encoding, sys.flags.isolated,
          sys.flags.no_site, "site" in sys.modules)
elif arg == "state":
    helper.calls.append(1)
    os.environ["SPILLWAY_SEEN"] = os.environ.get("SPILLWAY_SEEN", "") + "x"
    sys.path.append("/nowhere")
    os.chdir("/")
    print(len(helper.calls), os.environ["SPILLWAY_SEEN"], sys.path.count("/nowhere"))
elif arg == "atexit":
    atexit.register(lambda: print("at exit"))
    print("main")
elif arg == "thread":
    def late():
        time.sleep(0.2)
        print("from a thread")
    threading.Thread(target=late).start()
    print("main returns")
elif arg == "fork":
    pid = os.fork()
    if pid == 0:
        print("grandchild")
        sys.exit(0)
    os.waitpid(pid, 0)
    print("parent")
elif arg == "os_exit":
    print("flushed", flush=True)
    os._exit(0)
elif arg == "closefds":
    os.closerange(3, 1024)
    print("closed")
elif arg == "bytes":
    sys.stdout.flush()
    sys.stdout.buffer.write(b"ok \xff\xfe \xc3\xa9\n")
elif arg == "random":
    print(random.random())
elif arg.startswith("big"):
    print(len(arg))
else:
    print(repr(arg))
`

// spawned runs the script as the reference does: python3 function.py ARG in
// its folder, with the runners' environment, and returns its stdout as the
// shim decodes it.
func spawned(t *testing.T, fnPath string, arg *string) string {
	t.Helper()
	args := []string{filepath.Base(fnPath)}
	if arg != nil {
		args = append(args, *arg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Python(t), args...)
	cmd.Dir = filepath.Dir(fnPath)
	cmd.Env = runner.MinimalEnv()
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("spawn %v: %v", args, err)
	}
	return pyReplace(out)
}

// pyReplace decodes b as UTF-8 with Python's "replace" error handler: one
// U+FFFD per byte that starts no valid sequence (enough for this test).
func pyReplace(b []byte) string {
	var s strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		s.WriteRune(r)
		b = b[n:]
	}
	return s.String()
}

func TestScriptRunsAsSpawned(t *testing.T) {
	f := newPool(t, spillway.StyleScript, asSpawned, 1, 20*time.Second)
	fnPath := f.fnPath
	if err := os.WriteFile(filepath.Join(filepath.Dir(fnPath), "helper.py"), []byte("calls = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := "big" + strings.Repeat("é", 50_000)
	params := []any{nil, "globals", "sys", "state", "state", "atexit", "thread", "fork",
		"os_exit", "closefds", "bytes", big, int64(42), 2.5, true,
		map[string]any{"b": []any{int64(1), "é"}, "a": nil}}
	for _, p := range params {
		raw, _ := json.Marshal(p)
		arg, ok, err := lambdawrap.ScriptArg(raw)
		if err != nil {
			t.Fatal(err)
		}
		var argp *string
		if ok {
			argp = &arg
		}
		want := spawned(t, fnPath, argp)
		res, err := call(t, f.pool, p)
		if err != nil {
			t.Errorf("call(%.40v): %v", p, err)
			continue
		}
		if res.Value != want {
			t.Errorf("call(%.40v) = %q\nspawned python3 prints %q", p, res.Value, want)
		}
	}

	// Two calls never share a random state, as two processes do not.
	a, errA := call(t, f.pool, "random")
	b, errB := call(t, f.pool, "random")
	if errA != nil || errB != nil || a.Value == b.Value {
		t.Errorf("random in two calls: %v %v, %v %v", a.Value, errA, b.Value, errB)
	}
}

func TestScriptSyntaxErrorIsTheInitError(t *testing.T) {
	f := newPool(t, spillway.StyleScript, "print('a'\n", 1, 5*time.Second)
	_, err := call(t, f.pool, "x")
	var fe *spillway.FunctionError
	if !errors.As(err, &fe) || fe.Type != "SyntaxError" || !strings.Contains(fe.Traceback, "SyntaxError") {
		t.Fatalf("err = %v, want SyntaxError with its traceback", err)
	}
	if e := f.pool.InitError(); e == nil || e.Type != "SyntaxError" {
		t.Errorf("InitError() = %v", e)
	}
}

func TestScriptOutcomesBeyondTheScript(t *testing.T) {
	f := newPool(t, spillway.StyleScript, `import os, signal, sys
arg = sys.argv[1]
if arg == "exit3":
    os._exit(3)
if arg == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if arg == "exitobj":
    sys.exit(["not", "an", "int"])
if arg == "raise_after_print":
    print("printed")
    raise RuntimeError("late")
print("fine")
`, 1, 10*time.Second)
	var fe *spillway.FunctionError
	if _, err := call(t, f.pool, "exit3"); !errors.As(err, &fe) || fe.Type != "SystemExit" || fe.Message != "exit status 3" {
		t.Errorf("os._exit(3): %v", err)
	}
	if _, err := call(t, f.pool, "kill"); !errors.Is(err, spillway.ErrRunnerCrashed) || !strings.Contains(err.Error(), "SIGKILL") {
		t.Errorf("SIGKILL: %v, want a crash naming the signal", err)
	}
	if _, err := call(t, f.pool, "exitobj"); !errors.As(err, &fe) || fe.Type != "SystemExit" || fe.Message != "['not', 'an', 'int']" {
		t.Errorf("sys.exit(list): %v", err)
	}
	if _, err := call(t, f.pool, "raise_after_print"); !errors.As(err, &fe) || fe.Type != "RuntimeError" || !strings.Contains(fe.Traceback, "late") {
		t.Errorf("raise after print: %v", err)
	}
	// None of these cost the runner: the same zygote answers, warm.
	res, err := call(t, f.pool, "x")
	if err != nil || res.Value != "fine\n" || res.ColdStart {
		t.Errorf("after them: %+v, %v", res, err)
	}
	if st := f.pool.Stats(); st.Runners != 1 || st.ColdStarts != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestScriptPreimportsOnlyUnshadowedStdlib(t *testing.T) {
	// A json.py beside the function is what `import json` gets, as in a
	// spawned process; the zygote must not import the real one ahead.
	f := newPool(t, spillway.StyleScript, "import json, decimal\nprint(json.WHO, decimal.Decimal('1.5'))\n", 1, 10*time.Second)
	fnPath := f.fnPath
	dir := filepath.Dir(fnPath)
	if err := os.WriteFile(filepath.Join(dir, "json.py"), []byte("WHO = 'local json'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The pool was opened before json.py existed: open another on the same folder.
	g := newPoolAt(t, fnPath, spillway.StyleScript)
	res, err := call(t, g, nil)
	if err != nil || res.Value != "local json 1.5\n" {
		t.Fatalf("got %q, %v; want the local json", res.Value, err)
	}
	if want := spawned(t, fnPath, nil); res.Value != want {
		t.Errorf("runner %q, spawned %q", res.Value, want)
	}
}

// newPoolAt opens a one-runner pool on an existing function file.
func newPoolAt(t *testing.T, fnPath string, style spillway.Style) *runner.Runners {
	t.Helper()
	shim, err := lambdawrap.WriteShim(filepath.Join(t.TempDir(), "shim"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := runner.New(runner.Config{Python: testutil.Python(t), ShimPath: shim, FunctionPath: fnPath,
		Style: style, Concurrency: 1, Timeout: 10 * time.Second, MaxResultBytes: 6 << 20, Output: &testutil.SyncBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

// After Close, no process of a script runner is left: the zygote, its
// prepared children and a child still running a call are all gone.
func TestScriptCloseLeavesNoProcess(t *testing.T) {
	f := newPool(t, spillway.StyleScript, "import sys, time\nif sys.argv[1:] == ['sleep']:\n    time.sleep(60)\nprint('x')\n", 2, 30*time.Second)
	if _, err := call(t, f.pool, "x"); err != nil {
		t.Fatal(err)
	}
	marker := f.fnPath
	before := processesRunning(t, marker)
	if before < 3 { // a zygote and its prepared children per runner
		t.Fatalf("%d processes run %s, want the zygotes and their children", before, marker)
	}
	go func() { _, _ = f.pool.Call(context.Background(), "sleep") }()
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.pool.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for processesRunning(t, marker) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the runners outlive Close", processesRunning(t, marker))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesRunning counts the live (not zombie) processes whose command
// line names path.
func processesRunning(t *testing.T, path string) int {
	t.Helper()
	n := 0
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(b, ')'); i < 0 || len(b) < i+3 || b[i+2] == 'Z' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(filepath.Dir(st), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(path)) {
			n++
		}
	}
	return n
}
