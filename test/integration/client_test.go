package integration

import (
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// TestClientBenchAgainstLB drives the real client binary against a real lb
// with enough load to overflow into localcloud, and checks its report.
func TestClientBenchAgainstLB(t *testing.T) {
	s := newStack(t, stackOptions{cloud: true, env: map[string]string{
		"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2",
	}})
	s.publish(sleeper, spillway.StyleHandler)
	s.startLB()
	s.waitCloudReady()

	out := filepath.Join(t.TempDir(), "bench.png")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t, "client"), "bench", "--lb", s.lbURL,
		"-c", "6", "-n", "36", "--param", "sleep:0.2", "--json", "--out", out)
	stdout, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("client bench: %v\n%s%s", err, stdout, stderr)
	}
	var rep struct {
		Sent      int64            `json:"sent"`
		OK        int64            `json:"ok"`
		Errors    int64            `json:"errors"`
		ByRoute   map[string]any   `json:"latency_ms_by_route"`
		Reasons   map[string]int64 `json:"offload_reasons"`
		LatencyMS map[string]any   `json:"latency_ms"`
		PoolSize  map[string]any   `json:"pool_size"`
	}
	if err := json.Unmarshal(stdout, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	t.Logf("report: %s", stdout)
	if rep.Sent != 36 || rep.OK+rep.Errors != rep.Sent || rep.Errors != 0 {
		t.Errorf("sent %d, ok %d, errors %d; want 36 sent, all ok", rep.Sent, rep.OK, rep.Errors)
	}
	if rep.ByRoute["local"] == nil || rep.ByRoute["cloud"] == nil || rep.Reasons["overflow"] == 0 {
		t.Errorf("routes %v, reasons %v: want local and cloud calls with overflow", rep.ByRoute, rep.Reasons)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("--out is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 400 {
		t.Errorf("chart is %v, too small", b)
	}

	// client call -v names the route.
	callOut, err := exec.CommandContext(ctx, binary(t, "client"), "call", "-v", "--lb", s.lbURL, "hi").CombinedOutput()
	if err != nil || !strings.Contains(string(callOut), "hi") || !strings.Contains(string(callOut), "local") {
		t.Errorf("client call -v: %v\n%s", err, callOut)
	}
}
