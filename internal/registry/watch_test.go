package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// receive waits for the next value on ch.
func receive[T any](t *testing.T, ch <-chan T, within time.Duration) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	case <-time.After(within):
		t.Fatalf("nothing within %s", within)
	}
	var zero T
	return zero
}

// silent asserts nothing arrives on ch for d; what would describes it.
func silent[T any](t *testing.T, ch <-chan T, d time.Duration, what func(T) string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s", what(v))
	case <-time.After(d):
	}
}

// closeWithin calls Close and fails unless it returns within d.
func closeWithin(t *testing.T, c interface{ Close() error }, d time.Duration) {
	t.Helper()
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(d):
		t.Fatalf("Close did not return within %s", d)
	}
}

// next waits for the watcher's next record.
func next(t *testing.T, w *registry.VersionWatcher, within time.Duration) spillway.Function {
	t.Helper()
	return receive(t, w.Updates(), within)
}

// quiet asserts the watcher delivers nothing for d.
func quiet(t *testing.T, w *registry.VersionWatcher, d time.Duration) {
	t.Helper()
	silent(t, w.Updates(), d, func(fn spillway.Function) string { return fmt.Sprintf("update %s v%d", fn.Name, fn.Version) })
}

func publish(t *testing.T, s *registry.Store, name, code string) spillway.Function {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fn, err := s.Publish(ctx, spillway.Function{Name: name, Code: code, Style: spillway.StyleScript})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return fn
}

// publishAfterRestart publishes once the store's own connections are back
// after a restart of the server.
func publishAfterRestart(t *testing.T, s *registry.Store, name, code string) spillway.Function {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fn, err := s.Publish(ctx, spillway.Function{Name: name, Code: code, Style: spillway.StyleScript})
		cancel()
		if err == nil {
			return fn
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func watchOpts() registry.Options {
	return registry.Options{
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     300 * time.Millisecond,
		HealthInterval: 300 * time.Millisecond,
		ResyncInterval: -1, // prove the re-read after (re)subscribe, not the periodic one
	}
}

// logBuffer collects log output from the watcher's goroutine.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestWatchDeliversNewVersions(t *testing.T) {
	r := testutil.StartRedis(t)
	opts := watchOpts()
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := mustDial(t, r, opts)
	// Quiet stretches below are longer than HealthInterval: the watcher must
	// ping through them, not drop and re-make its subscription.
	defer func() {
		if strings.Contains(logs.String(), "lost") {
			t.Errorf("the subscription was lost on a healthy server:\n%s", logs)
		}
	}()
	v1 := publish(t, s, "f", "print(1)\n")

	t.Run("current record first when the caller has none", func(t *testing.T) {
		w := s.Watch(context.Background(), "f", spillway.Function{})
		defer w.Close()
		if got := next(t, w, 5*time.Second); got != v1 {
			t.Fatalf("first update = %+v, want %+v", got, v1)
		}
		quiet(t, w, 700*time.Millisecond) // pings go by; nothing repeats
	})

	w := s.Watch(context.Background(), "f", v1)
	defer w.Close()
	t.Run("nothing when the caller is current", func(t *testing.T) {
		quiet(t, w, 500*time.Millisecond)
	})
	t.Run("each publish arrives", func(t *testing.T) {
		for i := 2; i <= 4; i++ {
			want := publish(t, s, "f", fmt.Sprintf("print(%d)\n", i))
			if got := next(t, w, 5*time.Second); got != want {
				t.Fatalf("update = %+v, want %+v", got, want)
			}
		}
	})
	t.Run("other names are ignored", func(t *testing.T) {
		publish(t, s, "g", "print('g')\n")
		quiet(t, w, 500*time.Millisecond)
	})
}

func TestWatchSurvivesRedisRestart(t *testing.T) {
	r := testutil.StartRedis(t)
	opts := watchOpts()
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := mustDial(t, r, opts)
	defer func() {
		if !strings.Contains(logs.String(), "lost its subscription") {
			t.Errorf("the restart was not logged:\n%s", logs)
		}
	}()
	v1 := publish(t, s, "f", "print(1)\n")
	w := s.Watch(context.Background(), "f", v1)
	defer w.Close()
	quiet(t, w, 300*time.Millisecond) // subscribed

	// The test server keeps no data across a restart, so the next publish
	// is version 1 again, with other code: the watcher must not mistake it
	// for the record it already delivered.
	r.Stop()
	time.Sleep(500 * time.Millisecond) // the watcher retries against a dead server
	r.Start()

	// Publish may race the watcher's resubscribe; either the message or the
	// re-read must bring it, so one publish is enough.
	want := publishAfterRestart(t, s, "f", "print('after restart')\n")
	if got := next(t, w, 10*time.Second); got != want {
		t.Fatalf("update after restart = %+v, want %+v", got, want)
	}

	// And it keeps following after the restart.
	v := publish(t, s, "f", "print('later')\n")
	if got := next(t, w, 5*time.Second); got != v {
		t.Fatalf("update = %+v, want %+v", got, v)
	}
}

func TestWatchRereadsWhatWasWrittenWhileDisconnected(t *testing.T) {
	r := testutil.StartRedis(t)
	opts := watchOpts()
	// A long, fixed pause before the watcher resubscribes, so the write
	// below lands while it is away.
	opts.MinBackoff, opts.MaxBackoff = 3*time.Second, 3*time.Second
	s := mustDial(t, r, opts)
	v1 := publish(t, s, "f", "print(1)\n")
	w := s.Watch(context.Background(), "f", v1)
	defer w.Close()
	quiet(t, w, 300*time.Millisecond)

	r.Stop()
	r.Start()
	// Written with no message at all: only a re-read can find it.
	raw := rawClient(t, r)
	ctx := ctxT(t, 5*time.Second)
	code := "print('written while away')\n"
	if err := raw.HSet(ctx, registry.Key("f"), "code", code, "style", "script", "version", "9",
		"sha256", registry.SHA256(code), "updated_at", time.Now().UTC().Format(time.RFC3339)).Err(); err != nil {
		t.Fatal(err)
	}
	got := next(t, w, 10*time.Second)
	if got.Version != 9 || got.Code != code {
		t.Fatalf("update = %+v, want version 9 with the code written while away", got)
	}
}

func TestWatchPeriodicResyncSeesLegacySet(t *testing.T) {
	r := testutil.StartRedis(t)
	opts := watchOpts()
	opts.ResyncInterval = 200 * time.Millisecond
	s := mustDial(t, r, opts)
	w := s.Watch(context.Background(), "faas", spillway.Function{})
	defer w.Close()
	quiet(t, w, 300*time.Millisecond) // nothing there yet

	// The reference system's `SET faas <code>` announces nothing.
	raw := rawClient(t, r)
	raw.Set(ctxT(t, 5*time.Second), "faas", scriptCode, 0)
	got := next(t, w, 5*time.Second)
	if got.Style != spillway.StyleScript || got.Code != scriptCode || got.Version != 0 {
		t.Fatalf("update = %+v, want the legacy script", got)
	}
}

func TestWatchCoalescesForASlowReader(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, watchOpts())
	w := s.Watch(context.Background(), "f", spillway.Function{})
	defer w.Close()
	quiet(t, w, 300*time.Millisecond)

	var last spillway.Function
	for i := range 5 {
		last = publish(t, s, "f", fmt.Sprintf("print(%d)\n", i))
	}
	// Give the watcher time to see all five without anyone reading.
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		fn, err := s.Get(context.Background(), "f")
		if err == nil && fn.Version == last.Version || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := next(t, w, 5*time.Second); got.Version != last.Version {
		// An older one may still be pending if the watcher is slow; then the
		// newest must follow straight after.
		if got2 := next(t, w, 5*time.Second); got2.Version != last.Version {
			t.Fatalf("got v%d then v%d, want the latest v%d", got.Version, got2.Version, last.Version)
		}
	}
	quiet(t, w, 300*time.Millisecond)
}

func TestWatchStops(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, watchOpts())

	t.Run("Close", func(t *testing.T) {
		w := s.Watch(context.Background(), "f", spillway.Function{})
		time.Sleep(100 * time.Millisecond)
		closeWithin(t, w, 3*time.Second)
		if _, ok := <-w.Updates(); ok {
			t.Fatal("Updates still open after Close")
		}
		w.Close() // twice is fine
	})
	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		w := s.Watch(ctx, "f", spillway.Function{})
		time.Sleep(100 * time.Millisecond)
		cancel()
		select {
		case _, ok := <-w.Updates():
			if ok {
				t.Fatal("got an update, want Updates closed")
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Updates not closed after the context ended")
		}
	})
	t.Run("while Redis is down", func(t *testing.T) {
		w := s.Watch(context.Background(), "f", spillway.Function{})
		time.Sleep(100 * time.Millisecond)
		r.Stop()
		defer r.Start()
		time.Sleep(200 * time.Millisecond)
		closeWithin(t, w, 3*time.Second)
	})
}
