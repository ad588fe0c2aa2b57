package lambdawrap_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
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

const dictHandler = `import os
def handler(event, context):
    p = event["parameter"]
    if p == "boom":
        raise ValueError("bad parameter: boom")
    return {"echo": p, "n": 3, "pid": os.getpid()}
`

func TestBuildZipDeterministic(t *testing.T) {
	fn := spillway.Function{Name: "faas", Code: fibScript, Style: spillway.StyleScript}
	a, err := lambdawrap.BuildZip(fn)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a wall-clock timestamp would now differ
	b, err := lambdawrap.BuildZip(fn)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same function differ")
	}
	if got, want := lambdawrap.CodeSHA256(a), sha256b64(a); got != want {
		t.Fatalf("CodeSHA256 = %s, want %s", got, want)
	}

	zr, err := zip.NewReader(bytes.NewReader(a), int64(len(a)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if f.Mode() != 0o644 {
			t.Errorf("%s mode = %v, want 0644", f.Name, f.Mode())
		}
	}
	if want := []string{"function.py", "handler.py", "spillway.json"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("entries = %v, want %v", names, want)
	}

	other, err := lambdawrap.BuildZip(spillway.Function{Name: "faas", Code: fibScript + "\n", Style: spillway.StyleScript})
	if err != nil {
		t.Fatal(err)
	}
	if lambdawrap.CodeSHA256(other) == lambdawrap.CodeSHA256(a) {
		t.Fatal("different code gave the same CodeSha256")
	}
}

func TestBuildZipRejects(t *testing.T) {
	tests := []struct {
		name string
		fn   spillway.Function
	}{
		{"empty code", spillway.Function{Name: "f", Style: spillway.StyleScript}},
		{"bad style", spillway.Function{Name: "f", Code: "x=1", Style: "lambda"}},
		{"bad handler", spillway.Function{Name: "f", Code: "x=1", Style: spillway.StyleHandler, Handler: "a.b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := lambdawrap.BuildZip(tt.fn); err == nil {
				t.Fatal("BuildZip succeeded, want an error")
			}
		})
	}
}

func sha256b64(b []byte) string {
	s := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(s[:])
}

// driver unpacks the zip with Python's zipfile, imports handler.py the way the
// Lambda runtime does, calls handler(event, None) for each event on its stdin
// (one JSON per line) and prints each return value as one JSON line.
const driver = `import json, sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
sys.path.insert(0, sys.argv[2])
import handler
out = sys.stdout
sys.stdout = sys.stderr
for line in sys.stdin:
    out.write(json.dumps(handler.handler(json.loads(line), None)) + "\n")
`

func runLambda(t *testing.T, fn spillway.Function, events ...any) []map[string]any {
	t.Helper()
	return runLambdaCapped(t, fn, 0, events...)
}

func runLambdaCapped(t *testing.T, fn spillway.Function, maxResult int64, events ...any) []map[string]any {
	t.Helper()
	py := testutil.Python(t)
	z, err := lambdawrap.BuildZipCapped(fn, maxResult)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	zipPath := filepath.Join(dir, "fn.zip")
	if err := os.WriteFile(zipPath, z, 0o644); err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	for _, e := range events {
		b, _ := json.Marshal(e)
		in.Write(b)
		in.WriteByte('\n')
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", driver, zipPath, filepath.Join(dir, "task"))
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python driver: %v\n%s", err, stderr.String())
	}
	var res []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("driver output %q: %v\nstderr: %s", line, err, stderr.String())
		}
		res = append(res, m)
	}
	if len(res) != len(events) {
		t.Fatalf("got %d results for %d events\nstderr: %s", len(res), len(events), stderr.String())
	}
	return res
}

func proxyEvent(body string) map[string]any {
	return map[string]any{
		"resource": "/", "path": "/", "httpMethod": "POST",
		"headers":        map[string]any{"Content-Type": "application/json"},
		"requestContext": map[string]any{"stage": "dev"},
		"body":           body, "isBase64Encoded": false,
	}
}

func TestLambdaModeScript(t *testing.T) {
	fn := spillway.Function{Name: "faas", Code: fibScript, Style: spillway.StyleScript}
	got := runLambda(t, fn,
		map[string]any{"parameter": "10"},
		map[string]any{"parameter": 12},
		map[string]any{"parameter": "abc"},
		map[string]any{},
		proxyEvent(`{"parameter": "7"}`),
	)
	want := []map[string]any{
		{"statusCode": 200.0, "body": "The Fibonacci number of 10 is 55\n", "coldStart": true},
		{"statusCode": 200.0, "body": "The Fibonacci number of 12 is 144\n", "coldStart": false},
		{"statusCode": 200.0, "body": "Usage: python function.py <integer>\n", "coldStart": false},
		{"statusCode": 200.0, "body": "Usage: python function.py <integer>\n", "coldStart": false},
	}
	for i, w := range want {
		if !reflect.DeepEqual(got[i], w) {
			t.Errorf("event %d: got %v, want %v", i, got[i], w)
		}
	}
	proxy := got[4]
	if proxy["statusCode"] != 200.0 || !reflect.DeepEqual(proxy["headers"], map[string]any{"Content-Type": "application/json"}) {
		t.Fatalf("proxy response = %v", proxy)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(proxy["body"].(string)), &body); err != nil {
		t.Fatalf("proxy body: %v", err)
	}
	if w := (map[string]any{"statusCode": 200.0, "body": "The Fibonacci number of 7 is 13\n", "coldStart": false}); !reflect.DeepEqual(body, w) {
		t.Fatalf("proxy body = %v, want %v", body, w)
	}
}

func TestLambdaModeScriptErrors(t *testing.T) {
	fn := spillway.Function{Name: "f", Style: spillway.StyleScript, Code: `import sys
arg = sys.argv[1]
if arg == "raise":
    raise KeyError("missing")
if arg == "exit":
    sys.exit("no good")
if arg == "exit3":
    sys.exit(3)
if arg == "segv":
    import os, signal
    os.kill(os.getpid(), signal.SIGSEGV)
print(arg, end="")
`}
	got := runLambda(t, fn,
		map[string]any{"parameter": "raise"},
		map[string]any{"parameter": "exit"},
		map[string]any{"parameter": "exit3"},
		map[string]any{"parameter": "segv"},
		map[string]any{"parameter": "fine"},
	)
	want := []map[string]any{
		{"statusCode": 500.0, "errorType": "KeyError", "errorMessage": "'missing'", "coldStart": true},
		{"statusCode": 500.0, "errorType": "SystemExit", "errorMessage": "no good", "coldStart": false},
		{"statusCode": 500.0, "errorType": "SystemExit", "errorMessage": "3", "coldStart": false},
		{"statusCode": 500.0, "errorType": "Runtime.ExitError", "errorMessage": "function killed by signal SIGSEGV", "coldStart": false},
		{"statusCode": 200.0, "body": "fine", "coldStart": false},
	}
	for i, w := range want {
		if !reflect.DeepEqual(got[i], w) {
			t.Errorf("event %d: got %v, want %v", i, got[i], w)
		}
	}
}

func TestLambdaModeHandler(t *testing.T) {
	fn := spillway.Function{Name: "h", Code: dictHandler, Style: spillway.StyleHandler}
	got := runLambda(t, fn,
		map[string]any{"parameter": "x"},
		map[string]any{"parameter": "boom"},
		proxyEvent(`{"parameter": [1, 2]}`),
		proxyEvent(`not json`),
	)
	first := got[0]
	body, _ := first["body"].(map[string]any)
	if first["statusCode"] != 200.0 || first["coldStart"] != true || body["echo"] != "x" || body["n"] != 3.0 {
		t.Errorf("call 1 = %v", first)
	}
	if w := (map[string]any{"statusCode": 500.0, "errorType": "ValueError", "errorMessage": "bad parameter: boom", "coldStart": false}); !reflect.DeepEqual(got[1], w) {
		t.Errorf("call 2 = %v, want %v", got[1], w)
	}
	var pb map[string]any
	if err := json.Unmarshal([]byte(got[2]["body"].(string)), &pb); err != nil {
		t.Fatal(err)
	}
	if got[2]["statusCode"] != 200.0 || !reflect.DeepEqual(pb["body"].(map[string]any)["echo"], []any{1.0, 2.0}) {
		t.Errorf("proxy call = %v", got[2])
	}
	if got[3]["statusCode"] != 400.0 {
		t.Errorf("proxy call with a bad body = %v, want statusCode 400", got[3])
	}
}

func TestLambdaModeImportError(t *testing.T) {
	fn := spillway.Function{Name: "h", Code: "def handler(event, context):\n    return 1\nraise RuntimeError('init failed')\n", Style: spillway.StyleHandler}
	got := runLambda(t, fn, map[string]any{"parameter": 1})
	if w := (map[string]any{"statusCode": 500.0, "errorType": "RuntimeError", "errorMessage": "init failed", "coldStart": true}); !reflect.DeepEqual(got[0], w) {
		t.Fatalf("got %v, want %v", got[0], w)
	}
}

func TestLambdaModeResultCap(t *testing.T) {
	// The shim in Lambda answers 413 ResultTooLarge for a result over the
	// cap in spillway.json; under a cap above it (the protection off) the
	// same result is returned. The default cap leaves the zip unchanged.
	fn := spillway.Function{Name: "big", Code: "def handler(event, context):\n    return 'x' * event['parameter']\n", Style: spillway.StyleHandler}
	got := runLambdaCapped(t, fn, 1024, map[string]any{"parameter": 2000}, map[string]any{"parameter": 10})
	if got[0]["statusCode"] != 413.0 || got[0]["errorType"] != "ResultTooLarge" || got[1]["statusCode"] != 200.0 {
		t.Errorf("under a 1 KiB cap: %v, %v; want 413 ResultTooLarge, then 200", got[0], got[1])
	}
	got = runLambdaCapped(t, fn, 4096, map[string]any{"parameter": 2000})
	if got[0]["statusCode"] != 200.0 || len(got[0]["body"].(string)) != 2000 {
		t.Errorf("under a 4 KiB cap: %.100v, want the result", got[0])
	}
	plain, err := lambdawrap.BuildZip(fn)
	if err != nil {
		t.Fatal(err)
	}
	capped, err := lambdawrap.BuildZipCapped(fn, lambdawrap.DefaultMaxResultBytes)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, capped) {
		t.Error("the default cap changed the zip (and so the deployed CodeSha256)")
	}
}

// counter is a handler with a side effect each call leaves in its warm
// environment: it answers how many times it ran there.
const counter = `runs = 0

def handler(event, context):
    global runs
    runs += 1
    return {"runs": runs, "parameter": event.get("parameter")}
`

// TestLambdaModePing: the shim answers lb's keep-warm ping, direct or
// through API Gateway, without running the function (the counter does not
// move), and the ping takes the environment's cold start. Events that only
// look like a ping are calls: a user's value under "parameter", whatever it
// is, a ping key beside a parameter, or a ping key that is not true.
func TestLambdaModePing(t *testing.T) {
	fn := spillway.Function{Name: "count", Code: counter, Style: spillway.StyleHandler}
	var ping map[string]any
	if err := json.Unmarshal(lambdawrap.PingEvent(), &ping); err != nil {
		t.Fatal(err)
	}
	got := runLambda(t, fn,
		ping,
		map[string]any{"parameter": "a"},
		proxyEvent(string(lambdawrap.PingEvent())),
		map[string]any{"parameter": map[string]any{lambdawrap.PingKey: true}},
		map[string]any{lambdawrap.PingKey: true, "parameter": nil},
		map[string]any{lambdawrap.PingKey: "true"},
		proxyEvent(`{"parameter": {"spillway_ping": true}}`),
		ping,
	)
	pong := func(cold bool) map[string]any {
		return map[string]any{"statusCode": 200.0, "ping": true, "coldStart": cold}
	}
	ran := func(n float64, param any) map[string]any {
		return map[string]any{"statusCode": 200.0, "body": map[string]any{"runs": n, "parameter": param}, "coldStart": false}
	}
	var proxied []map[string]any
	for _, i := range []int{2, 6} {
		var body map[string]any
		if err := json.Unmarshal([]byte(got[i]["body"].(string)), &body); err != nil {
			t.Fatalf("event %d: proxy body: %v", i, err)
		}
		proxied = append(proxied, body)
	}
	for i, tc := range []struct {
		got, want map[string]any
	}{
		{got[0], pong(true)},
		{got[1], ran(1, "a")},
		{proxied[0], pong(false)},
		{got[3], ran(2, map[string]any{lambdawrap.PingKey: true})},
		{got[4], ran(3, nil)},
		{got[5], ran(4, nil)},
		{proxied[1], ran(5, map[string]any{lambdawrap.PingKey: true})},
		{got[7], pong(false)},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("event %d: got %v, want %v", i, tc.got, tc.want)
		}
	}
}
