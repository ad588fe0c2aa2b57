package ui

import (
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/testutil/browsertest"
)

// contrastJS lists every visible text whose contrast with its background is
// under WCAG AA (4.5:1, or 3:1 for large text).
const contrastJS = `(() => {
  const parse = c => { const m = c && c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bg = el => { for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      if (e instanceof SVGElement && e.tagName !== "svg") continue;
      const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0.5) return c; }
    return {r: 255, g: 255, b: 255, a: 1}; };
  const bad = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    if (!Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const cs = getComputedStyle(el);
    if (cs.display === "none" || cs.visibility === "hidden" || el.getClientRects().length === 0) continue;
    const fg = parse(el instanceof SVGElement ? cs.fill : cs.color); if (!fg) continue;
    const a = lum(fg), b = lum(bg(el)), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight, 10) >= 700;
    const need = (size >= 24 || (size >= 18.66 && bold)) ? 3 : 4.5;
    checked++;
    if (ratio < need) bad.push(el.tagName + " '" + el.textContent.trim().slice(0, 40) + "' " + ratio.toFixed(2) + ":1");
    if (size < 11) bad.push(el.tagName + " '" + el.textContent.trim().slice(0, 40) + "' is " + size + "px");
  }
  return checked < 20 ? ["only " + checked + " texts checked"] : bad;
})()`

// layoutJS lists what sticks out of the viewport sideways (the page must
// not scroll horizontally on a phone).
const layoutJS = `(() => {
  const bad = [];
  if (document.documentElement.scrollWidth > window.innerWidth) bad.push("page is " + document.documentElement.scrollWidth + "px wide in a " + window.innerWidth + "px window");
  for (const el of document.querySelectorAll(".card, svg")) {
    const r = el.getBoundingClientRect();
    if (r.right > window.innerWidth + 0.5) bad.push((el.id || el.className.baseVal || el.className) + " ends at " + r.right);
  }
  return bad;
})()`

// TestPageInBrowser loads the page in headless Chromium against a fake
// gateway and walks it through lb's states: starting, serving with the cloud
// on, serving with the cloud off and no ready worker; at a laptop's and a
// phone's width, it checks the layout and the contrast of every text.
func TestPageInBrowser(t *testing.T) {
	src := newFakeSource()
	u := New(Options{Function: "fib", Interval: 200 * time.Millisecond})
	defer u.Close()
	u.Events().Event(spillway.EventStart, "lb starting: waiting for function fib and 2 workers")
	srv := httptest.NewServer(u.Handler())
	defer srv.Close()

	for _, size := range []struct {
		name string
		w, h int
	}{{"laptop", 1366, 900}, {"phone", 390, 844}} {
		t.Run(size.name, func(t *testing.T) {
			tab := browsertest.New(t, size.w, size.h)
			if size.name == "laptop" {
				// lb starting: the page says so.
				if st := tab.Open(srv.URL + "/ui"); st != 200 {
					t.Fatalf("GET /ui: %d", st)
				}
				tab.WaitTrue("starting notice", `document.body.dataset.state === "starting" &&
					document.getElementById("notices").innerText.includes("lb is starting") &&
					document.getElementById("event-list").innerText.includes("waiting for function fib")`)
			}
			u.SetSource(src)

			// Serving, cloud on: calls arrive.
			for range 20 {
				src.latency.WithLabelValues("local").Observe(0.04)
				src.latency.WithLabelValues("cloud").Observe(0.2)
			}
			src.edit(func(st *spillway.Status) {
				st.Counters.Local, st.Counters.Cloud, st.Counters.Calls = 300, 100, 400
				st.Counters.Reasons = map[string]int64{"overflow": 90, "timeout": 10}
			})
			if st := tab.Open(srv.URL + "/ui"); st != 200 {
				t.Fatalf("GET /ui: %d", st)
			}
			tab.WaitTrue("chart with points and the split", `document.body.dataset.state === "ready" &&
				+document.getElementById("rate-chart").dataset.points >= 2 &&
				+document.getElementById("rate-chart").dataset.busy >= 1 &&
				document.querySelectorAll("#rate-chart polyline").length === 2 &&
				document.getElementById("split-local").textContent === "300 (75%)" &&
				document.getElementById("split-cloud").textContent === "100 (25%)"`)
			chart := browsertest.Eval[string](tab, `document.getElementById("rate-chart").textContent`)
			for _, want := range []string{"calls/s", "now", "time (minutes before now)"} {
				if !strings.Contains(chart, want) {
					t.Errorf("chart lacks %q (axes with units): %q", want, chart)
				}
			}
			tab.WaitTrue("latency, reasons, function and cloud", `(() => {
				const lat = document.getElementById("latency-rows").innerText;
				const fn = document.querySelector("#function-list .fn-name");
				return /local\s+\d+(\.\d+)? ms\s+\d+(\.\d+)? ms\s+[1-9]\d*/.test(lat) && /cloud\s+\d+(\.\d+)? ms\s+\d+(\.\d+)? ms\s+[1-9]\d*/.test(lat) &&
					document.querySelector('#reasons-chart [data-reason="overflow"]').textContent === "90" &&
					fn && fn.textContent === "fib" &&
					document.getElementById("share-held").textContent === "MAX_TOTAL_WORKERS 8: 2 held (mins included)" &&
					document.querySelector("#function-list .fn-info").textContent.endsWith("share: allotted 2, limit 4, wants 3, idle 0.5 s") &&
					document.getElementById("function-list").innerText.includes("frozen spare") &&
					document.getElementById("cloud-breaker").textContent === "closed" &&
					document.getElementById("cloud-budget").textContent.startsWith("40% of the burst spent now (cap 5 calls/s); 5 calls") &&
					document.getElementById("notices").innerText === "";
			})()`)
			if bad := browsertest.Eval[[]string](tab, layoutJS); len(bad) > 0 {
				t.Errorf("layout at %dpx: %v", size.w, bad)
			}
			if bad := browsertest.Eval[[]string](tab, contrastJS); len(bad) > 0 {
				t.Errorf("contrast at %dpx: %v", size.w, bad)
			}

			// Cloud off, and no ready worker: both said plainly.
			src.edit(func(st *spillway.Status) {
				st.CloudMode = "off"
				st.Details.Cloud = nil
				st.Details.Members = nil
			})
			defer src.edit(func(st *spillway.Status) {
				st.CloudMode = "local"
				fresh := newFakeSource()
				st.Details = fresh.st.Details
			})
			tab.WaitTrue("cloud-off and no-worker notices", `(() => {
				const n = document.getElementById("notices").innerText;
				return n.includes("Cloud is off (CLOUD=off)") && n.includes("Function fib has no ready workers") &&
					document.getElementById("cloud-mode").textContent === "off (CLOUD=off)" &&
					document.getElementById("function-list").innerText.includes("No workers.");
			})()`)
			if bad := browsertest.Eval[[]string](tab, contrastJS); len(bad) > 0 {
				t.Errorf("contrast of the notices at %dpx: %v", size.w, bad)
			}
			// For a person to look at: the latest run's pictures stay in .cache/.
			tab.Screenshot(filepath.Join(testutil.RepoRoot(t), ".cache", "ui-fake-"+size.name+".png"))
		})
	}
}
