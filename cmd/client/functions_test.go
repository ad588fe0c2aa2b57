package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/loadgen/fakelb"
)

// twoFunctions are what the fake lb of many functions serves; faas is its
// default (that of call_faas).
var twoFunctions = []spillway.FunctionInfo{
	{Name: "hello", Version: 1, Style: "handler", Max: 2, Concurrency: 4, TimeoutSeconds: 2.5, Workers: 1, Ready: 0},
	{Name: "faas", Version: 3, Style: "script", Min: 1, Max: 4, Concurrency: 1, TimeoutSeconds: 30, Workers: 2, Ready: 2},
}

func manyFunctions(t *testing.T) *fakelb.LB {
	t.Helper()
	fns := append([]spillway.FunctionInfo{twoFunctions[1]}, twoFunctions[0])
	return fakelb.Start(t, fakelb.Options{Functions: fns})
}

// check asserts the exit code and what stdout and stderr contain.
func check(t *testing.T, r result, code int, out []string, errs []string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", r.code, code, r.stdout, r.stderr)
	}
	for _, w := range out {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
		}
	}
	for _, w := range errs {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}

// TestCallFunction: --fn calls the function by name on an lb that serves
// many; without --fn the client calls call_faas as it always has; an lb of
// one function is called through call_faas when --fn names its function
// (FAAS_FUNCTION_NAME) and refused clearly otherwise.
func TestCallFunction(t *testing.T) {
	many := manyFunctions(t)
	one := fakelb.Start(t, fakelb.Options{})
	const oneOnly = "serves one function only (it has no functions method"
	tests := []struct {
		name  string
		lb    *fakelb.LB
		env   map[string]string
		args  []string
		code  int
		out   []string
		err   []string
		noOut string
	}{
		{"by name", many, nil, []string{"call", "--fn", "hello", "5"}, 0, []string{"hello(5)\n"}, nil, "result"},
		{"no --fn: call_faas", many, nil, []string{"call", "5"}, 0, []string{"result(5)\n"}, nil, ""},
		{"verbose by name", many, nil, []string{"call", "-v", "--fn", "hello", "5"}, 0,
			[]string{"hello(5)\n", "function    hello\n", "route       ", "cold start  "}, nil, ""},
		{"verbose default", many, nil, []string{"call", "-v", "5"}, 0, []string{"result(5)\n", "function    faas\n"}, nil, ""},
		{"unknown function", many, nil, []string{"call", "--fn", "nope", "5"}, 1, nil,
			[]string{"client call: fault -32010: no such function: nope (client functions lists the functions the lb serves)\n"}, ""},
		{"unknown function verbose", many, nil, []string{"call", "-v", "--fn", "nope", "5"}, 1, nil,
			[]string{"fault -32010: no such function: nope"}, ""},
		{"one-function lb, its function", one, nil, []string{"call", "--fn", "faas", "5"}, 0, []string{"result(5)\n"}, nil, ""},
		{"one-function lb, verbose", one, nil, []string{"call", "-v", "--fn", "faas", "5"}, 0, []string{"result(5)\n", "route       "}, nil, "function"},
		{"one-function lb, FAAS_FUNCTION_NAME", one, map[string]string{"FAAS_FUNCTION_NAME": "hello"},
			[]string{"call", "--fn", "hello", "5"}, 0, []string{"result(5)\n"}, nil, ""},
		{"one-function lb, another function", one, nil, []string{"call", "--fn", "hello", "5"}, 1, nil,
			[]string{"client call: --fn hello: " + one.URL + " " + oneOnly, `taken to be "faas" (FAAS_FUNCTION_NAME): run without --fn`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"LB_URL": tt.lb.URL}
			for k, v := range tt.env {
				vars[k] = v
			}
			r := runClient(t, vars, "", tt.args...)
			check(t, r, tt.code, tt.out, tt.err)
			if tt.noOut != "" && strings.Contains(r.stdout, tt.noOut) {
				t.Errorf("stdout has %q:\n%s", tt.noOut, r.stdout)
			}
		})
	}
	if n := one.Calls(); n != 3 {
		t.Errorf("the one-function lb served %d calls, want 3 (the refused call sent none)", n)
	}
}

// TestCallFunctionReferenceServer: the reference gateway (only call_faas)
// is an lb of one function too.
func TestCallFunctionReferenceServer(t *testing.T) {
	url := startRefServer(t)
	r := runClient(t, map[string]string{"LB_URL": url}, "", "call", "--fn", "faas", "5")
	check(t, r, 0, []string{"result(5)"}, nil)
	r = runClient(t, map[string]string{"LB_URL": url}, "", "call", "--fn", "hello", "5")
	check(t, r, 1, nil, []string{"serves one function only"})
}

func TestReplFunction(t *testing.T) {
	many := manyFunctions(t)
	one := fakelb.Start(t, fakelb.Options{})
	tests := []struct {
		name string
		lb   *fakelb.LB
		args []string
		code int
		want string
		err  string
	}{
		{"by name", many, []string{"repl", "--fn", "hello"}, 0, "hello(1)\nhello(2)\n", ""},
		{"unknown function, each line", many, []string{"repl", "--fn", "nope"}, 0,
			strings.Repeat("error: fault -32010: no such function: nope (client functions lists the functions the lb serves)\n", 2), ""},
		{"one-function lb, its function", one, []string{"repl", "--fn", "faas"}, 0, "result(1)\nresult(2)\n", ""},
		{"one-function lb, another: refused before reading", one, []string{"repl", "--fn", "hello"}, 1, "", "--fn hello: " + one.URL + " serves one function only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runClient(t, map[string]string{"LB_URL": tt.lb.URL}, "1\n2\n", tt.args...)
			if r.code != tt.code || r.stdout != tt.want || !strings.Contains(r.stderr, tt.err) {
				t.Errorf("exit %d, want %d\n-want %q\n+got  %q\nstderr %q, want %q", r.code, tt.code, tt.want, r.stdout, r.stderr, tt.err)
			}
		})
	}
}

// TestBenchFunction: bench --fn loads the function named, through invoke's
// function option or (--method call_faas) call, and its pool size is the
// function's own.
func TestBenchFunction(t *testing.T) {
	lb := manyFunctions(t)
	vars := map[string]string{"LB_URL": lb.URL}
	benchJSON := func(t *testing.T, args ...string) loadgen.Report {
		t.Helper()
		r := runClient(t, vars, "", append([]string{"bench", "--json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		var rep loadgen.Report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("JSON: %v\n%s", err, r.stdout)
		}
		return rep
	}

	t.Run("invoke", func(t *testing.T) {
		// Long enough, and polled slowly enough, for the pool size to be
		// read on a busy machine.
		before := lb.CallsOf("hello")
		rep := benchJSON(t, "--fn", "hello", "--rate", "40", "-d", "1s", "--poll", "100ms")
		if got := lb.CallsOf("hello") - before; got == 0 || got != rep.OK || rep.Errors != 0 {
			t.Errorf("hello served %d calls, %d ok, %d errors; want all ok", got, rep.OK, rep.Errors)
		}
		if rep.Function != "hello" || rep.Method != "invoke" || rep.Routes["local"].Count == 0 || rep.Routes["cloud"].Count == 0 {
			t.Errorf("report function %q method %q routes %v", rep.Function, rep.Method, rep.Routes)
		}
		// hello's section has one worker throughout; the lb's own pool_size
		// moves between 2 and 4.
		if p := rep.Pool; p == nil || p.Min != 1 || p.Max != 1 {
			t.Errorf("pool size %+v, want hello's: 1", p)
		}
	})
	t.Run("no --fn: the default function's pool", func(t *testing.T) {
		// faas's section has two workers throughout; the lb's own
		// pool_size (the sum over its functions) moves between 2 and 4.
		rep := benchJSON(t, "--rate", "40", "-d", "1s", "--poll", "100ms")
		if p := rep.Pool; p == nil || p.Min != 2 || p.Max != 2 {
			t.Errorf("pool size %+v, want faas's: 2", p)
		}
	})
	t.Run("call", func(t *testing.T) {
		before := lb.CallsOf("hello")
		r := runClient(t, vars, "", "bench", "--fn", "hello", "--method", "call_faas", "-c", "2", "-n", "10")
		check(t, r, 0, []string{"function    hello\n", "method      call (routes unknown)\n", "calls       10 sent, 10 ok"}, nil)
		if got := lb.CallsOf("hello") - before; got != 10 {
			t.Errorf("hello served %d calls, want 10", got)
		}
	})
	t.Run("compare", func(t *testing.T) {
		before := lb.CallsOf("hello")
		localBefore, cloudBefore := lb.Forced()
		r := runClient(t, vars, "", "bench", "--fn", "hello", "--compare", "-n", "6")
		check(t, r, 0, []string{"== local ==", "== hybrid ==", "function    hello\n"}, nil)
		local, cloud := lb.Forced()
		if got := lb.CallsOf("hello") - before; got != 18 || local-localBefore != 6 || cloud-cloudBefore != 6 {
			t.Errorf("hello served %d calls (want 18), forced local %d cloud %d (want 6 each)", got, local-localBefore, cloud-cloudBefore)
		}
	})
	t.Run("unknown function", func(t *testing.T) {
		r := runClient(t, vars, "", "bench", "--fn", "nope", "-n", "4", "-c", "1")
		check(t, r, 1, []string{"-32010 no such function: 4"}, []string{"every call failed (-32010 no such function ×4)"})
	})
	if n := lb.CallsOf("faas"); n != 0 {
		t.Errorf("the default function was called %d times", n)
	}
}

// TestBenchFunctionOneFunctionLB: an lb from before many functions is
// loaded through call_faas and invoke without options when --fn names its
// function, and refused before any call otherwise.
func TestBenchFunctionOneFunctionLB(t *testing.T) {
	lb := fakelb.Start(t, fakelb.Options{})
	vars := map[string]string{"LB_URL": lb.URL}
	r := runClient(t, vars, "", "bench", "--fn", "faas", "-n", "10")
	check(t, r, 0, []string{"function    faas\n", "calls       10 sent, 10 ok", "local"}, nil)
	r = runClient(t, vars, "", "bench", "--fn", "faas", "--method", "call_faas", "-n", "10")
	check(t, r, 0, []string{"method      call_faas (routes unknown)\n", "calls       10 sent, 10 ok"}, nil)
	before := lb.Calls()
	r = runClient(t, vars, "", "bench", "--fn", "hello", "-n", "10")
	check(t, r, 1, nil, []string{"client bench: --fn hello: " + lb.URL + " serves one function only"})
	if n := lb.Calls() - before; n != 0 {
		t.Errorf("the refused bench sent %d calls", n)
	}
}

func TestFunctions(t *testing.T) {
	many := manyFunctions(t)
	one := fakelb.Start(t, fakelb.Options{})

	r := runClient(t, map[string]string{"LB_URL": many.URL}, "", "functions")
	want := `function  version  style    min  max  concurrency  timeout  ready/workers
faas      3        script   1    4    1            30s      2/2
hello     1        handler  0    2    4            2.5s     0/1
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d\n-want\n%s\n+got\n%s\nstderr %s", r.code, want, r.stdout, r.stderr)
	}

	r = runClient(t, map[string]string{"LB_URL": many.URL}, "", "functions", "--json")
	var got []spillway.FunctionInfo
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
		t.Fatalf("exit %d JSON %v: %s", r.code, err, r.stdout)
	}
	if len(got) != 2 || got[0] != twoFunctions[1] || got[1] != twoFunctions[0] {
		t.Errorf("functions --json\n-want %+v\n+got  %+v", []spillway.FunctionInfo{twoFunctions[1], twoFunctions[0]}, got)
	}

	r = runClient(t, map[string]string{"LB_URL": one.URL}, "", "functions")
	check(t, r, 0, []string{"lb " + one.URL + " serves one function only: it has no functions method"}, nil)
	r = runClient(t, map[string]string{"LB_URL": one.URL}, "", "functions", "--json")
	check(t, r, 1, nil, []string{"has no functions method: it serves one function only"})
	if r.stdout != "" {
		t.Errorf("--json printed %q for an lb without functions", r.stdout)
	}
	r = runClient(t, map[string]string{"LB_URL": startRefServer(t)}, "", "functions")
	check(t, r, 0, []string{"serves one function only"}, nil)
}

// TestStatusFunctions: after the lb's summary, a row per function, by
// name; --json has the sections as the lb sent them. (TestStatus: an lb
// without sections prints as it always has.)
func TestStatusFunctions(t *testing.T) {
	lb := manyFunctions(t)
	vars := map[string]string{"LB_URL": lb.URL}
	if r := runClient(t, vars, "", "call", "--fn", "hello", "1"); r.code != 0 {
		t.Fatalf("call: %s", r.stderr)
	}
	r := runClient(t, vars, "", "status")
	want := "lb " + lb.URL + `
counters:
  calls:  1
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
pool_size:  3

functions:
  function  version  serving  ready/workers  desired  min-max  in flight  queued  calls  local  cloud  errors  cold starts  breaker
  faas      3        yes      2/2            2        1-4      0          0       0      0      0      0       0            closed
  hello     1        no       0/1            1        0-2      0          0       1      0      0      0       0            off
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d\n-want\n%s\n+got\n%s\nstderr %s", r.code, want, r.stdout, r.stderr)
	}
	r = runClient(t, vars, "", "status", "--json")
	var st spillway.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 {
		t.Fatalf("exit %d JSON %v: %s", r.code, err, r.stdout)
	}
	if h := st.Functions["hello"]; h.Name != "hello" || h.PoolSize != 1 || h.Counters.Calls != 1 || st.Functions["faas"].Cloud == nil {
		t.Errorf("status --json functions %+v", st.Functions)
	}
}
