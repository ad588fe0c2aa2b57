package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// sleeper is a handler-style function whose parameter says what to do:
// "sleep:S" sleeps S seconds, "boom" raises, anything else is echoed.
const sleeper = `
import time

def handler(event, context):
    p = str(event.get("parameter", ""))
    if p.startswith("sleep:"):
        time.sleep(float(p[6:]))
    if p == "boom":
        raise ValueError("boom")
    return {"echo": p, "version": VERSION}

VERSION = 1
`

func TestReferenceClientAndRoundRobin(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.publish(readExample(t, "fib.py"), spillway.StyleScript)
	s.startLB()

	// The reference system's client, unchanged: Python's xmlrpc.client.
	got := python(t, `import sys, xmlrpc.client
print(xmlrpc.client.ServerProxy(sys.argv[1]).call_faas("20"), end="")`, s.lbURL)
	if want := "The Fibonacci number of 20 is 6765\n"; got != want {
		t.Errorf("call_faas(\"20\") = %q, want %q", got, want)
	}
	got = python(t, `import sys, xmlrpc.client
print(xmlrpc.client.ServerProxy(sys.argv[1]).call_faas("x"), end="")`, s.lbURL)
	if !strings.HasPrefix(got, "Usage:") {
		t.Errorf("call_faas(\"x\") = %q, want the usage line", got)
	}

	// invoke reports route and worker; round-robin alternates the two workers.
	var workers []string
	for i := range 6 {
		r, err := s.invoke(fmt.Sprint(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r["route"] != "local" || str(r["reason"]) != "" {
			t.Errorf("invoke = %v, want route local, no reason", r)
		}
		workers = append(workers, r["worker"].(string))
	}
	for i := 1; i < len(workers); i++ {
		if workers[i] == workers[i-1] {
			t.Errorf("round-robin sent consecutive calls to the same worker: %v", workers)
			break
		}
	}
	if w := dedupe(workers); len(w) != 2 {
		t.Errorf("calls went to %d workers (%v), want 2", len(w), w)
	}
}

func TestOverflowAndTimeoutGoToCloud(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{
		"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2", "LOCAL_TIMEOUT": "2s",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()

	// More concurrent slow calls than MAX_SERVERS × WORKER_CONCURRENCY.
	const calls = 6
	var wg sync.WaitGroup
	results := make([]map[string]any, calls)
	errs := make([]error, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.invoke("sleep:1", nil)
		}()
	}
	wg.Wait()
	var local, overflow int
	for i := range calls {
		if errs[i] != nil {
			t.Fatalf("call %d failed: %v", i, errs[i])
		}
		switch {
		case results[i]["route"] == "local":
			local++
		case results[i]["route"] == "cloud" && results[i]["reason"] == "overflow":
			overflow++
		default:
			t.Errorf("call %d: %v", i, results[i])
		}
		if r, _ := results[i]["result"].(map[string]any); r["echo"] != "sleep:1" {
			t.Errorf("call %d result = %v", i, results[i]["result"])
		}
	}
	if local == 0 || overflow == 0 || local > 2 {
		t.Errorf("local %d, overflow %d; want 1-2 local and the rest overflowed", local, overflow)
	}

	// A call that outlives LOCAL_TIMEOUT is answered by the cloud.
	start := time.Now()
	r, err := s.invoke("sleep:3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r["route"] != "cloud" || r["reason"] != "timeout" {
		t.Errorf("slow call = %v, want route cloud, reason timeout", r)
	}
	if d := time.Since(start); d < 5*time.Second {
		t.Errorf("slow call took %v: it cannot have waited LOCAL_TIMEOUT and then run 3s", d)
	}

	// The metrics tell the same story.
	resp, err := http.Get(s.lbURL + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{
		`spillway_calls_total{function="faas",outcome="ok",reason="overflow",route="cloud"}`,
		`spillway_calls_total{function="faas",outcome="ok",reason="timeout",route="cloud"}`,
		`spillway_cloud_circuit_state{function="faas"} 0`, `spillway_cloud_ready{function="faas"} 1`,
		`spillway_worker_start_seconds_bucket{function="faas",le="30"}`, `spillway_worker_start_seconds_count{function="faas"}`,
	} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// A function that raises is an application fault, from either route.
	for _, route := range []string{"local", "cloud"} {
		_, err := s.invoke("boom", map[string]any{"route": route})
		var f *xmlrpc.Fault
		if !errors.As(err, &f) || f.Code != spillway.FaultApplication || !strings.Contains(f.String, "ValueError") {
			t.Errorf("%s: boom = %v, want fault %d with ValueError", route, err, spillway.FaultApplication)
		}
	}
}

// stream calls invoke from callers goroutines until stop is closed and
// returns how many succeeded and the errors.
func stream(s *stack, callers int, param string, stop <-chan struct{}, onResult func(map[string]any)) (ok int64, errs []error) {
	var mu sync.Mutex
	var n atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := s.invoke(param, nil)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				n.Add(1)
				if onResult != nil {
					onResult(r)
				}
			}
		}()
	}
	wg.Wait()
	return n.Load(), errs
}

func TestKilledWorkerCostsNoCall(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{"SCALE_DOWN_DELAY": "60s"}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	before := s.containers()

	stop := make(chan struct{})
	var ok int64
	var errs []error
	done := make(chan struct{})
	go func() {
		// Calls of two seconds: the victim is killed in the middle of one
		// (between two of them it is idle for about a millisecond).
		ok, errs = stream(s, 4, "sleep:2", stop, nil)
		close(done)
	}()
	victim := before[0]
	waitUntil(t, 30*time.Second, "a call running on "+victim, func() bool {
		for _, m := range s.members() {
			if m["name"] == victim && m["in_flight"] == int64(1) {
				return true
			}
		}
		return false
	})
	if out, err := exec.Command("docker", "kill", victim).CombinedOutput(); err != nil {
		t.Fatalf("docker kill %s: %v %s", victim, err, out)
	}
	killed := time.Now()
	// The pool is back to NUMBER_OF_SERVERS ready workers within a few seconds.
	waitUntil(t, 15*time.Second, "pool back to size", func() bool {
		ready := 0
		for _, m := range s.members() {
			if m["state"] == "ready" && m["name"] != victim {
				ready++
			}
		}
		return ready >= 2
	})
	t.Logf("pool back to size %v after the kill", time.Since(killed).Round(time.Millisecond))
	waitUntil(t, 90*time.Second, "8 calls answered", func() bool {
		counters, _ := s.status()["counters"].(map[string]any)
		n, _ := counters["calls"].(int64)
		return n >= 8
	})
	close(stop)
	<-done
	if len(errs) > 0 {
		t.Errorf("%d calls failed after a worker was killed (first: %v)", len(errs), errs[0])
	}
	if ok < 8 {
		t.Errorf("only %d calls succeeded", ok)
	}
	st := s.status()
	t.Logf("calls ok %d; counters %v", ok, st["counters"])
	// No call failed because the one cut off on the victim ran again.
	if n := s.metric("spillway_reruns_total", `reason="worker_failed"`); n < 1 {
		t.Errorf("spillway_reruns_total{reason=worker_failed} = %v after killing a worker mid-call, want a re-run", n)
	}
	counters, _ := st["counters"].(map[string]any)
	reasons, _ := counters["reasons"].(map[string]any)
	if n, _ := reasons["retry"].(int64); n < 1 {
		t.Errorf("counters.reasons.retry = %v, want the cut-off call retried", reasons["retry"])
	}
}

func TestRestartAdoptsAndLeavesNothing(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.publish(readExample(t, "fib.py"), spillway.StyleScript)
	s.startLB()
	first := s.containers()
	if len(first) != 2 {
		t.Fatalf("containers after start = %v, want 2", first)
	}
	// kill -9: lb gets no chance to clean up.
	if _, graceful := s.lb.stop(syscall.SIGKILL, 10*time.Second); !graceful {
		t.Fatal("lb did not die on SIGKILL")
	}
	s.startLB()
	second := s.containers()
	if !sameSet(first, second) {
		t.Errorf("after restart containers = %v, want the adopted %v (no duplicates, no leak)", second, first)
	}
	if r, err := s.invoke("10", nil); err != nil || !strings.Contains(fmt.Sprint(r["result"]), "55") {
		t.Errorf("call after restart = %v, %v", r, err)
	}
	// A function changed while lb was down: the next start removes the old workers.
	if _, graceful := s.lb.stop(syscall.SIGKILL, 10*time.Second); !graceful {
		t.Fatal("lb did not die on SIGKILL")
	}
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	third := s.containers()
	if len(third) != 2 || len(dedupe(append(third, first...))) != 4 {
		t.Errorf("after a restart on a new version containers = %v (old %v), want 2 new ones", third, first)
	}
	// SIGTERM: exit 0 and nothing left behind.
	err, graceful := s.lb.stop(syscall.SIGTERM, 30*time.Second)
	if !graceful || err != nil {
		t.Errorf("lb on SIGTERM: graceful=%v err=%v", graceful, err)
	}
	if left := s.containers(); len(left) != 0 {
		t.Errorf("containers left after SIGTERM: %v", left)
	}
}

func TestUpdateDuringStreamFailsNoCall(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true})
	v1 := s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()

	var sawV2 atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	var ok int64
	var errs []error
	go func() {
		ok, errs = stream(s, 3, "x", stop, func(r map[string]any) {
			if res, _ := r["result"].(map[string]any); res["version"] == int64(2) {
				sawV2.Store(true)
			}
		})
		close(done)
	}()
	time.Sleep(time.Second)
	v2 := s.publish(strings.Replace(sleeper, "VERSION = 1", "VERSION = 2", 1), spillway.StyleHandler)
	waitUntil(t, 60*time.Second, "pool rolled to v2", func() bool {
		ms := s.members()
		if len(ms) == 0 {
			return false
		}
		for _, m := range ms {
			if m["sha256"] != v2.SHA256 {
				return false
			}
		}
		return sawV2.Load()
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-done
	if len(errs) > 0 {
		t.Errorf("%d calls failed during the update (first: %v)", len(errs), errs[0])
	}
	t.Logf("%d calls during the roll from %s to %s", ok, v1.SHA256[:8], v2.SHA256[:8])
	// The cloud runs the new version too.
	r, err := s.invoke("x", map[string]any{"route": "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "Lambda on v2", func() bool {
		r, err = s.invoke("x", map[string]any{"route": "cloud"})
		res, _ := r["result"].(map[string]any)
		return err == nil && res["version"] == int64(2)
	})
}

func TestBadRequestsGetFaultsAndLbKeepsServing(t *testing.T) {
	const token = "s3cret-token"
	s := newStack(t, stackOptions{env: map[string]string{"LB_AUTH_TOKEN": token, "LB_MAX_REQUEST_BYTES": "65536"}})
	s.publish(readExample(t, "fib.py"), spillway.StyleScript)
	s.startLB()

	call := func(method string, args ...any) string {
		b, err := xmlrpc.AppendCall(nil, method, args)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name      string
		body      string
		auth      string
		wantFault int
	}{
		{"malformed XML", "<methodCall><methodName>call_faas</methodName><params>", "Bearer " + token, spillway.FaultParse},
		{"not XML-RPC", "<hello/>", "Bearer " + token, spillway.FaultInvalidRequest},
		{"no params", call("call_faas"), "Bearer " + token, spillway.FaultInvalidParams},
		{"too many params", call("call_faas", "1", "2"), "Bearer " + token, spillway.FaultInvalidParams},
		{"bad invoke options", call("invoke", "1", map[string]any{"route": "moon"}), "Bearer " + token, spillway.FaultInvalidParams},
		{"unknown method", call("no_such_method"), "Bearer " + token, spillway.FaultMethodNotFound},
		{"oversize body", call("call_faas", strings.Repeat("x", 100_000)), "Bearer " + token, spillway.FaultPayloadTooLarge},
		{"no token", call("call_faas", "1"), "", spillway.FaultUnauthorized},
		{"wrong token", call("call_faas", "1"), "Bearer nope", spillway.FaultUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.lbURL, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "text/xml")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("HTTP %d, want 200 (faults travel with 200)", resp.StatusCode)
			}
			_, err = xmlrpc.DecodeResponse(body)
			var f *xmlrpc.Fault
			if !errors.As(err, &f) || f.Code != tt.wantFault {
				t.Errorf("answer %q decodes to %v, want fault %d", body, err, tt.wantFault)
			}
		})
	}
	// Still serving, and Python's client passes the token as basic auth.
	url := strings.Replace(s.lbURL, "http://", "http://user:"+token+"@", 1)
	got := python(t, `import sys, xmlrpc.client
print(xmlrpc.client.ServerProxy(sys.argv[1]).call_faas("10"), end="")`, url)
	if !strings.Contains(got, "55") {
		t.Errorf("call with basic auth after bad requests = %q", got)
	}
	// Plain HTTP endpoints: /healthz is open, /status and /metrics need the token.
	for path, want := range map[string]int{"healthz": 200, "status": 401, "metrics": 401} {
		resp, err := http.Get(s.lbURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /%s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, s.lbURL+"metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"spillway_calls_total", "spillway_call_duration_seconds_bucket", "spillway_pool_ready_workers", "spillway_in_flight_calls",
		"spillway_worker_replacements_total", `spillway_function_version{function="faas"} 1`} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// str reads an XML-RPC string field; kolo's decoder gives nil for an empty string.
func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[string]bool{}
	for _, x := range a {
		set[x] = true
	}
	for _, x := range b {
		if !set[x] {
			return false
		}
	}
	return true
}
