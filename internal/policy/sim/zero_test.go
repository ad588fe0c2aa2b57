package sim

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// smallZero is the scale-to-zero comparison scaled down: 30 functions at
// 1 call/s together (Zipf 2: the top one takes 2/3 of the calls, most of
// the others are called minutes apart), 30,000 calls, about 8 simulated
// hours.
func smallZero() ManyConfig {
	c := DefaultZeroConfig()
	c.Functions, c.Rate, c.Calls = 30, 1, 30_000
	return c
}

func mustCompareZero(t *testing.T, cfg ManyConfig, variants []ZeroVariant) []ManyResult {
	t.Helper()
	rep, err := CompareZero(cfg, variants)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Local+r.Cloud != r.Calls || r.Calls != cfg.Calls {
			t.Fatalf("%s: %d calls = %d local + %d cloud, want %d", r.Variant, r.Calls, r.Local, r.Cloud, cfg.Calls)
		}
	}
	return rep.Results
}

// TestZeroHidesColdStarts is why lb sends a call with no ready worker to
// the cloud: on mostly idle functions, scaling to zero saves a large share
// of the worker-hours that min 1 spends; making the first call wait for its
// worker (Knative) puts the worker start into the tail, and the cloud with
// keep-warm pings takes it back out, to about the always-warm p99. Without
// the pings the cloud hides the worker start behind the Lambda's own cold
// start, which is no slower.
func TestZeroHidesColdStarts(t *testing.T) {
	t.Parallel()
	rs := mustCompareZero(t, smallZero(), ZeroVariants)
	a, b, c, ck, d := rs[0], rs[1], rs[2], rs[3], rs[4]
	t.Logf("p99 ms a %.0f, b %.0f, c %.0f, c+kw %.0f; cold p99 ms b %.0f, c %.0f, c+kw %.0f; worker-h a %.1f, b %.1f, c %.1f; cloud $ b %.3f c %.3f c+kw %.3f",
		a.P99Ms, b.P99Ms, c.P99Ms, ck.P99Ms, b.ColdP99Ms, c.ColdP99Ms, ck.ColdP99Ms,
		a.WorkerSeconds/3600, b.WorkerSeconds/3600, c.WorkerSeconds/3600, b.CloudCostUSD, c.CloudCostUSD, ck.CloudCostUSD)

	if a.ColdCalls != 0 || a.ScaledToZero != 0 {
		t.Errorf("min 1: %d cold calls, %d times at zero; want none", a.ColdCalls, a.ScaledToZero)
	}
	for _, r := range []ManyResult{b, c, ck} {
		if r.ScaledToZero < 100 || r.ColdCalls < r.ScaledToZero {
			t.Errorf("%s: scaled to zero %d times, %d cold calls; want at least 100, and a cold call after each", r.Variant, r.ScaledToZero, r.ColdCalls)
		}
		if r.WorkerSeconds > 0.75*a.WorkerSeconds {
			t.Errorf("%s: %.1f worker-hours, min 1 %.1f; want at most 75%%", r.Variant, r.WorkerSeconds/3600, a.WorkerSeconds/3600)
		}
	}
	if ck.P99Ms > 0.5*b.P99Ms || ck.ColdP99Ms > 0.5*b.ColdP99Ms {
		t.Errorf("p99 %.0f ms (cold calls %.0f) with the cloud and pings, %.0f (%.0f) waiting for the worker; want at most half",
			ck.P99Ms, ck.ColdP99Ms, b.P99Ms, b.ColdP99Ms)
	}
	if ck.P99Ms > 1.25*a.P99Ms {
		t.Errorf("p99 %.0f ms with the cloud and pings, always warm %.0f; want within 25%%", ck.P99Ms, a.P99Ms)
	}
	if c.ColdP99Ms > b.ColdP99Ms {
		t.Errorf("cold calls' p99 %.0f ms in the cloud without pings, %.0f waiting for the worker; want no worse", c.ColdP99Ms, b.ColdP99Ms)
	}
	// Latency-aware, weighing the 1 s start against a warm cloud, sends
	// the cold calls there too.
	if d.ColdP99Ms > 1.1*ck.ColdP99Ms {
		t.Errorf("cold calls' p99 %.0f ms with latency-aware, %.0f with the fixed rule; want within 10%%", d.ColdP99Ms, ck.ColdP99Ms)
	}
	// What the cloud costs: the cold calls, and the pings.
	if c.CloudCostUSD <= b.CloudCostUSD || ck.PingCostUSD <= 0 || c.PingCostUSD != 0 || ck.Pings == 0 {
		t.Errorf("cloud $ b %.4f, c %.4f; pings %d ($%.4f) with keep-warm, $%.4f without; want c above b and pings only with keep-warm",
			b.CloudCostUSD, c.CloudCostUSD, ck.Pings, ck.PingCostUSD, c.PingCostUSD)
	}
}

// TestZeroFastStart: with a worker that starts in 50 ms (a thawed
// WORKER_SPARE), waiting for it beats a cold Lambda, and the latency-aware
// policy, which weighs the start against the cloud, waits for it too.
func TestZeroFastStart(t *testing.T) {
	t.Parallel()
	cfg := smallZero()
	cfg.WorkerColdStart = 50 * time.Millisecond
	rs := mustCompareZero(t, cfg, []ZeroVariant{ZeroVariants[1], ZeroVariants[2], ZeroVariants[4]})
	b, c, d := rs[0], rs[1], rs[2]
	t.Logf("cold p99 ms: wait %.0f, cloud %.0f, latency-aware %.0f", b.ColdP99Ms, c.ColdP99Ms, d.ColdP99Ms)
	if c.ColdP99Ms < 2*b.ColdP99Ms {
		t.Errorf("cold calls' p99 %.0f ms in a cold cloud, %.0f waiting for a 50 ms start; want the cloud at least twice as slow", c.ColdP99Ms, b.ColdP99Ms)
	}
	if d.ColdP99Ms > 1.25*b.ColdP99Ms {
		t.Errorf("cold calls' p99 %.0f ms with latency-aware, %.0f waiting; want within 25%%", d.ColdP99Ms, b.ColdP99Ms)
	}
}

// TestZeroCloudOff: with CLOUD=off a call with no ready worker waits for
// the one it starts, and every call is served locally.
func TestZeroCloudOff(t *testing.T) {
	t.Parallel()
	cfg := smallZero()
	cfg.Calls, cfg.CloudOff, cfg.Servers = 10_000, true, 0
	r, err := RunMany(cfg, cfg.Functions*cfg.Max, unshared)
	if err != nil {
		t.Fatal(err)
	}
	if r.Cloud != 0 || r.Local != r.Calls || r.Pings != 0 || r.ColdCalls == 0 {
		t.Fatalf("cloud off: %d local, %d cloud of %d, %d cold calls, %d pings; want all local, some cold, no pings",
			r.Local, r.Cloud, r.Calls, r.ColdCalls, r.Pings)
	}
	if lo := 0.8 * cfg.WorkerColdStart.Seconds() * 1000; r.ColdP50Ms < lo {
		t.Fatalf("cold calls' p50 %.0f ms: want at least the worker start (%.0f ms)", r.ColdP50Ms, lo)
	}
}

// TestZeroCLI runs `lb sim --functions N --scale-to-zero` as lb does.
func TestZeroCLI(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"--functions", "10", "--scale-to-zero", "--rate", "0.5", "--calls", "3000", "--json"}
	if code := Main(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep ManyReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decode the JSON report: %v\n%s", err, out.String())
	}
	if len(rep.Results) != len(ZeroVariants) || rep.Config.ScaleToZeroAfter <= 0 || rep.Config.KeepWarmEvery <= 0 {
		t.Fatalf("want %d variants with scale-to-zero settings, got %d, %+v", len(ZeroVariants), len(rep.Results), rep.Config)
	}
	for i, v := range ZeroVariants {
		if rep.Results[i].Variant != v.Name || rep.Results[i].Calls != 3000 {
			t.Errorf("result %d: %q with %d calls, want %q with 3000", i, rep.Results[i].Variant, rep.Results[i].Calls, v.Name)
		}
	}
	out.Reset()
	if code := Main([]string{"--functions", "5", "--rate", "0.2", "--calls", "500", "--scale-to-zero"}, &out, &errb); code != 0 {
		t.Fatalf("table: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "cold p99 ms") || !strings.Contains(out.String(), ZeroVariants[1].Name) {
		t.Errorf("table lacks the comparison:\n%s", out.String())
	}
	for _, bad := range [][]string{
		{"--functions", "5", "--servers", "0", "--scale-to-zero-after", "0"},
		{"--functions", "5", "--scale-to-zero", "--keep-warm-every", "-1s"},
	} {
		errb.Reset()
		if code := Main(bad, &out, &errb); code != 2 {
			t.Errorf("Main(%q) = %d, want 2 (stderr %q)", bad, code, errb.String())
		}
	}
}
