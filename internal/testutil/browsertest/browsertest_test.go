package browsertest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestTabSeesScriptErrorsAndPolicyViolations shows that a tab reports a
// page's script error and an inline script its policy blocked (which would
// fail the test that opened it), and nothing for a clean page.
func TestTabSeesScriptErrorsAndPolicyViolations(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/bad", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'")
		io.WriteString(w, `<!doctype html><title>bad</title><script>document.title = "inline ran"</script><script src="/throw.js"></script>`)
	})
	mux.HandleFunc("/good", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'")
		io.WriteString(w, `<!doctype html><title>good</title><script src="/ok.js"></script>`)
	})
	mux.HandleFunc("/throw.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		io.WriteString(w, `document.body.dataset.loaded = "1"; null.boom();`)
	})
	mux.HandleFunc("/ok.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		io.WriteString(w, `document.documentElement.dataset.loaded = "1";`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tab := New(t, 800, 600)
	tab.Open(srv.URL + "/good")
	tab.WaitTrue("script ran", `document.documentElement.dataset.loaded === "1"`)
	if p := tab.Problems(); len(p) != 0 {
		t.Fatalf("a clean page reported %v", p)
	}

	tab.Open(srv.URL + "/bad")
	var got []string
	deadline := time.Now().Add(PageTimeout)
	for {
		got = append(got, tab.TakeProblems()...)
		all := strings.Join(got, "\n")
		if strings.Contains(all, "script error") && strings.Contains(all, "Content Security Policy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want a script error and a policy violation, got %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if title := Eval[string](tab, `document.title`); title != "bad" {
		t.Errorf("the inline script ran (title %q): the policy did not block it", title)
	}
}
