package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/apigateway"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/spillway-faas/spillway"
)

// publishAs writes a version of function name.
func (s *stack) publishAs(name, code string, style spillway.Style, set spillway.Settings) spillway.Function {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fn, err := s.store.Publish(ctx, spillway.Function{Name: name, Code: code, Style: style, Settings: set})
	if err != nil {
		s.t.Fatalf("publish %s: %v", name, err)
	}
	return fn
}

// call is call(name, param) over XML-RPC.
func (s *stack) call(name string, param any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out any
	err := s.client().Call(ctx, "call", []any{name, param}, &out)
	return out, err
}

// functionContainers are the containers of function name in this stack's
// pool.
func (s *stack) functionContainers(name string) []string {
	s.t.Helper()
	return dockerLines(s.t, "ps", "-a", "--filter", "label=spillway.pool="+s.pool,
		"--filter", "label=spillway.function="+name, "--format", "{{.Names}}")
}

// section is status().functions[name], nil when absent.
func (s *stack) section(name string) map[string]any {
	fns, _ := s.status()["functions"].(map[string]any)
	sec, _ := fns[name].(map[string]any)
	return sec
}

// cloudNames lists localcloud's Lambda functions and REST APIs.
func (s *stack) cloudNames() (lambdas, apis []string) {
	s.t.Helper()
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(s.cloudURL)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lf, err := lambda.NewFromConfig(cfg).ListFunctions(ctx, &lambda.ListFunctionsInput{})
	if err != nil {
		s.t.Fatalf("list Lambda functions: %v", err)
	}
	for _, f := range lf.Functions {
		lambdas = append(lambdas, aws.ToString(f.FunctionName))
	}
	ra, err := apigateway.NewFromConfig(cfg).GetRestApis(ctx, &apigateway.GetRestApisInput{})
	if err != nil {
		s.t.Fatalf("list REST APIs: %v", err)
	}
	for _, a := range ra.Items {
		apis = append(apis, aws.ToString(a.Name))
	}
	return lambdas, apis
}

// curl runs curl against lb and returns the body and the status code.
func curl(t *testing.T, args ...string) (body string, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", append([]string{"-sS", "-w", "\n%{http_code}"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	return s[:i], s[i+1:]
}

const echoScript = `import sys
print("third:" + sys.argv[1], end="")
`

// Two functions served at once, each on its own workers and its own Lambda;
// a third published while lb runs answers within seconds; HTTP (curl,
// Python's urllib) and XML-RPC agree; a deleted function leaves no
// container, Lambda or REST API behind.
func TestManyFunctionsBehindOneLB(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2"}})
	s.publish(readExample(t, "fib.py"), spillway.StyleScript)
	s.publishAs("hello", readExample(t, "hello_handler.py"), spillway.StyleHandler, spillway.Settings{})
	s.startLB()

	if got, err := s.call("faas", "20"); err != nil || got != "The Fibonacci number of 20 is 6765\n" {
		t.Errorf("call(faas, 20) = %q, %v", got, err)
	}
	got, err := s.call("hello", "you")
	if m, _ := got.(map[string]any); err != nil || m["greeting"] != "Hello, you!" {
		t.Errorf("call(hello, you) = %v, %v", got, err)
	}
	if got := python(t, `import sys, xmlrpc.client
print(xmlrpc.client.ServerProxy(sys.argv[1]).call_faas("10"), end="")`, s.lbURL); got != "The Fibonacci number of 10 is 55\n" {
		t.Errorf("reference client's call_faas = %q, want the default function's answer", got)
	}

	// Each function's own workers, named and labelled for it.
	for _, name := range []string{"faas", "hello"} {
		cs := s.functionContainers(name)
		if len(cs) == 0 {
			t.Errorf("no container labelled spillway.function=%s", name)
		}
		for _, c := range cs {
			if !strings.HasPrefix(c, s.pool+"-"+name+"-") {
				t.Errorf("container %s of %s: want the name %s-%s-…", c, name, s.pool, name)
			}
		}
	}

	// Each function's own Lambda: a call forced to the cloud runs there.
	waitUntil(t, 90*time.Second, "both functions deployed to the cloud", func() bool {
		for _, n := range []string{"faas", "hello"} {
			c, _ := s.section(n)["cloud"].(map[string]any)
			if ready, _ := c["ready"].(bool); !ready {
				return false
			}
		}
		return true
	})
	r, err := s.invoke("cloud", map[string]any{"function": "hello", "route": "cloud"})
	if res, _ := r["result"].(map[string]any); err != nil || r["route"] != "cloud" || r["function"] != "hello" || res["greeting"] != "Hello, cloud!" {
		t.Errorf("invoke(hello, route=cloud) = %v, %v", r, err)
	}
	lambdas, apis := s.cloudNames()
	for _, want := range []string{"spillway-" + s.pool, "spillway-hello"} { // faas keeps LAMBDA_NAME
		if !slices.Contains(lambdas, want) || !slices.Contains(apis, want) {
			t.Errorf("Lambdas %v, REST APIs %v: want %s in both", lambdas, apis, want)
		}
	}

	// A third function published while lb runs.
	published := time.Now()
	s.publishAs("third", echoScript, spillway.StyleScript, spillway.Settings{})
	waitUntil(t, 60*time.Second, "the third function answers", func() bool {
		got, err := s.call("third", "x")
		return err == nil && got == "third:x"
	})
	t.Logf("a function published while lb runs answered after %v", time.Since(published).Round(10*time.Millisecond))

	// functions() lists all three with their effective settings.
	var list []any
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := s.client().Call(ctx, "functions", nil, &list); err != nil {
		t.Fatalf("functions(): %v", err)
	}
	cancel()
	var names []string
	for _, e := range list {
		m, _ := e.(map[string]any)
		names = append(names, fmt.Sprint(m["name"]))
		if m["min"] != int64(1) || m["max"] != int64(2) || m["concurrency"] != int64(1) {
			t.Errorf("functions() entry %v: want min 1, max 2, concurrency 1 from .env", m)
		}
	}
	if strings.Join(names, ",") != "faas,hello,third" {
		t.Errorf("functions() names %v", names)
	}

	// The client against the real lb: --fn, functions, status's sections.
	client := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, binary(t, "client"), args...).CombinedOutput()
		if err != nil {
			t.Errorf("client %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := client("call", "--lb", s.lbURL, "--fn", "third", "y"); !strings.Contains(out, "third:y") {
		t.Errorf("client call --fn third y: %q", out)
	}
	if out := client("functions", "--lb", s.lbURL); !strings.Contains(out, "hello") || !strings.Contains(out, "third") || !strings.Contains(out, "handler") {
		t.Errorf("client functions:\n%s", out)
	}
	if out := client("status", "--lb", s.lbURL); !strings.Contains(out, "hello") || !strings.Contains(out, "third") {
		t.Errorf("client status: want a row per function:\n%s", out)
	}

	// HTTP and XML-RPC agree, through independent clients.
	body, code := curl(t, "-d", "20", s.lbURL+"function/faas")
	if code != "200" || body != "The Fibonacci number of 20 is 6765\n" {
		t.Errorf("curl -d 20 /function/faas: %s %q", code, body)
	}
	_, code = curl(t, "-d", "1", s.lbURL+"function/nope")
	if _, err := s.call("nope", "1"); code != "404" || faultCode(err) != spillway.FaultNoSuchFunction {
		t.Errorf("unknown function: HTTP %s, XML-RPC %v; want 404 and -32010", code, err)
	}
	out := python(t, `import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "function/hello", data=json.dumps("json").encode(), headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req) as r:
    print(r.status, r.headers["Content-Type"], r.headers["X-Spillway-Route"], json.dumps(json.load(r), sort_keys=True, separators=(",", ":")), end="")`, s.lbURL)
	viaRPC, err := s.call("hello", "json")
	wantJSON, _ := json.Marshal(viaRPC) // keys sorted, compact
	if err != nil || out != "200 application/json local "+string(wantJSON) {
		t.Errorf("urllib POST /function/hello: %q; XML-RPC call gave %s, %v", out, wantJSON, err)
	}

	// Deleted: calls drain, then no container, Lambda or REST API of it.
	add := exec.Command(binary(t, "addfaas"), "--redis", s.redis.Addr, "--delete", "hello")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("addfaas --delete hello: %v\n%s", err, out)
	}
	waitUntil(t, 90*time.Second, "hello's workers and cloud resources removed", func() bool {
		lambdas, apis := s.cloudNames()
		return len(s.functionContainers("hello")) == 0 && !slices.Contains(lambdas, "spillway-hello") && !slices.Contains(apis, "spillway-hello")
	})
	if _, err := s.call("hello", "x"); faultCode(err) != spillway.FaultNoSuchFunction {
		t.Errorf("call(hello) after --delete: %v, want fault -32010", err)
	}
	if got, err := s.call("faas", "5"); err != nil || got != "The Fibonacci number of 5 is 5\n" {
		t.Errorf("faas after hello's deletion: %q, %v", got, err)
	}
	if lambdas, _ := s.cloudNames(); !slices.Contains(lambdas, "spillway-"+s.pool) {
		t.Errorf("Lambdas %v: deleting hello removed faas's", lambdas)
	}
}

// Rolling one function to a new version costs no call of another (nor of
// itself).
func TestRollingOneFunctionFailsNoCallOfAnother(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2"}})
	s.publish(sleeper, spillway.StyleHandler)
	s.publishAs("hello", readExample(t, "hello_handler.py"), spillway.StyleHandler, spillway.Settings{})
	s.startLB()
	waitUntil(t, 60*time.Second, "hello served", func() bool { _, err := s.call("hello", "x"); return err == nil })

	stop := make(chan struct{})
	var mu sync.Mutex
	var errs []error
	calls := map[string]int{}
	var wg sync.WaitGroup
	for _, name := range []string{"faas", "hello", "hello"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				param := "sleep:0.05"
				if name == "hello" {
					param = "x"
				}
				_, err := s.call(name, param)
				mu.Lock()
				calls[name]++
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
				}
				mu.Unlock()
			}
		}()
	}
	before := s.functionContainers("hello")
	for v := 2; v <= 3; v++ {
		s.publish(strings.Replace(sleeper, "VERSION = 1", fmt.Sprintf("VERSION = %d", v), 1), spillway.StyleHandler)
		waitUntil(t, 90*time.Second, fmt.Sprintf("faas rolled to v%d", v), func() bool {
			r, err := s.invoke("x", nil)
			return err == nil && versionOf(r) == int64(v)
		})
	}
	close(stop)
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d failed calls while faas rolled twice (first: %v)", len(errs), errs[0])
	}
	if calls["hello"] < 10 || calls["faas"] < 10 {
		t.Errorf("calls %v: want a steady stream to both", calls)
	}
	// Settings change with a publish of the same code: lb applies them
	// at once (hello's min rises to 3, its pool follows, status says so).
	three := 3
	s.publishAs("hello", readExample(t, "hello_handler.py"), spillway.StyleHandler, spillway.Settings{Min: &three, Max: &three})
	waitUntil(t, 60*time.Second, "hello at its new min of 3", func() bool {
		sec := s.section("hello")
		return sec["pool_min"] == int64(3) && sec["pool_max"] == int64(3) && sec["pool_ready"] == int64(3)
	})

	// hello may grow under its own load, but rolling faas takes none of
	// its workers.
	after := s.functionContainers("hello")
	for _, c := range before {
		if !slices.Contains(after, c) {
			t.Errorf("hello's worker %s went while faas rolled: %v -> %v", c, before, after)
		}
	}
}

// Under MAX_TOTAL_WORKERS two busy functions share the workers: the busy
// one grows into free capacity, and when the other gets busy it takes a
// worker back from the one idle the longest; the sum never passes the cap.
// Without the cap (the protection off) the first function grows past it.
func TestFairShareUnderMaxTotalWorkers(t *testing.T) {
	for _, capped := range []bool{true, false} {
		t.Run(fmt.Sprintf("capped=%v", capped), func(t *testing.T) {
			total := "3"
			if !capped {
				total = "8"
			}
			s := newStack(t, stackOptions{env: map[string]string{
				"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "3", "MAX_TOTAL_WORKERS": total,
				// faas's autoscaler keeps its workers for minutes after its
				// load stops: only the share can take one from it.
				"ELASTICITY_SLEEP": "300ms", "SCALE_DOWN_DELAY": "120s",
			}})
			s.publish(sleeper, spillway.StyleHandler)
			s.publishAs("other", sleeper, spillway.StyleHandler, spillway.Settings{})
			s.startLB()
			waitUntil(t, 60*time.Second, "other served", func() bool { _, err := s.call("other", "x"); return err == nil })

			// The sum of the two pools, sampled all along.
			var peak, peakMu = 0, sync.Mutex{}
			sizes := func() (faas, other int) {
				fns, _ := s.status()["functions"].(map[string]any)
				size := func(n string) int {
					sec, _ := fns[n].(map[string]any)
					v, _ := sec["pool_size"].(int64)
					return int(v)
				}
				return size("faas"), size("other")
			}
			sampling := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					select {
					case <-sampling:
						return
					case <-time.After(100 * time.Millisecond):
					}
					a, b := sizes()
					peakMu.Lock()
					peak = max(peak, a+b)
					peakMu.Unlock()
				}
			}()
			// load keeps four callers busy on name until the returned stop.
			load := func(name string) (stop func()) {
				quit := make(chan struct{})
				var wg sync.WaitGroup
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-quit:
								return
							default:
							}
							_, _ = s.call(name, "sleep:0.3")
						}
					}()
				}
				return func() {
					close(quit)
					wg.Wait()
				}
			}

			// faas alone is busy: it grows into the free capacity.
			began := time.Now()
			stopFaas := load("faas")
			wantFaas := 2 // the cap: 3 = faas 2 + other's min 1
			if !capped {
				wantFaas = 3 // MAX_SERVERS
			}
			waitUntil(t, 50*time.Second, fmt.Sprintf("faas at %d workers", wantFaas), func() bool { a, _ := sizes(); return a >= wantFaas })
			t.Logf("faas at %d workers after %v", wantFaas, time.Since(began).Round(10*time.Millisecond))
			if capped {
				// Held there while it stays busy.
				time.Sleep(3 * time.Second)
				if a, _ := sizes(); a != 2 {
					t.Errorf("faas at %d workers under MAX_TOTAL_WORKERS=3, want 2", a)
				}
			}
			stopFaas()

			if capped {
				// Now other is busy and faas idle: other takes faas's worker
				// once faas's last call is IdleAfter (5s) old.
				began := time.Now()
				stopOther := load("other")
				waitUntil(t, 40*time.Second, "other at 2 workers, faas back to 1", func() bool {
					a, b := sizes()
					return a == 1 && b == 2
				})
				t.Logf("other took a worker of faas after %v", time.Since(began).Round(10*time.Millisecond))
				// status() shows the share: the cap, both functions' standings,
				// other busy and allotted 2, faas idle and allotted 1.
				share, _ := s.status()["share"].(map[string]any)
				standing := map[string]map[string]any{}
				fns, _ := share["functions"].([]any)
				for _, f := range fns {
					m, _ := f.(map[string]any)
					name, _ := m["name"].(string)
					standing[name] = m
				}
				if share["max_total_workers"] != int64(3) || standing["faas"]["allotted"] != int64(1) || standing["other"]["allotted"] != int64(2) {
					t.Errorf("status().share = %v, want max_total_workers 3, faas allotted 1, other 2", share)
				}
				if idle, _ := standing["faas"]["idle_s"].(float64); idle < 1 {
					t.Errorf("faas idle_s = %v, want at least the 1s (IdleAfter) after which it gave a worker up", standing["faas"]["idle_s"])
				}
				stopOther()
			}
			close(sampling)
			<-sampled
			peakMu.Lock()
			defer peakMu.Unlock()
			if capped && peak > 3 {
				t.Errorf("the two pools together reached %d workers, over MAX_TOTAL_WORKERS=3", peak)
			}
			if !capped && peak <= 3 {
				t.Errorf("without the cap the pools peaked at %d; the capped run's bound proves nothing", peak)
			}
		})
	}
}

// Workers of a function deleted while no lb ran are removed by the next
// lb; the functions it serves keep theirs (adopted, not restarted).
func TestOrphanWorkersRemovedAtStart(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{"NUMBER_OF_SERVERS": "1"}})
	s.publish(sleeper, spillway.StyleHandler)
	s.publishAs("gone", sleeper, spillway.StyleHandler, spillway.Settings{})
	s.startLB()
	waitUntil(t, 60*time.Second, "gone served", func() bool { _, err := s.call("gone", "x"); return err == nil })
	kept := s.functionContainers("faas")
	if _, graceful := s.lb.stop(syscall.SIGKILL, 10*time.Second); !graceful {
		t.Fatal("lb did not die on SIGKILL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.store.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if len(s.functionContainers("gone")) == 0 {
		t.Fatal("no worker of gone left after lb was killed: nothing to test")
	}
	s.startLB()
	waitUntil(t, 60*time.Second, "gone's workers removed", func() bool { return len(s.functionContainers("gone")) == 0 })
	slices.Sort(kept)
	if now := s.functionContainers("faas"); !slices.Equal(slices.Sorted(slices.Values(now)), kept) {
		t.Errorf("faas's workers %v -> %v: want them adopted", kept, now)
	}
}
