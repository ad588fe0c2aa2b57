package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/testutil"
)

// keptOpen sends a request's headers a line a second and reports how long
// the server kept the connection open (capped at max).
func keptOpen(t *testing.T, addr string, max time.Duration) time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c)
		close(closed)
	}()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: worker\r\n"); err != nil {
		return time.Since(start)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-closed:
			return time.Since(start)
		case <-tick.C:
		}
		if time.Since(start) > max {
			return max
		}
		if _, err := fmt.Fprintf(c, "X-Dribble-%d: x\r\n", i); err != nil {
			return time.Since(start)
		}
	}
}

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
		workerOpen = keptOpen(t, strings.TrimPrefix(w.url, "http://"), 60*time.Second)
	}()
	go func() {
		defer wg.Done()
		plainOpen = keptOpen(t, strings.TrimPrefix(plain.URL, "http://"), 15*time.Second)
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
