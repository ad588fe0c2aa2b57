package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// nextChange waits for the set watcher's next change.
func nextChange(t *testing.T, w *registry.SetWatcher, within time.Duration) registry.Change {
	t.Helper()
	return receive(t, w.Changes(), within)
}

// quietSet asserts the set watcher delivers nothing for d.
func quietSet(t *testing.T, w *registry.SetWatcher, d time.Duration) {
	t.Helper()
	silent(t, w.Changes(), d, describe)
}

func describe(c registry.Change) string {
	if c.Deleted {
		return fmt.Sprintf("%s v%d deleted", c.Function.Name, c.Function.Version)
	}
	return fmt.Sprintf("%s v%d", c.Function.Name, c.Function.Version)
}

// wantPublished checks that c is fn's publish, whole record with its code.
func wantPublished(t *testing.T, c registry.Change, fn spillway.Function) {
	t.Helper()
	if c.Deleted || c.Function.Name != fn.Name || c.Function.Version != fn.Version || c.Function.Code != fn.Code ||
		c.Function.SHA256 != fn.SHA256 || c.Function.Settings.String() != fn.Settings.String() {
		t.Fatalf("change = %s %+v, want the publish %+v", describe(c), c.Function, fn)
	}
}

func TestWatchAllDeliversTheSetAndEachChange(t *testing.T) {
	r := testutil.StartRedis(t)
	opts := watchOpts()
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := mustDial(t, r, opts)
	raw := rawClient(t, r)
	ctx := ctxT(t, time.Minute)
	defer func() {
		if strings.Contains(logs.String(), "lost") {
			t.Errorf("the subscription was lost on a healthy server:\n%s", logs)
		}
	}()

	b, err := s.Publish(ctx, spillway.Function{Name: "b", Code: handlerCode, Style: spillway.StyleHandler,
		Settings: spillway.Settings{Min: intp(0), Timeout: 45 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	a := publish(t, s, "a", "print('a')\n")
	raw.Set(ctx, "legacy", scriptCode, 0) // legacy plain keys are not in the set

	w := s.WatchAll(context.Background())
	defer w.Close()
	t.Run("every existing function first, whole", func(t *testing.T) {
		wantPublished(t, nextChange(t, w, 5*time.Second), a)
		wantPublished(t, nextChange(t, w, 5*time.Second), b)
		quietSet(t, w, 700*time.Millisecond) // pings go by; nothing repeats
	})
	t.Run("a new function", func(t *testing.T) {
		c := publish(t, s, "c", "print('c')\n")
		wantPublished(t, nextChange(t, w, 5*time.Second), c)
	})
	t.Run("a new version, with other settings", func(t *testing.T) {
		a2, err := s.Publish(ctx, spillway.Function{Name: "a", Code: "print('a2')\n", Style: spillway.StyleScript,
			Settings: spillway.Settings{Concurrency: intp(4)}})
		if err != nil {
			t.Fatal(err)
		}
		wantPublished(t, nextChange(t, w, 5*time.Second), a2)
	})
	t.Run("versions of one name arrive in order", func(t *testing.T) {
		var last spillway.Function
		for i := range 4 {
			last = publish(t, s, "a", fmt.Sprintf("print(%d)\n", i))
		}
		var prev int64
		for prev < last.Version {
			c := nextChange(t, w, 5*time.Second)
			if c.Deleted || c.Function.Name != "a" || c.Function.Version <= prev {
				t.Fatalf("change %s after v%d", describe(c), prev)
			}
			prev = c.Function.Version
		}
	})
	t.Run("a deletion", func(t *testing.T) {
		if _, err := s.Delete(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		c := nextChange(t, w, 5*time.Second)
		if !c.Deleted || c.Function.Name != "b" || c.Function.Version != b.Version {
			t.Fatalf("change = %s, want b v%d deleted", describe(c), b.Version)
		}
		quietSet(t, w, 300*time.Millisecond)
	})
	t.Run("published again after its deletion", func(t *testing.T) {
		b2, err := s.Publish(ctx, spillway.Function{Name: "b", Code: handlerCode, Style: spillway.StyleHandler})
		if err != nil {
			t.Fatal(err)
		}
		wantPublished(t, nextChange(t, w, 5*time.Second), b2)
	})
	t.Run("noise on the channel is ignored", func(t *testing.T) {
		raw.Publish(ctx, registry.UpdatesChannel, "not a name!")
		raw.Publish(ctx, registry.UpdatesChannel, "nosuchfunction")
		raw.Publish(ctx, registry.UpdatesChannel, "a") // nothing new for a
		quietSet(t, w, 500*time.Millisecond)
	})
	t.Run("an unreadable record is skipped", func(t *testing.T) {
		raw.HSet(ctx, registry.Key("bad"), "code", "x = 1\n", "style", "script", "version", "1", "max", "0")
		raw.Publish(ctx, registry.UpdatesChannel, "bad")
		quietSet(t, w, 500*time.Millisecond)
		if !strings.Contains(logs.String(), "max 0") {
			t.Errorf("the unreadable record was not logged:\n%s", logs)
		}
	})
}

func TestWatchAllResyncsAfterRedisRestart(t *testing.T) {
	r := testutil.StartRedis(t)
	opts := watchOpts()
	// A long, fixed pause before the watcher resubscribes, so the writes
	// below land while it is away.
	opts.MinBackoff, opts.MaxBackoff = 3*time.Second, 3*time.Second
	s := mustDial(t, r, opts)
	publish(t, s, "kept", "print(1)\n")
	publish(t, s, "lost", "print(2)\n")
	w := s.WatchAll(context.Background())
	defer w.Close()
	for range 2 {
		nextChange(t, w, 5*time.Second)
	}
	quietSet(t, w, 300*time.Millisecond)

	// The test server keeps nothing across a restart: "lost" is deleted
	// while the watcher is away, and "kept" comes back as another version
	// (its message goes nowhere: only the re-read can find it).
	r.Stop()
	r.Start()
	kept := publishAfterRestart(t, s, "kept", "print('while away')\n")

	got := map[string]registry.Change{}
	for len(got) < 2 {
		c := nextChange(t, w, 15*time.Second)
		if _, dup := got[c.Function.Name]; dup {
			t.Fatalf("second change for %s: %s", c.Function.Name, describe(c))
		}
		got[c.Function.Name] = c
	}
	wantPublished(t, got["kept"], kept)
	if c := got["lost"]; !c.Deleted {
		t.Errorf("lost: %s, want a deletion", describe(c))
	}
	quietSet(t, w, 300*time.Millisecond)

	// And it keeps following.
	v := publish(t, s, "later", "print('later')\n")
	wantPublished(t, nextChange(t, w, 5*time.Second), v)
}

func TestWatchAllSlowReader(t *testing.T) {
	// More changes than the watcher buffers: it waits for the reader, and
	// Close (or the context) still stops it at once.
	r := testutil.StartRedis(t)
	s := mustDial(t, r, watchOpts())
	const n = 40
	for i := range n {
		publish(t, s, fmt.Sprintf("f%02d", i), "print(1)\n")
	}

	t.Run("everything arrives, in name order", func(t *testing.T) {
		w := s.WatchAll(context.Background())
		defer w.Close()
		time.Sleep(300 * time.Millisecond) // let it fill its buffer and wait
		for i := range n {
			if c := nextChange(t, w, 5*time.Second); c.Function.Name != fmt.Sprintf("f%02d", i) {
				t.Fatalf("change %d = %s", i, describe(c))
			}
		}
		quietSet(t, w, 300*time.Millisecond)
	})
	t.Run("Close while it waits for the reader", func(t *testing.T) {
		w := s.WatchAll(context.Background())
		nextChange(t, w, 5*time.Second) // started
		time.Sleep(200 * time.Millisecond)
		closeWithin(t, w, 5*time.Second)
		for range w.Changes() { // what was buffered, then closed
		}
		w.Close() // twice is fine
	})
	t.Run("context ends while it waits for the reader", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		w := s.WatchAll(ctx)
		defer w.Close()
		nextChange(t, w, 5*time.Second)
		time.Sleep(200 * time.Millisecond)
		cancel()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-w.Changes():
				if !ok {
					return
				}
			case <-deadline:
				t.Fatal("Changes not closed after the context ended")
			}
		}
	})
	t.Run("Close while Redis is down", func(t *testing.T) {
		w := s.WatchAll(context.Background())
		nextChange(t, w, 5*time.Second)
		r.Stop()
		defer r.Start()
		time.Sleep(200 * time.Millisecond)
		closeWithin(t, w, 5*time.Second)
	})
}

func TestWatchAllFollowsTheLegacyKeysAskedFor(t *testing.T) {
	// lb's default function may be published the reference system's way,
	// `SET faas <code>`, which announces nothing: the watcher reads it as Get
	// does, at start and on each periodic re-read. Other plain keys are not
	// functions.
	r := testutil.StartRedis(t)
	opts := watchOpts()
	opts.ResyncInterval = 200 * time.Millisecond
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := mustDial(t, r, opts)
	raw := rawClient(t, r)
	ctx := ctxT(t, time.Minute)
	raw.Set(ctx, "faas", scriptCode, 0)
	raw.Set(ctx, "other", "print('not followed')\n", 0)
	raw.LPush(ctx, "alist", "x") // followed, but no function: logged, and no reconnect
	defer func() {
		if strings.Contains(logs.String(), "lost") {
			t.Errorf("the subscription was dropped:\n%s", logs)
		}
	}()

	w := s.WatchAll(context.Background(), "faas", "alist")
	defer w.Close()
	legacy := func(code string) spillway.Function {
		return spillway.Function{Name: "faas", Code: code, Style: spillway.StyleScript, SHA256: registry.SHA256(code)}
	}
	wantPublished(t, nextChange(t, w, 5*time.Second), legacy(scriptCode))
	quietSet(t, w, 700*time.Millisecond) // re-reads go by; nothing repeats

	newCode := "print('set again')\n"
	raw.Set(ctx, "faas", newCode, 0)
	wantPublished(t, nextChange(t, w, 5*time.Second), legacy(newCode))

	hashed := publish(t, s, "faas", "print('published')\n") // the hash wins over the plain key
	wantPublished(t, nextChange(t, w, 5*time.Second), hashed)

	if _, err := s.Delete(ctx, "faas"); err != nil { // both go
		t.Fatal(err)
	}
	if c := nextChange(t, w, 5*time.Second); !c.Deleted || c.Function.Name != "faas" {
		t.Fatalf("change = %s, want faas deleted", describe(c))
	}
	quietSet(t, w, 700*time.Millisecond)
}
