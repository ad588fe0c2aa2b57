package main

import (
	"bufio"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/loadgen/fakelb"
	"github.com/spillway-faas/spillway/internal/testutil"
)

type result struct {
	code           int
	stdout, stderr string
}

// runClient runs the command in-process with its own env.
func runClient(t *testing.T, vars map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errb strings.Builder
	e := &env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errb,
		lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, args, e)
	return result{code, out.String(), errb.String()}
}

func TestCall(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{FaultEvery: 3, FaultCode: -32500})
	vars := map[string]string{"LB_URL": lb.URL}
	tests := []struct {
		name string
		args []string
		code int
		out  []string
		err  string
	}{
		{"plain", []string{"call", "30"}, 0, []string{"result(30)\n"}, ""},
		{"verbose after param", []string{"call", "30", "-v"}, 0,
			[]string{"result(30)\n", "route       ", "worker      ", "reason      ", "duration    ", "cold start  yes"}, ""},
		{"fault", []string{"call", "7"}, 1, nil, "fault -32500 function raised: fake fault on call 3"},
		{"json param", []string{"call", "--param-json", `{"n": 3}`}, 0, []string{"result(map[n:3])"}, ""},
		{"no param", []string{"call"}, 2, nil, "want exactly one PARAM"},
		{"bad flag", []string{"call", "--nope", "1"}, 2, nil, "flag provided but not defined"},
		{"unknown command", []string{"fly"}, 2, nil, `unknown command "fly"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runClient(t, vars, "", tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", r.code, tt.code, r.stdout, r.stderr)
			}
			for _, w := range tt.out {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
			if tt.err != "" && !strings.Contains(r.stderr, tt.err) {
				t.Errorf("stderr lacks %q:\n%s", tt.err, r.stderr)
			}
		})
	}
}

func TestCallTargetAndAuth(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{})
	port := strings.TrimSuffix(lb.URL[strings.LastIndex(lb.URL, ":")+1:], "/")
	r := runClient(t, map[string]string{"LOAD_BALANCER_PORT": port, "LB_AUTH_TOKEN": "s3cret"}, "", "call", "5")
	if r.code != 0 || r.stdout != "result(5)\n" {
		t.Errorf("via LOAD_BALANCER_PORT: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = runClient(t, map[string]string{"LB_URL": "http://127.0.0.1:1/"}, "", "call", "--lb", lb.URL, "5")
	if r.code != 0 {
		t.Errorf("--lb should win over LB_URL: %q", r.stderr)
	}
	r = runClient(t, map[string]string{"LB_URL": "http://127.0.0.1:1/"}, "", "call", "5")
	if r.code != 1 || !strings.Contains(r.stderr, "xmlrpc call call_faas: send to http://127.0.0.1:1/") {
		t.Errorf("unreachable lb: exit %d %q", r.code, r.stderr)
	}
}

func TestRepl(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{FaultEvery: 2})
	r := runClient(t, map[string]string{"LB_URL": lb.URL}, "1\n2\n\n3\nquit\n4\n", "repl")
	want := "result(1)\nerror: fault -32000 timeout: fake fault on call 2\nresult(3)\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d\n-want %q\n+got  %q\nstderr %s", r.code, want, r.stdout, r.stderr)
	}
}

func TestStatus(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{})
	vars := map[string]string{"LB_URL": lb.URL}
	r := runClient(t, vars, "", "status")
	want := "lb " + lb.URL + `
counters:
  calls:  0
  cloud:  0
members:
  -
    healthy:    yes
    in_flight:  0
    name:       fake-w1
  -
    healthy:    yes
    in_flight:  1
    name:       fake-w2
pool_size:  2
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d\n-want\n%s\n+got\n%s\nstderr %s", r.code, want, r.stdout, r.stderr)
	}
	r = runClient(t, vars, "", "status", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st["pool_size"] != 2.0 {
		t.Errorf("status --json: %v %q", err, r.stdout)
	}
}

func TestBench(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{Delay: time.Millisecond, FaultEvery: 10})
	vars := map[string]string{"LB_URL": lb.URL}

	t.Run("text", func(t *testing.T) {
		r := runClient(t, vars, "", "bench", "-c", "3", "-n", "60", "--warmup", "6", "--param", "12")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, w := range []string{"calls       60 sent", "(+6 warm-up, not counted)", "-32000 timeout:", "latency ms",
			"p50", "p99.9", "local", "cloud", "cold starts", "reasons     overflow:", "pool size   "} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("report lacks %q:\n%s", w, r.stdout)
			}
		}
		if r.stderr != "" {
			t.Errorf("stderr not quiet off a terminal: %q", r.stderr)
		}
	})
	t.Run("json open model", func(t *testing.T) {
		r := runClient(t, vars, "", "bench", "--rate", "300", "-n", "50", "--json")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		var rep loadgen.Report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("JSON: %v\n%s", err, r.stdout)
		}
		if rep.Model != "open" || rep.Rate != 300 || rep.Sent != 50 || rep.OK+rep.Errors != 50 {
			t.Errorf("report %+v", rep)
		}
		l := rep.Latency
		if !(l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("percentiles out of order: %+v", l)
		}
	})
	t.Run("compare and png", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "chart.png")
		r := runClient(t, vars, "", "bench", "--compare", "-c", "2", "-n", "20", "--out", out)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, w := range []string{"== local ==", "== cloud ==", "== hybrid ==", "local p50 ms", "cloud p99 ms"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("compare output lacks %q:\n%s", w, r.stdout)
			}
		}
		for _, label := range []string{"local", "cloud", "hybrid"} {
			f, err := os.Open(filepath.Join(filepath.Dir(out), "chart-"+label+".png"))
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(f)
			f.Close()
			if err != nil {
				t.Fatalf("%s png: %v", label, err)
			}
			if b := img.Bounds(); b.Dx() != loadgen.ChartWidth || b.Dy() != loadgen.ChartHeight {
				t.Errorf("%s png %v", label, b)
			}
		}
	})
	t.Run("compare json", func(t *testing.T) {
		before, _ := lb.Forced()
		r := runClient(t, vars, "", "bench", "--compare", "-n", "10", "--json")
		var got struct{ Compare []loadgen.Report }
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Compare) != 3 {
			t.Fatalf("JSON %v: %s", err, r.stdout)
		}
		if got.Compare[0].Routes["local"].Count+got.Compare[0].Errors != 10 || got.Compare[1].Routes["cloud"].Count+got.Compare[1].Errors != 10 {
			t.Errorf("forced runs did not stay on their route: %+v", got.Compare)
		}
		if after, _ := lb.Forced(); after-before != 10 {
			t.Errorf("forced-local calls %d, want 10", after-before)
		}
	})
}

func TestBenchRefuses(t *testing.T) {
	tests := []struct {
		name string
		args []string
		err  string
	}{
		{"remote target", []string{"bench", "--lb", "http://192.0.2.1:8000/", "-n", "1"}, "not loopback"},
		{"bad route", []string{"bench", "--route", "moon", "-n", "1"}, "want local or cloud"},
		{"negative count", []string{"bench", "-n", "-5"}, "out of range"},
		{"bad warmup", []string{"bench", "--warmup", "soon"}, "want a count"},
		{"stray argument", []string{"bench", "now"}, "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runClient(t, nil, "", tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.err) {
				t.Errorf("exit %d stderr %q, want 2 and %q", r.code, r.stderr, tt.err)
			}
		})
	}
}

func TestBenchAllFailed(t *testing.T) {
	r := runClient(t, map[string]string{"LB_URL": "http://127.0.0.1:1/"}, "", "bench", "-n", "3", "-c", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "every call failed (transport error ×3)") {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
}

// startRefServer runs testdata/refserver.py: Python's SimpleXMLRPCServer
// with only call_faas, as the reference gateway has.
func startRefServer(t *testing.T) string {
	t.Helper()
	port := testutil.FreePort(t)
	cmd := exec.Command(testutil.Python(t), "testdata/refserver.py", strconv.Itoa(port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start python server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("python server did not start: %q %v", line, err)
	}
	return "http://127.0.0.1:" + strconv.Itoa(port) + "/"
}

func TestBenchReferenceServer(t *testing.T) {
	// Each case gets a server of its own: the server serves one connection
	// at a time, as the reference's does, so a connection that an earlier
	// case's cancelled call left dialled but unused would stall the next.
	refServer := func(t *testing.T) map[string]string {
		return map[string]string{"LB_URL": startRefServer(t)}
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"invoke falls back", []string{"bench", "-c", "2", "-n", "30", "--warmup", "3"},
			"method      call_faas (the target has no invoke: routes unknown)"},
		{"call_faas asked for", []string{"bench", "--method", "call_faas", "-c", "2", "-n", "30"},
			"method      call_faas (routes unknown)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runClient(t, refServer(t), "", tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
			}
			for _, w := range []string{"calls       30 sent, 30 ok, 0 errors", tt.want, "unknown", "pool size   not reported"} {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("report lacks %q:\n%s", w, r.stdout)
				}
			}
			if strings.Contains(r.stdout, "local  ") || strings.Contains(r.stdout, "cloud  ") {
				t.Errorf("report claims a route:\n%s", r.stdout)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		r := runClient(t, refServer(t), "", "bench", "-n", "10", "--json")
		var rep loadgen.Report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
			t.Fatalf("exit %d JSON %v: %s %s", r.code, err, r.stdout, r.stderr)
		}
		if rep.Method != "call_faas" || !rep.NoInvoke || rep.OK != 10 || rep.Routes[loadgen.RouteUnknown].Count != 10 {
			t.Errorf("report %+v", rep)
		}
	})
	for _, args := range [][]string{
		{"bench", "--compare", "-n", "10"},
		{"bench", "--route", "local", "-d", "30s"},
	} {
		t.Run(strings.Join(args[1:2], ""), func(t *testing.T) {
			start := time.Now()
			r := runClient(t, refServer(t), "", args...)
			if r.code != 1 || !strings.Contains(r.stderr, "has no invoke method") {
				t.Errorf("exit %d stderr %q, want 1 and no invoke", r.code, r.stderr)
			}
			if took := time.Since(start); took > 20*time.Second { // the --route run asks for 30 s
				t.Errorf("refusal took %v: the run did not stop at the first answer", took)
			}
		})
	}
}

func TestBenchMethodFlag(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{})
	vars := map[string]string{"LB_URL": lb.URL}
	r := runClient(t, vars, "", "bench", "--method", "call_faas", "-n", "10")
	if r.code != 0 || !strings.Contains(r.stdout, "method      call_faas (routes unknown)") {
		t.Errorf("exit %d stdout %s stderr %s", r.code, r.stdout, r.stderr)
	}
	r = runClient(t, vars, "", "bench", "-n", "10")
	if r.code != 0 || strings.Contains(r.stdout, "method ") || !strings.Contains(r.stdout, "local") {
		t.Errorf("invoke on an lb that has it: exit %d stdout %s", r.code, r.stdout)
	}
	for _, args := range [][]string{
		{"bench", "--method", "poke", "-n", "1"},
		{"bench", "--method", "call_faas", "--compare", "-n", "1"},
		{"bench", "--method", "call_faas", "--route", "cloud", "-n", "1"},
	} {
		r := runClient(t, vars, "", args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d stderr %q, want 2", args, r.code, r.stderr)
		}
	}
}
