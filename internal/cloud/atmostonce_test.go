package cloud_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
)

// fakeStage is an API Gateway stage whose function "runs" (is counted) and
// then answers status.
type fakeStage struct {
	status int
	runs   atomic.Int64
	mu     sync.Mutex
	ids    []string // X-Spillway-Call-Id of each request
}

func (f *fakeStage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.ids = append(f.ids, r.Header.Get(cloud.CallIDHeader))
	f.mu.Unlock()
	if f.status == http.StatusTooManyRequests {
		// Throttled before running.
		http.Error(w, `{"message":"Too Many Requests"}`, f.status)
		return
	}
	f.runs.Add(1)
	if f.status != http.StatusOK {
		http.Error(w, `{"message":"Internal server error"}`, f.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"statusCode":200,"body":"ok","coldStart":false}`))
}

func fakeOffloader(t *testing.T, url string) *cloud.Offloader {
	t.Helper()
	cfg := testConfig(url, "fake")
	cfg.MaxAttempts = 3
	o := cloud.NewOffloader(aws.Config{}, cfg, nil)
	o.SetEndpoint(cloud.Endpoint{InvokeURL: url + "/fake/dev/invoke", FunctionName: "fake"})
	t.Cleanup(o.Close)
	return o
}

func TestServerErrorAfterRunningIsNotRetried(t *testing.T) {
	// The cloud runs the function and answers 500. Without --idempotent the
	// call is sent once: the function ran once. With it (the protection
	// off) the offloader retries, and the function runs MaxAttempts times.
	for _, idempotent := range []bool{false, true} {
		t.Run(map[bool]string{false: "at-most-once", true: "idempotent"}[idempotent], func(t *testing.T) {
			stage := &fakeStage{status: http.StatusInternalServerError}
			srv := httptest.NewServer(stage)
			defer srv.Close()
			o := fakeOffloader(t, srv.URL)
			var resends []string
			_, err := o.Invoke(context.Background(), spillway.CloudCall{ID: "0123456789abcdef", Param: "x", Idempotent: idempotent,
				Resend: func(why string) bool { resends = append(resends, why); return true }})
			if !errors.Is(err, spillway.ErrCloudUnavailable) || errors.Is(err, spillway.ErrCloudNotRun) {
				t.Fatalf("err = %v, want cloud unavailable, not marked as not run", err)
			}
			want := int64(1)
			if idempotent {
				want = 3
			}
			if got := stage.runs.Load(); got != want {
				t.Errorf("function ran %d times, want %d", got, want)
			}
			if int64(len(resends)) != want-1 {
				t.Errorf("Resend asked %d times (%v), want %d", len(resends), resends, want-1)
			}
			for _, id := range stage.ids {
				if id != "0123456789abcdef" {
					t.Errorf("request carried call id %q, want the call's", id)
				}
			}
		})
	}
}

func TestThrottledCallIsResentWithinTheBudget(t *testing.T) {
	// A 429 proves the function did not run: it is retried, each retry
	// asked of Resend (lb's budget); a Resend that says no stops it.
	stage := &fakeStage{status: http.StatusTooManyRequests}
	srv := httptest.NewServer(stage)
	defer srv.Close()
	o := fakeOffloader(t, srv.URL)
	var asked int
	_, err := o.Invoke(context.Background(), spillway.CloudCall{Param: "x", Resend: func(why string) bool {
		asked++
		if why != "throttled" {
			t.Errorf("Resend reason %q, want throttled", why)
		}
		return false // the budget is spent
	}})
	if !errors.Is(err, spillway.ErrCloudNotRun) {
		t.Errorf("err = %v, want it marked as not run", err)
	}
	if n := len(stage.ids); n != 1 || asked != 1 {
		t.Errorf("%d requests, Resend asked %d times; want 1 and 1", n, asked)
	}
}

func TestRefusedConnectionIsNotRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	o := fakeOffloader(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resends int
	_, err = o.Invoke(ctx, spillway.CloudCall{Param: "x", Resend: func(why string) bool {
		if why != "not_sent" {
			t.Errorf("Resend reason %q, want not_sent", why)
		}
		resends++
		return true
	}})
	if !errors.Is(err, spillway.ErrCloudNotRun) || !errors.Is(err, spillway.ErrCloudUnavailable) {
		t.Errorf("err = %v, want cloud unavailable and not run", err)
	}
	if resends != 2 {
		t.Errorf("Resend asked %d times, want 2 (MaxAttempts 3)", resends)
	}
}
