package workerapi

import (
	"fmt"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// Health is what health() answers: an XML-RPC struct with one member per
// field, named as in Map.
type Health struct {
	InFlight    int64          // in_flight: calls running or waiting for a runner
	Completed   int64          // completed: calls answered with a result or a function error
	ColdStarts  int64          // cold_starts: calls served by a fresh runner
	Failed      int64          // failed: calls that timed out or crashed their runner
	SHA256      string         // sha256: hex sha256 of the function the worker runs
	Version     int64          // version: FUNCTION_VERSION
	Style       spillway.Style // style: script | handler
	Ready       bool           // ready: the runners are warm and the worker is not stopping
	Runners     int64          // runners: warm runners
	Concurrency int64          // concurrency: WORKER_CONCURRENCY
	Busy        int64          // busy: calls answered with FaultBusy
}

// The members of health()'s struct.
const (
	keyInFlight    = "in_flight"
	keyCompleted   = "completed"
	keyColdStarts  = "cold_starts"
	keyFailed      = "failed"
	keySHA256      = "sha256"
	keyVersion     = "version"
	keyStyle       = "style"
	keyReady       = "ready"
	keyRunners     = "runners"
	keyConcurrency = "concurrency"
	keyBusy        = "busy"
)

// Map is h as the worker sends it.
func (h Health) Map() map[string]any {
	return map[string]any{
		keyInFlight:    h.InFlight,
		keyCompleted:   h.Completed,
		keyColdStarts:  h.ColdStarts,
		keyFailed:      h.Failed,
		keySHA256:      h.SHA256,
		keyVersion:     h.Version,
		keyStyle:       string(h.Style),
		keyReady:       h.Ready,
		keyRunners:     h.Runners,
		keyConcurrency: h.Concurrency,
		keyBusy:        h.Busy,
	}
}

// HealthFrom reads health()'s answer (as internal/xmlrpc decodes it). A
// member that is missing or of another type leaves its field zero, except
// ready, which is true when absent: a worker that answers is taken as
// ready unless it says otherwise.
func HealthFrom(v any) (Health, error) {
	st, ok := v.(map[string]any)
	if !ok {
		return Health{}, fmt.Errorf("health() returned %s, want a struct", xmlrpc.TypeName(v))
	}
	h := Health{Ready: true}
	if r, ok := st[keyReady].(bool); ok {
		h.Ready = r
	}
	h.InFlight, _ = st[keyInFlight].(int64)
	h.Completed, _ = st[keyCompleted].(int64)
	h.ColdStarts, _ = st[keyColdStarts].(int64)
	h.Failed, _ = st[keyFailed].(int64)
	h.SHA256, _ = st[keySHA256].(string)
	h.Version, _ = st[keyVersion].(int64)
	style, _ := st[keyStyle].(string)
	h.Style = spillway.Style(style)
	h.Runners, _ = st[keyRunners].(int64)
	h.Concurrency, _ = st[keyConcurrency].(int64)
	h.Busy, _ = st[keyBusy].(int64)
	return h, nil
}
