package pool

import (
	"testing"

	"github.com/spillway-faas/spillway"
)

// TestKeyOfReuseProcess: turning reuse_process on or off changes what a
// worker runs (a roll), for script style only, and a worker's labels give
// back the key of the function it was started for.
func TestKeyOfReuseProcess(t *testing.T) {
	script := spillway.Function{SHA256: "abc", Style: spillway.StyleScript}
	reuse := script
	reuse.ReuseProcess = true
	if Key(script) == Key(reuse) {
		t.Errorf("Key ignores ReuseProcess: %s", Key(script))
	}
	if Key(script) != "abc/script" {
		t.Errorf("Key of a script changed to %s: every worker would roll", Key(script))
	}
	handler := spillway.Function{SHA256: "abc", Style: spillway.StyleHandler, Handler: "h"}
	h2 := handler
	h2.ReuseProcess = true
	if Key(handler) != Key(h2) {
		t.Errorf("ReuseProcess changes a handler's key: %s vs %s", Key(handler), Key(h2))
	}
	w := Worker{SHA256: "abc", Style: spillway.StyleScript, ReuseProcess: true}
	if w.Key() != Key(reuse) {
		t.Errorf("worker key %s, function key %s", w.Key(), Key(reuse))
	}
}
