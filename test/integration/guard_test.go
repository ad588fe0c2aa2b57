package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// metric sums the samples of the lb metric name whose labels contain every
// one of labels (e.g. `reason="worker_failed"`).
func (s *stack) metric(name string, labels ...string) float64 {
	s.t.Helper()
	resp, err := http.Get(s.lbURL + "metrics")
	if err != nil {
		s.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			s.t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// cloudInvocations is how many times localcloud ran a function.
func (s *stack) cloudInvocations() int64 {
	s.t.Helper()
	resp, err := http.Get(s.cloudURL + "/_localcloud/stats")
	if err != nil {
		s.t.Fatalf("localcloud stats: %v", err)
	}
	defer resp.Body.Close()
	var st struct {
		Invocations int64 `json:"invocations"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("localcloud stats: %v", err)
	}
	return st.Invocations
}

// publishFn writes fn as the stack's function.
func (s *stack) publishFn(fn spillway.Function) spillway.Function {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fn.Name = s.name
	out, err := s.store.Publish(ctx, fn)
	if err != nil {
		s.t.Fatalf("publish: %v", err)
	}
	return out
}

func faultCode(err error) int {
	var f *xmlrpc.Fault
	if errors.As(err, &f) {
		return f.Code
	}
	return 0
}

// cloudProxy stands between lb and localcloud: it passes everything on,
// records the call id of each execute-api request, and can fail deploys
// (UpdateFunctionCode) or turn execute-api answers into 500 after the
// function ran.
type cloudProxy struct {
	srv         *httptest.Server
	failDeploys atomic.Bool
	fail500     atomic.Bool
	mu          sync.Mutex
	callIDs     []string
}

func newCloudProxy(t *testing.T, target string) *cloudProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &cloudProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/_aws/execute-api/") && p.fail500.Load() {
			// The function ran; the answer that comes back is a 500.
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			resp.StatusCode = http.StatusInternalServerError
			resp.Status = "500 Internal Server Error"
			body := `{"message": "Internal server error"}`
			resp.Body = io.NopCloser(strings.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		}
		return nil
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/_aws/execute-api/") {
			p.mu.Lock()
			p.callIDs = append(p.callIDs, r.Header.Get(cloud.CallIDHeader))
			p.mu.Unlock()
		}
		if p.failDeploys.Load() && r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/code") {
			http.Error(w, `{"message": "deploys are failing"}`, http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *cloudProxy) ids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.callIDs...)
}

func TestCloudBudgetBindsForcedCalls(t *testing.T) {
	// 20 rapid forced-cloud calls under CLOUD_MAX_RPS=2: at most the budget
	// (2 at once, then 2 a second) reaches localcloud, the rest get -32003.
	// With the budget unset (the protection off) all 20 reach it.
	for _, budget := range []string{"2", ""} {
		t.Run("CLOUD_MAX_RPS="+budget, func(t *testing.T) {
			env := map[string]string{"NUMBER_OF_SERVERS": "1"}
			if budget != "" {
				env["CLOUD_MAX_RPS"] = budget
			}
			s := newStack(t, stackOptions{cloud: true, env: env})
			s.publish(sleeper, spillway.StyleHandler)
			s.startLB()
			s.waitCloudReady()
			before := s.cloudInvocations()

			var ok, refused atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 5 {
						_, err := s.invoke("x", map[string]any{"route": "cloud"})
						switch {
						case err == nil:
							ok.Add(1)
						case faultCode(err) == spillway.FaultBudgetExhausted:
							refused.Add(1)
						default:
							t.Errorf("forced-cloud call: %v", err)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			reached := s.cloudInvocations() - before
			t.Logf("%d ok, %d refused, %d reached localcloud in %v", ok.Load(), refused.Load(), reached, elapsed.Round(time.Millisecond))
			if reached != ok.Load() {
				t.Errorf("%d calls reached localcloud, %d answered ok", reached, ok.Load())
			}
			if budget == "" {
				if reached != 20 {
					t.Errorf("without a budget %d of 20 calls reached the cloud, want all", reached)
				}
				return
			}
			if allowed := 2 + 2*elapsed.Seconds(); float64(reached) > allowed {
				t.Errorf("%d calls reached the cloud in %v; CLOUD_MAX_RPS=2 allows %.1f", reached, elapsed, allowed)
			}
			if ok.Load()+refused.Load() != 20 || refused.Load() == 0 {
				t.Errorf("%d ok + %d refused, want 20 with some refused", ok.Load(), refused.Load())
			}
			if n := s.metric("spillway_cloud_budget_refused_total", `reason="forced"`); n != float64(refused.Load()) {
				t.Errorf("spillway_cloud_budget_refused_total{reason=forced} = %v, want %d", n, refused.Load())
			}
		})
	}
}

const bigResult = `
def handler(event, context):
    return "x" * int(event["parameter"])
`

func TestOversizeResultIsAFaultAndEjectsNoWorker(t *testing.T) {
	// An 8 MiB result under the default MAX_RESULT_BYTES (6 MiB) is -32002,
	// the worker stays (no replacement, no failure) and serves the next
	// call. With MAX_RESULT_BYTES=64m (the protection off for this size)
	// the same result comes back whole.
	for _, limit := range []string{"", "64m"} {
		t.Run("MAX_RESULT_BYTES="+limit, func(t *testing.T) {
			env := map[string]string{"NUMBER_OF_SERVERS": "1"}
			if limit != "" {
				env["MAX_RESULT_BYTES"] = limit
			}
			s := newStack(t, stackOptions{env: env})
			s.publish(bigResult, spillway.StyleHandler)
			s.startLB()
			worker := str(s.members()[0]["name"])

			r, err := s.invoke(int64(8<<20), nil)
			if limit != "" {
				if err != nil || len(str(r["result"])) != 8<<20 {
					t.Fatalf("8 MiB result under a 64 MiB cap: %d bytes, %v", len(str(r["result"])), err)
				}
				return
			}
			var f *xmlrpc.Fault
			if !errors.As(err, &f) || f.Code != spillway.FaultPayloadTooLarge || !strings.Contains(f.String, "MAX_RESULT_BYTES") {
				t.Fatalf("8 MiB result: %v, want fault -32002 naming MAX_RESULT_BYTES", err)
			}
			r, err = s.invoke(int64(10), nil)
			if err != nil || str(r["worker"]) != worker {
				t.Fatalf("next call: %v %v, want it on the same worker %s", r, err, worker)
			}
			if n := s.metric("spillway_worker_replacements_total"); n != 0 {
				t.Errorf("spillway_worker_replacements_total = %v, want 0", n)
			}
			if n := s.metric("spillway_worker_failures_total"); n != 0 {
				t.Errorf("spillway_worker_failures_total = %v, want 0", n)
			}
		})
	}
}

func TestCloudServerErrorRunsTheCallOnce(t *testing.T) {
	// localcloud runs the function and the answer comes back as a 500. The
	// call is not run again, in the cloud or locally, and no re-run is
	// counted; its call id reached the cloud and is the one in the fault.
	// Published --idempotent (the protection off), the same call is run
	// again and each re-run is counted.
	for _, idempotent := range []bool{false, true} {
		t.Run(fmt.Sprintf("idempotent=%v", idempotent), func(t *testing.T) {
			s := newStack(t, stackOptions{cloud: true, env: map[string]string{
				"NUMBER_OF_SERVERS": "1", "OFFLOAD_POLICY": "always",
			}})
			proxy := newCloudProxy(t, s.cloudURL)
			s.env["AWS_ENDPOINT_URL"] = proxy.srv.URL
			s.publishFn(spillway.Function{Code: sleeper, Style: spillway.StyleHandler, Idempotent: idempotent})
			s.startLB()
			s.waitCloudReady()
			if _, err := s.invoke("warm", nil); err != nil {
				t.Fatalf("call before the failure: %v", err)
			}
			proxy.fail500.Store(true)
			before := s.cloudInvocations()
			completed := func() int64 { c, _ := s.members()[0]["completed"].(int64); return c }
			localBefore := completed()

			r, err := s.invoke("x", nil)
			ran := s.cloudInvocations() - before
			reruns := s.metric("spillway_reruns_total")
			if idempotent {
				// Re-sent to the cloud (at most MaxAttempts), then run locally.
				if err != nil || r["route"] != "local" || ran < 2 {
					t.Errorf("idempotent: %v %v after %d cloud runs; want re-sends, then a local run", r, err, ran)
				}
				if n := s.metric("spillway_reruns_total", `reason="cloud_server_error"`); n < 1 {
					t.Errorf("spillway_reruns_total{reason=cloud_server_error} = %v, want the re-sends counted", n)
				}
				return
			}
			if faultCode(err) != spillway.FaultCloudUnavailable {
				t.Fatalf("call answered 500 after running: %v %v, want fault -32001", r, err)
			}
			if ran != 1 || completed() != localBefore || reruns != 0 {
				t.Errorf("the function ran %d times in the cloud and %d locally, reruns %v; want once, 0, 0",
					ran, completed()-localBefore, reruns)
			}
			var f *xmlrpc.Fault
			errors.As(err, &f)
			ids := proxy.ids()
			last := ids[len(ids)-1]
			if len(last) != 16 || !strings.Contains(f.String, "call id "+last) {
				t.Errorf("the cloud got call id %q; fault %q should carry it", last, f.String)
			}
			for _, leak := range []string{proxy.srv.URL, "127.0.0.1", "execute-api"} {
				if strings.Contains(f.String, leak) {
					t.Errorf("fault %q names %q", f.String, leak)
				}
			}
			if !strings.Contains(s.lb.out.String(), last) {
				t.Errorf("lb's log has no line with call id %s", last)
			}
		})
	}
}

func TestRollDoesNotWaitForAFailingCloud(t *testing.T) {
	// The cloud refuses every deploy after the first. A new version still
	// reaches every worker, its calls stay local, and none is sent to the
	// old Lambda. When deploys work again, the cloud catches up and takes
	// calls again.
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{"NUMBER_OF_SERVERS": "1"}})
	proxy := newCloudProxy(t, s.cloudURL)
	s.env["AWS_ENDPOINT_URL"] = proxy.srv.URL
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()
	if r, err := s.invoke("x", map[string]any{"route": "cloud"}); err != nil || versionOf(r) != 1 {
		t.Fatalf("forced-cloud call on v1: %v %v", r, err)
	}

	proxy.failDeploys.Store(true)
	s.publish(strings.Replace(sleeper, "VERSION = 1", "VERSION = 2", 1), spillway.StyleHandler)
	waitUntil(t, 90*time.Second, "every worker on version 2", func() bool {
		ms := s.members()
		for _, m := range ms {
			if m["version"] != int64(2) || m["state"] != "ready" {
				return false
			}
		}
		return len(ms) > 0
	})
	before := s.cloudInvocations()
	for range 3 {
		r, err := s.invoke("x", nil)
		if err != nil || r["route"] != "local" || versionOf(r) != 2 {
			t.Errorf("call during the failing deploy: %v %v, want version 2, local", r, err)
		}
	}
	if _, err := s.invoke("x", map[string]any{"route": "cloud"}); faultCode(err) != spillway.FaultCloudUnavailable {
		t.Errorf("forced-cloud call while the cloud runs v1: %v, want fault -32001", err)
	}
	if n := s.cloudInvocations() - before; n != 0 {
		t.Errorf("%d calls ran on the old Lambda", n)
	}

	proxy.failDeploys.Store(false)
	waitUntil(t, 90*time.Second, "the cloud catches up", func() bool {
		r, err := s.invoke("x", map[string]any{"route": "cloud"})
		return err == nil && versionOf(r) == 2
	})
}

func versionOf(r map[string]any) int64 {
	res, _ := r["result"].(map[string]any)
	v, _ := res["version"].(int64)
	return v
}

func TestHTTPFrontCutsSlowAndOversizeHeaders(t *testing.T) {
	// lb cuts a client that dribbles its headers (ReadHeaderTimeout 10s)
	// and answers 431 to 128 KiB of headers (MaxHeaderBytes 64 KiB). A
	// server without those settings (the protection off) keeps the first
	// connection open and takes the headers.
	s := newStack(t, stackOptions{env: map[string]string{"NUMBER_OF_SERVERS": "1"}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	lbAddr := strings.TrimSuffix(strings.TrimPrefix(s.lbURL, "http://"), "/")
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer plain.Close()
	plainAddr := strings.TrimPrefix(plain.URL, "http://")

	var lbOpen, plainOpen time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); lbOpen = testutil.HeaderDribble(t, lbAddr, 60*time.Second) }()
	go func() { defer wg.Done(); plainOpen = testutil.HeaderDribble(t, plainAddr, 15*time.Second) }()

	huge := strings.Repeat("a", 128<<10)
	for _, target := range []struct {
		url  string
		want int
	}{{s.lbURL + "healthz", http.StatusRequestHeaderFieldsTooLarge}, {plain.URL, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, target.url, nil)
		req.Header.Set("X-Huge", huge)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s with 128 KiB of headers: %v", target.url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != target.want {
			t.Errorf("GET %s with 128 KiB of headers: %d, want %d", target.url, resp.StatusCode, target.want)
		}
	}
	wg.Wait()
	t.Logf("dribbling headers: lb cut after %v; a plain server still open after %v", lbOpen.Round(time.Second), plainOpen.Round(time.Second))
	if lbOpen >= 60*time.Second {
		t.Errorf("lb kept a header-dribbling connection open for %v", lbOpen)
	}
	if plainOpen < 15*time.Second {
		t.Errorf("the unprotected server cut the dribble after %v: the probe proves nothing", plainOpen)
	}
}
