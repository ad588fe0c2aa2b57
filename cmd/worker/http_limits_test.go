package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/testutil"
)

func TestWorkerFrontCutsSlowAndOversizeHeaders(t *testing.T) {
	// The worker cuts a client dribbling its headers (ReadHeaderTimeout)
	// and answers 431 to 128 KiB of headers (MaxHeaderBytes 64 KiB); a
	// plain server (the protection off) keeps the first and takes the second.
	bin := testutil.BuildBinary(t, "worker")
	w := startWorker(t, bin, "def handler(event, context):\n    return 1\n", "FUNCTION_STYLE=handler")
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer plain.Close()

	var workerOpen, plainOpen time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		workerOpen = testutil.HeaderDribble(t, strings.TrimPrefix(w.url, "http://"), 60*time.Second)
	}()
	go func() {
		defer wg.Done()
		plainOpen = testutil.HeaderDribble(t, strings.TrimPrefix(plain.URL, "http://"), 15*time.Second)
	}()

	huge := strings.Repeat("a", 128<<10)
	for url, want := range map[string]int{w.url + "/healthz": http.StatusRequestHeaderFieldsTooLarge, plain.URL: http.StatusOK} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Huge", huge)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s with 128 KiB of headers: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s with 128 KiB of headers: %d, want %d", url, resp.StatusCode, want)
		}
	}
	wg.Wait()
	if workerOpen >= 60*time.Second {
		t.Errorf("the worker kept a header-dribbling connection open for %v", workerOpen)
	}
	if plainOpen < 15*time.Second {
		t.Errorf("the unprotected server cut the dribble after %v: the probe proves nothing", plainOpen)
	}
}
