package docker

import (
	"testing"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/pool"
)

// TestWorkerEnvReuseProcess: the record's reuse_process reaches a script's
// worker as FUNCTION_REUSE_PROCESS=1, and never a handler's.
func TestWorkerEnvReuseProcess(t *testing.T) {
	b := &Backend{cfg: Config{ServerPort: 8001}}
	for _, tc := range []struct {
		style spillway.Style
		reuse bool
		want  bool
	}{
		{spillway.StyleScript, true, true},
		{spillway.StyleScript, false, false},
		{spillway.StyleHandler, true, false},
	} {
		fn := spillway.Function{Name: "f", Style: tc.style, ReuseProcess: tc.reuse}
		env := b.workerEnv(pool.WorkerSpec{Function: fn})
		if env.ReuseProcess != tc.want {
			t.Errorf("%s with reuse_process %v: worker told %v", tc.style, tc.reuse, env.ReuseProcess)
		}
	}
}
