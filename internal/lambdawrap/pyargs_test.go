package lambdawrap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// pyArgv runs the shim's own _argv_param on each JSON parameter and returns
// the argument it gives (or null for none), and json.dumps(str)'s size of
// each string in sizes.
const pyArgv = `import json, sys
ns = {"__name__": "shim_under_test", "__file__": sys.argv[1]}
exec(compile(open(sys.argv[1]).read(), "handler.py", "exec"), ns)
req = json.load(sys.stdin)
out = {"args": [], "sizes": []}
for p in req["params"]:
    a = ns["_argv_param"](json.loads(p))
    out["args"].append(a[0] if a else None)
for s in req["strings"]:
    out["sizes"].append(len(json.dumps(s)))
json.dump(out, sys.stdout)
`

func TestScriptArgMatchesTheShim(t *testing.T) {
	params := []any{
		nil, "", "20", "héllo wörld", "a\x00b", true, false,
		int64(0), int64(-7), int64(1) << 62, 0.1, 1.5, -0.0, 1e16, 1e15, 123456789012345678.0,
		1e-4, 1e-5, 2.5e-7, 1e100, math.MaxFloat64, math.SmallestNonzeroFloat64, 100.0, 3.0,
		[]any{}, map[string]any{},
		[]any{int64(1), "two", 3.5, true, nil, []any{"x"}},
		map[string]any{"b": int64(1), "a": "é\n\"\\\t\x01\x7f😀", "c": map[string]any{"z": []any{1e20}}},
		[]byte("bytes are base64"),
	}
	var raw []string
	for _, p := range params {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, string(b))
	}
	// Raw JSON that Go never writes but the shim must read the same.
	raw = append(raw, `{"k": 1, "j": 2, "k": 3}`, `1E3`, `-0`, `12345678901234567890123`, `[1e400]`)
	strs := []string{"", "plain", "é", "😀", "\x7f\x1f\"\\\n\r\t\b\f", "ünïcödé 😀 mixed\x00"}

	shim, err := lambdawrap.WriteShim(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(map[string]any{"params": raw, "strings": strs})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Python(t), "-c", pyArgv, shim)
	cmd.Dir = t.TempDir() // no function.py: the shim's Lambda-mode load fails quietly
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var want struct {
		Args  []*string `json:"args"`
		Sizes []int64   `json:"sizes"`
	}
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	for i, p := range raw {
		arg, ok, err := lambdawrap.ScriptArg([]byte(p))
		if err != nil {
			t.Errorf("ScriptArg(%s): %v", p, err)
			continue
		}
		switch w := want.Args[i]; {
		case w == nil && ok:
			t.Errorf("ScriptArg(%s) = %q, want no argument", p, arg)
		case w != nil && (!ok || arg != *w):
			t.Errorf("ScriptArg(%s) = %q (%v), want %q", p, arg, ok, *w)
		}
	}
	for i, s := range strs {
		if got := lambdawrap.JSONStringSize(s); got != want.Sizes[i] {
			t.Errorf("JSONStringSize(%q) = %d, want %d", s, got, want.Sizes[i])
		}
	}
}

func TestPyFloatRepr(t *testing.T) {
	tests := map[float64]string{
		0: "0.0", 1: "1.0", -2.5: "-2.5", 0.1: "0.1", 1e16: "1e+16", 1e15: "1000000000000000.0",
		1e-4: "0.0001", 1e-5: "1e-05", 1.5e300: "1.5e+300", 123.456: "123.456",
		math.Inf(1): "inf", math.Inf(-1): "-inf",
	}
	for f, want := range tests {
		if got := lambdawrap.PyFloatRepr(f); got != want {
			t.Errorf("PyFloatRepr(%v) = %q, want %q", f, got, want)
		}
	}
}

func TestWriteShimWritesTheZygote(t *testing.T) {
	dir := t.TempDir()
	if _, err := lambdawrap.WriteShim(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, lambdawrap.ZygoteFile))
	if err != nil || !bytes.Equal(b, lambdawrap.Zygote) {
		t.Fatalf("zygote.py beside the shim: %v", err)
	}
}
