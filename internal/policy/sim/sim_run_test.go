package sim

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestCLI runs the simulator command as `lb sim` does, on a step trace that
// jumps past what the base pool can take, and checks what the report says:
// every call is counted once, overflow sends the excess to the cloud and
// grows the pool, never keeps everything local, and bad input exits 2.
func TestCLI(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"--trace", "step", "--rate", "5", "--peak", "200", "--step-at", "20s", "--duration", "60s",
		"--servers", "2", "--max", "8", "--policies", "overflow,never", "--json"}
	if code := Main(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep struct {
		Results []struct {
			Policy  string         `json:"policy"`
			Calls   int            `json:"calls"`
			Local   int            `json:"local"`
			Cloud   int            `json:"cloud"`
			Reasons map[string]int `json:"reasons"`
			PoolMin int            `json:"pool_min"`
			PoolMax int            `json:"pool_max"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decode the JSON report: %v\n%s", err, out.String())
	}
	if len(rep.Results) != 2 {
		t.Fatalf("want 2 results, got %+v", rep.Results)
	}
	for _, r := range rep.Results {
		if r.Calls < 1000 || r.Calls != r.Local+r.Cloud {
			t.Errorf("%s: calls %d = local %d + cloud %d?", r.Policy, r.Calls, r.Local, r.Cloud)
		}
		if r.PoolMin != 2 || r.PoolMax <= r.PoolMin || r.PoolMax > 8 {
			t.Errorf("%s: pool %d..%d, want it to grow from 2 up to at most 8", r.Policy, r.PoolMin, r.PoolMax)
		}
		switch {
		case strings.HasPrefix(r.Policy, "overflow"):
			if r.Cloud == 0 || r.Reasons["overflow"] != r.Cloud {
				t.Errorf("%s: cloud %d, reasons %v; want the excess offloaded as overflow", r.Policy, r.Cloud, r.Reasons)
			}
		case strings.HasPrefix(r.Policy, "never"):
			if r.Cloud != 0 {
				t.Errorf("%s: %d calls in the cloud", r.Policy, r.Cloud)
			}
		default:
			t.Errorf("unexpected policy %q", r.Policy)
		}
	}

	out.Reset()
	if code := Main([]string{"--trace", "bursts", "--duration", "10s", "--policies", "overflow"}, &out, &errb); code != 0 {
		t.Fatalf("table: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "overflow") {
		t.Errorf("table lacks the policy:\n%s", out.String())
	}

	for _, bad := range [][]string{{"--cloud", "maybe"}, {"--servers", "0"}, {"extra"}, {"--trace", "csv:/no/such/file"}} {
		errb.Reset()
		if code := Main(bad, &out, &errb); code != 2 {
			t.Errorf("Main(%q) = %d, want 2 (stderr %q)", bad, code, errb.String())
		}
	}
}
