package runner_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/runner"
)

// reuseScript shows, call by call, what a script in reuse-process mode finds
// of the calls before it.
const reuseScript = `import os, sys, threading, time
import cache

arg = sys.argv[1] if len(sys.argv) > 1 else None
seen = globals().get("seen", 0) + 1
if arg == "main":
    print(__name__, seen, sys.argv, repr(sys.stdin.read()), end="")
elif arg == "raw":
    print("text", flush=True)
    os.write(1, b"raw bytes\n")
elif arg == "exit3":
    sys.exit(3)
elif arg == "exit3out":
    print("printed")
    sys.exit(3)
elif arg == "exitmsg":
    sys.exit("bad input")
elif arg == "raise":
    raise KeyError("nope")
elif arg == "mess":
    os.chdir("/")
    os.environ["SPILLWAY_LEFT"] = "1"
    del os.environ["HOME"]
    sys.path.append("/nowhere")
    sys.stdout = open(os.devnull, "w")
    sys.stderr = open(os.devnull, "w")
    print("lost")
elif arg == "look":
    print(os.getcwd() == os.path.dirname(__file__), "SPILLWAY_LEFT" in os.environ,
          "HOME" in os.environ, "/nowhere" in sys.path, end="")
elif arg == "cache":
    cache.calls.append(1)
    print(len(cache.calls), end="")
elif arg == "thread":
    threading.Thread(target=time.sleep, args=(60,), name="left-behind", daemon=True).start()
    print("started", end="")
elif arg == "threads":
    print([t.name for t in threading.enumerate() if t.name == "left-behind"], end="")
elif arg == "pid":
    print(os.getpid(), end="")
elif arg == "os_exit":
    os._exit(0)
`

func newReusePool(t *testing.T) *fixture {
	t.Helper()
	f := newPoolWith(t, spillway.StyleScript, "print('not yet')\n", 1, 10*time.Second, func(c *runner.Config) {
		c.ReuseProcess = true
		dir := filepath.Dir(c.FunctionPath)
		for name, code := range map[string]string{"function.py": reuseScript, "cache.py": "calls = []\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(code), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	return f
}

func TestReuseProcessCallSemantics(t *testing.T) {
	f := newReusePool(t)
	tests := []struct {
		param any
		want  string
		fnErr *spillway.FunctionError
	}{
		// A fresh __main__ (the global count starts again), its own argv,
		// stdin empty.
		{param: "main", want: "__main__ 1 ['function.py', 'main'] ''"},
		{param: "main", want: "__main__ 1 ['function.py', 'main'] ''"},
		{param: nil, want: ""},
		// stdout is captured at the descriptor too.
		{param: "raw", want: "text\nraw bytes\n"},
		// Exits and exceptions answer as a spawned process's would.
		{param: "exit3", fnErr: &spillway.FunctionError{Type: "SystemExit", Message: "3"}},
		{param: "exit3out", want: "printed\n"},
		{param: "exitmsg", fnErr: &spillway.FunctionError{Type: "SystemExit", Message: "bad input"}},
		{param: "raise", fnErr: &spillway.FunctionError{Type: "KeyError", Message: "'nope'"}},
		{param: int64(7), want: ""},
	}
	for i, tt := range tests {
		res, err := call(t, f.pool, tt.param)
		if tt.fnErr != nil {
			var fe *spillway.FunctionError
			if !errors.As(err, &fe) || fe.Type != tt.fnErr.Type || fe.Message != tt.fnErr.Message {
				t.Errorf("call %d (%v): err = %v, want %v", i, tt.param, err, tt.fnErr)
			}
			continue
		}
		if err != nil || res.Value != tt.want {
			t.Errorf("call %d (%v) = %q, %v; want %q", i, tt.param, res.Value, err, tt.want)
		}
	}
	if st := f.pool.Stats(); st.ColdStarts != 1 || st.Runners != 1 {
		t.Errorf("stats %+v: every call should have run in the one warm runner", st)
	}
}

func TestReuseProcessGuardsAndPersistence(t *testing.T) {
	f := newReusePool(t)
	get := func(param string) string {
		t.Helper()
		res, err := call(t, f.pool, param)
		if err != nil {
			t.Fatalf("call(%s): %v", param, err)
		}
		return fmt.Sprint(res.Value)
	}
	// Guarded: a call that moves the cwd, edits os.environ and sys.path and
	// replaces the standard streams leaves none of it to the next call.
	if got := get("look"); got != "True False True False" {
		t.Fatalf("before: %s", got)
	}
	if got := get("mess"); got != "" {
		t.Errorf("a call that replaced sys.stdout answered %q", got)
	}
	if got := get("look"); got != "True False True False" {
		t.Errorf("after a call changed cwd, environ and sys.path: cwd-is-the-function's, SPILLWAY_LEFT, HOME, /nowhere = %s; want True False True False", got)
	}
	if got := get("raw"); got != "text\nraw bytes\n" {
		t.Errorf("stdout after a call replaced the streams: %q", got)
	}

	// Documented persistence: one process, module state and threads stay.
	pid := get("pid")
	if again := get("pid"); again != pid {
		t.Errorf("pids %s and %s: not one warm process", pid, again)
	}
	for want := 1; want <= 3; want++ {
		if got := get("cache"); got != fmt.Sprint(want) {
			t.Errorf("call %d to an imported module's cache sees %s entries, want %d (module state persists)", want, got, want)
		}
	}
	if got := get("thread"); got != "started" {
		t.Fatal(got)
	}
	if got := get("threads"); got != "['left-behind']" {
		t.Errorf("threads seen by the next call: %s, want the one left behind", got)
	}

	// os._exit ends the process: a crash, and a fresh runner after it.
	if _, err := call(t, f.pool, "os_exit"); !errors.Is(err, spillway.ErrRunnerCrashed) {
		t.Fatalf("os._exit: %v, want ErrRunnerCrashed", err)
	}
	waitReplaced(t, f.pool)
	if got := get("cache"); got != "1" {
		t.Errorf("after a crash the module cache has %s entries, want 1 (a new process)", got)
	}
}

func TestReuseProcessIsOffByDefault(t *testing.T) {
	// The same script in default mode: a new process each call, nothing kept.
	f := newPoolWith(t, spillway.StyleScript, reuseScript, 1, 10*time.Second, func(c *runner.Config) {
		if err := os.WriteFile(filepath.Join(filepath.Dir(c.FunctionPath), "cache.py"), []byte("calls = []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	var pids []string
	for range 3 {
		res, err := call(t, f.pool, "cache")
		if err != nil || res.Value != "1" {
			t.Fatalf("cache in default mode: %v, %v; want 1 every call", res.Value, err)
		}
		res, err = call(t, f.pool, "pid")
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, fmt.Sprint(res.Value))
	}
	if pids[0] == pids[1] || pids[1] == pids[2] {
		t.Errorf("pids %s: calls share a process", strings.Join(pids, " "))
	}
}
