// Package browsertest drives Debian's headless Chromium (the chromium
// package; make test installs it) through the DevTools protocol, for tests
// of lb's operator page.
package browsertest

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/spillway-faas/spillway/internal/testutil"
)

// PageTimeout bounds every wait on the page: Chromium on a loaded 2-core
// machine, with every test package running at once, can take many seconds
// to start and to lay a page out.
const PageTimeout = 60 * time.Second

// chromium finds Debian's browser.
func chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("chromium")
	testutil.Require(t, err == nil, "chromium (Debian package chromium)")
	return p
}

// Tab is one headless Chromium with one tab, closed when the test ends.
// A script error or a Content-Security-Policy violation on any page the tab
// shows fails the test.
type Tab struct {
	t   testing.TB
	Ctx context.Context

	mu       sync.Mutex // guards problems
	problems []string
}

// listen runs on the tab's reader goroutine: it only records.
func (b *Tab) listen(ev any) {
	var p string
	switch ev := ev.(type) {
	case *cdpruntime.EventExceptionThrown:
		if d := ev.ExceptionDetails; d != nil {
			p = fmt.Sprintf("script error at %s:%d: %s", d.URL, d.LineNumber+1, d.Text)
			if d.Exception != nil && d.Exception.Description != "" {
				p += " " + d.Exception.Description
			}
		}
	case *cdplog.EventEntryAdded:
		if e := ev.Entry; e != nil && e.Level == cdplog.EntryLevelError &&
			(e.Source == cdplog.EntrySourceSecurity || e.Source == cdplog.EntrySourceJavascript) {
			p = fmt.Sprintf("%s error: %s", e.Source, e.Text)
		}
	}
	if p != "" {
		b.mu.Lock()
		b.problems = append(b.problems, p)
		b.mu.Unlock()
	}
}

// Problems returns the script errors and policy violations seen so far.
func (b *Tab) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string{}, b.problems...)
}

// TakeProblems returns the problems seen so far and forgets them (for a test
// that provokes some on purpose).
func (b *Tab) TakeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// New starts Chromium with a window of width×height CSS pixels.
func New(t testing.TB, width, height int) *Tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:0:0], chromedp.DefaultExecAllocatorOptions[:]...)
	opts = append(opts,
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(width, height),
		chromedp.UserDataDir(t.TempDir()),
	)
	tab := &Tab{t: t}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(tab.listen))
	tab.Ctx = ctx
	t.Cleanup(func() {
		cancel()
		acancel()
		if p := tab.Problems(); len(p) > 0 {
			t.Errorf("the browser saw %d problem(s):\n%s", len(p), strings.Join(p, "\n"))
		}
	})
	// The first run starts the browser; a timeout on its context would stop
	// the browser for good, so a timer cancels the whole tab instead.
	slow := time.AfterFunc(2*PageTimeout, cancel)
	err := chromedp.Do(ctx)
	if !slow.Stop() {
		t.Fatalf("chromium did not start within %v", 2*PageTimeout)
	}
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	rctx, rcancel := context.WithTimeout(ctx, PageTimeout)
	defer rcancel()
	if _, err := chromedp.Call(rctx, cdpruntime.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("chromium: enable script events: %v", err)
	}
	return tab
}

// BasicAuth makes every later request of the tab send user:password.
func (b *Tab) BasicAuth(user, password string) {
	b.t.Helper()
	cred := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	ctx, cancel := context.WithTimeout(b.Ctx, PageTimeout)
	defer cancel()
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders,
		network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Basic " + cred}}); err != nil {
		b.t.Fatalf("chromium: set the Authorization header: %v", err)
	}
}

// Run runs actions with PageTimeout.
func (b *Tab) Run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, PageTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("chromium: %v", err)
	}
}

// Open navigates to url and returns the HTTP status of the document.
func (b *Tab) Open(url string) int64 {
	b.t.Helper()
	status, err := b.TryOpen(url)
	if err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
	return status
}

// TryOpen navigates to url and returns the HTTP status of the document, or
// the browser's error (headless Chromium, asked for credentials it has not
// got, fails with net::ERR_INVALID_AUTH_CREDENTIALS).
func (b *Tab) TryOpen(url string) (int64, error) {
	ctx, cancel := context.WithTimeout(b.Ctx, PageTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(url))
	if err != nil {
		return 0, err
	}
	return resp.Status, nil
}

// Eval evaluates a JavaScript expression (with PageTimeout).
func Eval[T any](b *Tab, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, PageTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("chromium: evaluate %s: %v", js, err)
	}
	return v
}

// WaitTrue polls a JavaScript expression until it is true, for at most
// PageTimeout; what names the condition in the failure.
func (b *Tab) WaitTrue(what, js string) {
	b.t.Helper()
	deadline := time.Now().Add(PageTimeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.Ctx, PageTimeout)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			b.t.Logf("page: %s after %v", what, time.Until(deadline.Add(-PageTimeout)).Abs().Round(time.Millisecond))
			return
		}
		last = err
		if time.Now().After(deadline) {
			ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ""`))
			cancel()
			b.t.Fatalf("page: %s not within %v (last error: %v)\npage text:\n%s", what, PageTimeout, last, text)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Screenshot saves a PNG of the whole page to path (its directory is made).
func (b *Tab) Screenshot(path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, PageTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("chromium: screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(fmt.Errorf("save screenshot: %w", err))
	}
}
