package sim

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// smallMany is the default many-function system scaled down: 30 functions,
// 60,000 calls, min 1 each, so 30 workers are the mins.
func smallMany() ManyConfig {
	c := DefaultManyConfig()
	c.Functions, c.Calls, c.Rate = 30, 60_000, 90
	return c
}

func mustRunMany(t testing.TB, cfg ManyConfig, total int, sharing string) ManyResult {
	t.Helper()
	sh, err := ParseSharing(sharing)
	if err != nil {
		t.Fatal(err)
	}
	r, err := RunMany(cfg, total, sh)
	if err != nil {
		t.Fatalf("RunMany(%d, %s): %v", total, sharing, err)
	}
	return r
}

func TestManyDeterministic(t *testing.T) {
	cfg := smallMany()
	cfg.Calls = 20_000
	a, b := mustRunMany(t, cfg, 45, "default"), mustRunMany(t, cfg, 45, "default")
	a.WallSec, b.WallSec = 0, 0
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("same seed, different results:\n%s\n%s", ja, jb)
	}
	if a.Calls != 20_000 || a.Local+a.Cloud != a.Calls {
		t.Fatalf("calls %d = local %d + cloud %d, want 20000", a.Calls, a.Local, a.Cloud)
	}
	c := cfg
	c.Seed = 2
	if r := mustRunMany(t, c, 45, "default"); r.Local == a.Local && r.P99Ms == a.P99Ms {
		t.Fatalf("another seed gave the same run")
	}
}

// TestManyRuleBeatsStaticSplit is why lb shares the cap the way it does:
// with the same cap and the same calls, the default rule serves more calls
// locally (offloads fewer, so costs less) than either static split and than
// a shared pool that never takes workers back, without a worse p99.
func TestManyRuleBeatsStaticSplit(t *testing.T) {
	t.Parallel()
	cfg := smallMany()
	for _, total := range []int{45, 60} {
		rule := mustRunMany(t, cfg, total, "default")
		for _, other := range []string{"static-even", "static-load", "shared"} {
			r := mustRunMany(t, cfg, total, other)
			if rule.Offloaded >= r.Offloaded || rule.CloudCostUSD >= r.CloudCostUSD {
				t.Errorf("cap %d: default offloads %.2f%% ($%.3f), %s %.2f%% ($%.3f); want the rule lower",
					total, 100*rule.Offloaded, rule.CloudCostUSD, other, 100*r.Offloaded, r.CloudCostUSD)
			}
			if rule.P99Ms > 1.1*r.P99Ms {
				t.Errorf("cap %d: default p99 %.0f ms, %s %.0f ms; want the rule within 10%%", total, rule.P99Ms, other, r.P99Ms)
			}
		}
	}
}

// TestManyCapHeld checks the ledger's promise in the simulated system: the
// pools together never have more members (starting ones included) than the
// cap, except for their mins, however eagerly the rule takes.
func TestManyCapHeld(t *testing.T) {
	t.Parallel()
	cfg := smallMany()
	cfg.Calls = 30_000
	for _, tc := range []struct {
		total   int
		sharing string
		peak    int  // the most members at once, at most
		reach   bool // and the pools reach it (the cap binds)
	}{
		{45, "default", 45, true},
		{45, "shared", 45, true},
		{45, "take:0s:1:busy", 45, true},
		{45, "take:0s:all", 45, true},
		{45, "static-even", 45, false},
		{60, "static-load", 60, false},
		{20, "default", 30, true}, // the mins (30) are over the cap: granted, nothing more
	} {
		r := mustRunMany(t, cfg, tc.total, tc.sharing)
		if r.OverCap != 0 || r.PeakWorkers > tc.peak || tc.reach && r.PeakWorkers != tc.peak {
			t.Errorf("cap %d, %s: %d times over the cap, peak %d workers; want 0 and a peak of %d",
				tc.total, tc.sharing, r.OverCap, r.PeakWorkers, tc.peak)
		}
	}
}

func TestParseSharing(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr bool
	}{
		{"static-even", false}, {"static-load", false}, {"shared", false}, {"default", false},
		{"take:1s:all", false}, {"take:0s:1:busy", false}, {"take:500ms:3", false},
		{"take", true}, {"take:1s", true}, {"take:x:1", true}, {"take:1s:0", true}, {"take:1s:1:idle", true}, {"static", true},
	} {
		if _, err := ParseSharing(tc.in); (err != nil) != tc.wantErr {
			t.Errorf("ParseSharing(%q) error %v, want error %v", tc.in, err, tc.wantErr)
		}
	}
}

// TestManyCLI runs `lb sim --functions ...` as lb does and reads its JSON.
func TestManyCLI(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"--functions", "20", "--calls", "20000", "--rate", "60", "--totals", "30,40",
		"--sharing", "static-even,default", "--json"}
	if code := Main(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep ManyReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decode the JSON report: %v\n%s", err, out.String())
	}
	if len(rep.Results) != 4 || rep.Config.Functions != 20 {
		t.Fatalf("want 2 caps × 2 sharings for 20 functions, got %d results, %d functions", len(rep.Results), rep.Config.Functions)
	}
	for i, want := range []struct {
		total   int
		sharing string
	}{{30, "static-even"}, {30, "default"}, {40, "static-even"}, {40, "default"}} {
		r := rep.Results[i]
		if r.Total != want.total || r.Sharing != want.sharing || r.Calls != 20000 || r.Local+r.Cloud != r.Calls {
			t.Errorf("result %d: cap %d %s, calls %d = %d + %d; want cap %d %s, 20000 calls",
				i, r.Total, r.Sharing, r.Calls, r.Local, r.Cloud, want.total, want.sharing)
		}
	}

	out.Reset()
	if code := Main([]string{"--functions", "5", "--calls", "2000", "--rate", "20", "--totals", "8", "--sharing", "default"}, &out, &errb); code != 0 {
		t.Fatalf("table: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "default") || !strings.Contains(out.String(), "5 functions") {
		t.Errorf("table lacks the run:\n%s", out.String())
	}

	for _, bad := range [][]string{
		{"--functions", "0"}, {"--functions", "5", "--totals", "x"}, {"--functions", "5", "--sharing", "fair"},
		{"--functions", "5", "--cloud", "maybe"}, {"--functions", "5", "extra"}, {"--functions", "5", "--burst", "0.5"},
	} {
		errb.Reset()
		if code := Main(bad, &out, &errb); code != 2 {
			t.Errorf("Main(%q) = %d, want 2 (stderr %q)", bad, code, errb.String())
		}
	}
}

func TestStaticSplit(t *testing.T) {
	w := []float64{6, 3, 1, 0}
	for _, tc := range []struct {
		kind          string
		total, lo, hi int
		want          []int
	}{
		{"even", 8, 1, 8, []int{2, 2, 2, 2}},
		{"even", 10, 1, 8, []int{3, 2, 3, 2}},
		{"even", 3, 1, 8, []int{1, 1, 1, 1}}, // mins over the cap
		{"load", 14, 1, 8, []int{7, 4, 2, 1}},
		{"load", 24, 1, 6, []int{6, 6, 6, 6}}, // 6 is each one's max; the rest spreads
		{"load", 13, 1, 8, []int{6, 4, 2, 1}}, // 5.4, 2.7, 0.9, 0: the leftovers to .9 and .7
	} {
		got := staticSplit(tc.kind, tc.total, tc.lo, tc.hi, w)
		sum := 0
		for _, v := range got {
			sum += v
		}
		if !slices.Equal(got, tc.want) || sum > max(tc.total, tc.lo*len(w)) {
			t.Errorf("staticSplit(%s, %d, %d, %d) = %v (sum %d), want %v", tc.kind, tc.total, tc.lo, tc.hi, got, sum, tc.want)
		}
	}
	if got := staticSplit("", 8, 1, 8, w); got != nil {
		t.Errorf("staticSplit for the ledger = %v, want nil", got)
	}
}
