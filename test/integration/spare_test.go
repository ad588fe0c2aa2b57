package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// TestMinZeroFunctionKeepsAFrozenSpare: under the real lb, a function with
// min 0 has no worker but one paused spare container (WORKER_SPARE's
// default), a function with min 1 has none; /metrics has each function's
// worker start histogram; lb's stop removes the spare with the rest.
func TestMinZeroFunctionKeepsAFrozenSpare(t *testing.T) {
	s := newStack(t, stackOptions{env: map[string]string{"NUMBER_OF_SERVERS": "1", "MAX_SERVERS": "2"}})
	s.publish(echoScript, spillway.StyleScript)
	zero := 0
	s.publishAs("idle", echoScript, spillway.StyleScript, spillway.Settings{Min: &zero})
	s.startLB()

	paused := func(fn string) []string {
		return dockerLines(t, "ps", "-a", "--filter", "label=spillway.pool="+s.pool,
			"--filter", "label=spillway.function="+fn, "--filter", "status=paused", "--format", "{{.Names}}")
	}
	waitUntil(t, 60*time.Second, "a paused spare of the min-0 function", func() bool { return len(paused("idle")) == 1 })
	if all := s.functionContainers("idle"); len(all) != 1 {
		t.Errorf("containers of idle: %v, want its spare only", all)
	}
	if got := paused("faas"); len(got) != 0 {
		t.Errorf("paused containers of faas (min 1): %v, want none", got)
	}

	resp, err := http.Get(s.lbURL + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	if !strings.Contains(metrics, `spillway_worker_start_seconds_count{function="faas"} 1`) {
		t.Errorf("/metrics: want one start of faas in spillway_worker_start_seconds; have:\n%s", grepLines(metrics, "spillway_worker_start_seconds_count"))
	}
	if !strings.Contains(metrics, `spillway_worker_start_seconds_count{function="idle"} 0`) {
		t.Errorf("/metrics: want idle's histogram with no start yet (its spare is no worker); have:\n%s", grepLines(metrics, "spillway_worker_start_seconds_count"))
	}

	s.stopLB()
	if left := s.containers(); len(left) != 0 {
		t.Errorf("containers left after lb stopped: %v", left)
	}
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "\n")
}
