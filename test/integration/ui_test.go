package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/testutil/browsertest"
	"github.com/spillway-faas/spillway/internal/ui"
)

// uiData reads lb's /ui/data, with the token as a basic-auth password when
// one is given.
func (s *stack) uiData(token string) (ui.Data, int) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.lbURL+"ui/data", nil)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.SetBasicAuth("operator", token)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("GET /ui/data: %v", err)
	}
	defer resp.Body.Close()
	var d ui.Data
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			s.t.Fatalf("GET /ui/data: %v", err)
		}
	}
	return d, resp.StatusCode
}

// num reads an XML-RPC or JSON number.
func num(x any) int64 {
	switch x := x.(type) {
	case int:
		return int64(x)
	case int64:
		return x
	case float64:
		return int64(x)
	case json.Number:
		n, _ := x.Int64()
		return n
	}
	return -1
}

// diffDataStatus lists where the page's data and status() disagree.
func diffDataStatus(d ui.Data, st map[string]any) []string {
	var diffs []string
	check := func(what string, got, want any) {
		if fmt.Sprint(got) != fmt.Sprint(want) {
			diffs = append(diffs, fmt.Sprintf("%s: data %v, status %v", what, got, want))
		}
	}
	counters, _ := st["counters"].(map[string]any)
	check("calls", d.Calls.Total, num(counters["calls"]))
	check("local", d.Calls.Local, num(counters["local"]))
	check("cloud", d.Calls.Cloud, num(counters["cloud"]))
	check("errors", d.Calls.Errors, num(counters["errors"]))
	check("cold_starts", d.Calls.ColdStarts, num(counters["cold_starts"]))
	lbID, _ := st["lb_id"].(string) // absent (nil) when lb runs alone
	check("lb_id", d.LB.ID, lbID)
	check("controller", d.LB.Controller, st["controller"])
	check("in_flight", d.Calls.InFlight, num(st["in_flight"]))
	check("queued", d.Calls.Queued, num(st["queued"]))
	reasons, _ := counters["reasons"].(map[string]any)
	shown := map[string]bool{}
	for _, r := range d.Reasons {
		shown[r.Name] = true
		want := int64(0)
		if v, ok := reasons[r.Name]; ok {
			want = num(v)
		}
		check("reason "+r.Name, r.Count, want)
	}
	for name := range reasons {
		if !shown[name] {
			diffs = append(diffs, "reason "+name+" is in status but not on the page")
		}
	}
	var localSum, cloudSum int64
	for _, p := range d.Series {
		localSum += p.NLocal
		cloudSum += p.NCloud
	}
	check("local calls in the chart", localSum, num(counters["local"]))
	check("cloud calls in the chart", cloudSum, num(counters["cloud"]))

	details, _ := st["details"].(map[string]any)
	fn, _ := details["function"].(map[string]any)
	if len(d.Functions) != 1 {
		return append(diffs, fmt.Sprintf("%d functions on the page, want 1", len(d.Functions)))
	}
	f := d.Functions[0]
	check("function", f.Name, fn["name"])
	check("version", f.Version, num(fn["version"]))
	check("style", f.Style, fn["style"])
	check("sha256", f.SHA256, fn["sha256"])
	check("desired", f.Desired, num(st["pool_desired"]))
	check("min", f.Min, num(st["pool_min"]))
	check("max", f.Max, num(st["pool_max"]))
	members, _ := details["members"].([]any)
	check("workers", f.Workers.Total, len(members))
	ready := 0
	for i, m := range members {
		mm, _ := m.(map[string]any)
		if mm["state"] == "ready" {
			ready++
		}
		if i < len(f.Members) {
			check("worker name", f.Members[i].Name, mm["name"])
			check("worker state", f.Members[i].State, mm["state"])
			check("worker completed", f.Members[i].Completed, num(mm["completed"]))
			check("worker cold starts", f.Members[i].ColdStarts, num(mm["cold_starts"]))
		}
	}
	check("ready workers", f.Workers.Ready, ready)
	check("pool_ready", f.Workers.Ready, num(st["pool_ready"]))
	check("cloud mode", d.Cloud.Mode, st["cloud"])
	if c, ok := details["cloud"].(map[string]any); ok {
		check("cloud ready", d.Cloud.Ready, c["ready"])
		check("breaker", d.Cloud.Breaker, c["breaker"])
		check("cloud calls", d.Cloud.Calls, num(c["calls"]))
		check("cloud failed", d.Cloud.Failed, num(c["failed"]))
		check("cloud cold starts", d.Cloud.ColdStarts, num(c["cold_starts"]))
		b, _ := c["budget"].(map[string]any)
		if (b == nil) != (d.Cloud.Budget == nil) {
			diffs = append(diffs, fmt.Sprintf("budget: data %+v, status %v", d.Cloud.Budget, b))
		} else if b != nil {
			check("budget calls", d.Cloud.Budget.Calls, num(b["calls"]))
			check("budget max_rps", d.Cloud.Budget.MaxRPS, b["max_rps"])
		}
	}
	return diffs
}

// TestUIDataMatchesStatus checks that the page's data endpoint shows
// status()'s numbers, and that the overview chart accounts for every call.
func TestUIDataMatchesStatus(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{"CLOUD_MAX_RPS": "100"}})
	fn := s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()

	for i := range 4 {
		if _, err := s.invoke(fmt.Sprint(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := s.invoke(fmt.Sprint("c", i), map[string]any{"route": "cloud"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.invoke("boom", nil); err == nil {
		t.Fatal("boom: want a function error")
	}

	// The two reads are not one snapshot: poll until they agree.
	var d ui.Data
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var code int
		d, code = s.uiData("")
		diffs := []string{fmt.Sprintf("GET /ui/data: %d", code)}
		if code == 200 {
			diffs = diffDataStatus(d, s.status())
		}
		if len(diffs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("page data differs from status() for 60s:\n%s", strings.Join(diffs, "\n"))
		}
	}
	// What status() holds, checked against what the test did.
	if d.State != "ready" || d.Calls.Total != 8 || d.Calls.Cloud < 3 || d.Calls.Errors != 1 || d.Functions[0].Version != fn.Version {
		t.Errorf("data %+v: want ready, 8 calls, 3 or more in the cloud, 1 error, version %d", d.Calls, fn.Version)
	}
	if b := d.Cloud.Budget; b == nil || b.MaxRPS != 100 || b.Calls < 3 || b.SpentUSD <= 0 {
		t.Errorf("budget %+v: want the CLOUD_MAX_RPS cap and the forced cloud calls spent from it", b)
	}
	for _, r := range d.Reasons {
		if r.Name == "forced" && r.Count != 3 {
			t.Errorf("forced = %d, want 3", r.Count)
		}
	}
	lat := map[string]ui.RouteLatency{}
	for _, l := range d.Latency {
		lat[l.Route] = l
	}
	if l := lat["local"]; l.Calls < 4 || l.P50MS == nil || l.P99MS == nil || *l.P50MS > *l.P99MS {
		t.Errorf("local latency %+v: want the local calls with p50 <= p99", l)
	}
	if l := lat["cloud"]; l.Calls < 3 || l.P50MS == nil {
		t.Errorf("cloud latency %+v: want the cloud calls", l)
	}
	kinds := map[spillway.EventKind]int{}
	for _, e := range d.Events {
		kinds[e.Kind]++
	}
	if kinds[spillway.EventStart] < 3 { // starting, ready, cloud deployed
		t.Errorf("events %+v: want lb starting, ready and cloud deployed", d.Events)
	}
}

// statusJSON reads GET /status.
func (s *stack) statusJSON(token string) map[string]any {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.lbURL+"status", nil)
	if token != "" {
		req.SetBasicAuth("operator", token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		s.t.Fatalf("GET /status: %v", err)
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("GET /status: %v", err)
	}
	return st
}

// TestUIInBrowserDuringBench loads /ui in headless Chromium while client
// bench overflows the pool into localcloud: the chart fills with points, and
// the page shows the function and the local/cloud split that /status has.
func TestUIInBrowserDuringBench(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{
		"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2", "ELASTICITY_SLEEP": "1s",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()

	tab := browsertest.New(t, 1366, 900)
	if st := tab.Open(s.lbURL + "ui"); st != 200 {
		t.Fatalf("GET /ui: %d", st)
	}
	tab.WaitTrue("page ready", `document.body.dataset.state === "ready"`)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bench := exec.CommandContext(ctx, binary(t, "client"), "bench", "--lb", s.lbURL,
		"-c", "6", "-d", "12s", "--param", "sleep:0.2", "--json")
	out := &testutil.SyncBuffer{}
	bench.Stdout, bench.Stderr = out, out
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()

	// During the burst: points on the chart, calls on both routes.
	tab.WaitTrue("chart with points on both routes", `(() => {
		const c = document.getElementById("rate-chart");
		return +c.dataset.points >= 3 && c.querySelectorAll("polyline").length === 2 &&
			+document.getElementById("split-local").dataset.count > 0 &&
			+document.getElementById("split-cloud").dataset.count > 0;
	})()`)
	// Let the chart show a few seconds of the burst, then keep its picture.
	tab.WaitTrue("five seconds of burst", `+document.getElementById("rate-chart").dataset.busy >= 5`)
	shot := filepath.Join(testutil.RepoRoot(t), ".cache", "ui.png")
	tab.Screenshot(shot)
	t.Logf("screenshot: %s", shot)

	select {
	case err := <-benchDone:
		if err != nil {
			t.Fatalf("client bench: %v\n%s", err, out.String())
		}
	case <-ctx.Done():
		t.Fatalf("client bench did not finish\n%s", out.String())
	}

	// After the burst the numbers settle: the page shows /status's split.
	st := s.statusJSON("")
	counters, _ := st["counters"].(map[string]any)
	local, cloud := num(counters["local"]), num(counters["cloud"])
	if local == 0 || cloud == 0 {
		t.Fatalf("status local %d, cloud %d: the bench should have overflowed into the cloud", local, cloud)
	}
	reasons, _ := counters["reasons"].(map[string]any)
	tab.WaitTrue(fmt.Sprintf("split %d local / %d cloud and the function name", local, cloud), fmt.Sprintf(`(() => {
		const fn = document.querySelector("#function-list .fn-name");
		return +document.getElementById("split-local").dataset.count === %d &&
			+document.getElementById("split-cloud").dataset.count === %d &&
			document.getElementById("split-local").textContent.includes("(%d%%)") &&
			fn && fn.textContent === %q &&
			document.querySelector('#reasons-chart [data-reason="overflow"]').textContent === "%d";
	})()`, local, cloud, (100*local+(local+cloud)/2)/(local+cloud), s.name, num(reasons["overflow"])))
	// A second look: the totals did not move since (the bench is over).
	st2 := s.statusJSON("")
	if c2, _ := st2["counters"].(map[string]any); num(c2["local"]) != local || num(c2["cloud"]) != cloud {
		t.Errorf("status moved after the bench: %v then %v", counters, c2)
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10_000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
}

// TestUIAuth shows that with LB_AUTH_TOKEN set the page answers 401 (with a
// Basic challenge a browser can answer) to a browser without credentials and
// the page with them; and, the protection off, that the same browser without
// credentials gets the page, which says lb is starting until the function is
// published and then that the cloud is off.
func TestUIAuth(t *testing.T) {
	t.Run("token set", func(t *testing.T) {
		const token = "ui-test-token-7d1f"
		s := newStack(t, stackOptions{env: map[string]string{"NUMBER_OF_SERVERS": "1", "LB_AUTH_TOKEN": token}})
		s.publish(sleeper, spillway.StyleHandler)
		s.startLB()

		tab := browsertest.New(t, 1366, 900)
		// Headless Chromium has no one to ask for the password the 401's
		// Basic challenge wants, so it cancels the load.
		if st, err := tab.TryOpen(s.lbURL + "ui"); st != 401 && (err == nil || !strings.Contains(err.Error(), "ERR_INVALID_AUTH_CREDENTIALS")) {
			t.Fatalf("browser without credentials: status %d, error %v; want 401 or the browser's auth failure", st, err)
		}
		if has := browsertest.Eval[bool](tab, `!!document.getElementById("rate-chart")`); has {
			t.Fatalf("the page rendered without credentials")
		}
		resp, err := http.Get(s.lbURL + "ui")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("GET /ui: %d %q, want 401 with a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if _, code := s.uiData(""); code != 401 {
			t.Errorf("GET /ui/data without credentials: %d, want 401", code)
		}
		if _, code := s.uiData("wrong"); code != 401 {
			t.Errorf("GET /ui/data with a wrong token: %d, want 401", code)
		}

		tab.BasicAuth("operator", token)
		if st := tab.Open(s.lbURL + "ui"); st != 200 {
			t.Fatalf("browser with the token: %d, want 200", st)
		}
		tab.WaitTrue("the page with its data", fmt.Sprintf(`(() => {
			const fn = document.querySelector("#function-list .fn-name");
			return document.body.dataset.state === "ready" && fn && fn.textContent === %q;
		})()`, s.name))
	})

	t.Run("token unset (protection off)", func(t *testing.T) {
		s := newStack(t, stackOptions{env: map[string]string{"NUMBER_OF_SERVERS": "1"}})
		s.launchLB() // before anything is published: lb is starting

		tab := browsertest.New(t, 390, 844)
		deadline := time.Now().Add(browsertest.PageTimeout)
		for {
			// lb's port opens a moment after the process starts.
			resp, err := http.Get(s.lbURL + "healthz")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lb's port did not open: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if st := tab.Open(s.lbURL + "ui"); st != 200 {
			t.Fatalf("browser without credentials, token unset: %d, want 200", st)
		}
		tab.WaitTrue("starting notice", fmt.Sprintf(`document.body.dataset.state === "starting" &&
			document.getElementById("notices").innerText.includes("waiting for function %s")`, s.name))

		s.publish(sleeper, spillway.StyleHandler)
		s.waitLBReady()
		tab.WaitTrue("ready, with the function and the cloud-off notice", fmt.Sprintf(`(() => {
			const fn = document.querySelector("#function-list .fn-name");
			return document.body.dataset.state === "ready" && fn && fn.textContent === %q &&
				document.getElementById("notices").innerText.includes("Cloud is off (CLOUD=off)") &&
				document.getElementById("event-list").innerText.includes("lb ready");
		})()`, s.name))
		if _, code := s.uiData(""); code != 200 {
			t.Errorf("GET /ui/data without credentials, token unset: %d, want 200", code)
		}
	})
}

// TestUIEvents checks that a real lb's page lists what happened to its pool,
// with the cause: the autoscaler growing and shrinking it, a roll to a new
// version, and a killed worker replaced.
func TestUIEvents(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{
		"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2", "SCALE_DOWN_DELAY": "2s", "LOCAL_TIMEOUT": "30s",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()

	// waitEvent waits for an event of kind whose cause contains every part.
	waitEvent := func(kind spillway.EventKind, parts ...string) ui.Event {
		t.Helper()
		var found ui.Event
		waitUntil(t, 90*time.Second, fmt.Sprintf("a %q event with %q", kind, parts), func() bool {
			d, code := s.uiData("")
			if code != 200 {
				return false
			}
			for _, e := range d.Events {
				if e.Kind != kind {
					continue
				}
				all := true
				for _, p := range parts {
					all = all && strings.Contains(e.Cause, p)
				}
				if all {
					found = e
					return true
				}
			}
			return false
		})
		t.Logf("event: %s %s: %s", found.Time.Format(time.TimeOnly), found.Kind, found.Cause)
		return found
	}

	// Two long calls on one worker: one runs, one waits, the pool grows.
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := s.invoke("sleep:5", nil)
			errs <- err
		}()
	}
	waitEvent(spillway.EventScaleUp, "1 → 2 workers")
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("long call: %v", err)
		}
	}
	waitEvent(spillway.EventScaleDown, "2 → 1 workers")

	// A new version rolls the pool.
	fn := s.publish(strings.Replace(sleeper, "VERSION = 1", "VERSION = 2", 1), spillway.StyleHandler)
	waitEvent(spillway.EventRoll, fmt.Sprintf("to version %d", fn.Version))
	waitEvent(spillway.EventRoll, fmt.Sprintf("every worker runs version %d", fn.Version))

	// A killed worker is replaced, and the event names it.
	var victim string
	waitUntil(t, 60*time.Second, "a ready worker of the new version", func() bool {
		for _, m := range s.members() {
			if m["state"] == "ready" && num(m["version"]) == fn.Version {
				victim, _ = m["name"].(string)
				return victim != ""
			}
		}
		return false
	})
	if out, err := exec.Command("docker", "kill", victim).CombinedOutput(); err != nil {
		t.Fatalf("docker kill %s: %v %s", victim, err, out)
	}
	waitEvent(spillway.EventWorkerReplaced, victim)
}

// TestUIBreakerEvent stops the cloud under a real lb: forced cloud calls
// fail, the circuit breaker leaves closed, and the page lists the change and
// shows the breaker's state as status() does.
func TestUIBreakerEvent(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{"NUMBER_OF_SERVERS": "1"}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()
	if _, err := s.invoke("up", map[string]any{"route": "cloud"}); err != nil {
		t.Fatalf("cloud call while localcloud runs: %v", err)
	}
	if err, ok := s.cloud.stop(syscall.SIGTERM, 30*time.Second); !ok {
		t.Fatalf("localcloud did not stop: %v", err)
	}
	var d ui.Data
	waitUntil(t, 120*time.Second, "a breaker change away from closed", func() bool {
		// Each failed forced call counts toward opening the breaker.
		if _, err := s.invoke("down", map[string]any{"route": "cloud"}); err == nil {
			t.Fatal("a cloud call succeeded with localcloud stopped")
		}
		var code int
		if d, code = s.uiData(""); code != 200 {
			return false
		}
		for _, e := range d.Events {
			if e.Kind == spillway.EventBreakerChange && strings.HasPrefix(e.Cause, "closed → ") {
				t.Logf("event: %s", e.Cause)
				return true
			}
		}
		return false
	})
	if d.Cloud.Breaker == "closed" || d.Cloud.Failed == 0 {
		t.Errorf("cloud on the page: %+v, want the breaker not closed and failed calls", d.Cloud)
	}
}

// TestUIControllerChange runs two lb replicas of one pool: when the
// controller stops (SIGTERM hands the lease over), the other replica's page
// lists that it took the controller lease and shows itself as controller.
func TestUIControllerChange(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{"NUMBER_OF_SERVERS": "1", "ELASTICITY_SLEEP": "500ms"}})
	s.publish(sleeper, spillway.StyleHandler)
	ctrl, fol := roles(t, s.startReplica("lb-a"), s.startReplica("lb-b"))
	if err, ok := ctrl.p.stop(syscall.SIGTERM, 60*time.Second); !ok {
		t.Fatalf("controller %s did not stop: %v", ctrl.id, err)
	}
	want := fmt.Sprintf("this lb (%s) took the controller lease", fol.id)
	var d ui.Data
	waitUntil(t, 90*time.Second, "the follower's page lists the controller change", func() bool {
		resp, err := http.Get(fol.url + "ui/data")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		d = ui.Data{}
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&d) != nil {
			return false
		}
		for _, e := range d.Events {
			if e.Kind == spillway.EventControllerChange && strings.Contains(e.Cause, want) {
				t.Logf("event: %s", e.Cause)
				return d.LB.Controller && d.LB.ID == fol.id && d.LB.ControllerID == fol.id
			}
		}
		return false
	})
}
