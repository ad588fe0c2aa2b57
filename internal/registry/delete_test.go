package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
)

func TestDelete(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 30*time.Second)

	sub := raw.Subscribe(ctx, registry.UpdatesChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	msgs := sub.Channel()
	announced := func(t *testing.T, name string) {
		t.Helper()
		select {
		case m := <-msgs:
			if m.Payload != name {
				t.Errorf("message %q, want %q", m.Payload, name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no message for %s", name)
		}
	}

	t.Run("returns the record, removes it and announces it", func(t *testing.T) {
		pub, err := s.Publish(ctx, spillway.Function{Name: "gone", Code: handlerCode, Style: spillway.StyleHandler,
			Settings: spillway.Settings{Max: intp(3)}})
		if err != nil {
			t.Fatal(err)
		}
		announced(t, "gone")
		del, err := s.Delete(ctx, "gone")
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if del.Name != "gone" || del.Version != pub.Version || del.Code != handlerCode || del.Settings.String() != "max=3" {
			t.Errorf("Delete returned %+v, want the published record %+v", del, pub)
		}
		announced(t, "gone")
		if n := raw.Exists(ctx, registry.Key("gone")).Val(); n != 0 {
			t.Errorf("record still in Redis")
		}
		if _, err := s.Get(ctx, "gone"); !errors.Is(err, spillway.ErrFunctionNotFound) {
			t.Errorf("Get after Delete: %v, want ErrFunctionNotFound", err)
		}
	})
	t.Run("the legacy key of the same name goes too", func(t *testing.T) {
		raw.Set(ctx, "both", scriptCode, 0)
		if _, err := s.Publish(ctx, spillway.Function{Name: "both", Code: handlerCode, Style: spillway.StyleHandler}); err != nil {
			t.Fatal(err)
		}
		announced(t, "both")
		if _, err := s.Delete(ctx, "both"); err != nil {
			t.Fatal(err)
		}
		announced(t, "both")
		if _, err := s.Get(ctx, "both"); !errors.Is(err, spillway.ErrFunctionNotFound) {
			t.Errorf("Get after Delete: %v, want ErrFunctionNotFound (not the legacy key)", err)
		}
	})
	t.Run("a legacy key alone", func(t *testing.T) {
		raw.Set(ctx, "old", scriptCode, 0)
		del, err := s.Delete(ctx, "old")
		if err != nil || del.Code != scriptCode || del.Style != spillway.StyleScript {
			t.Fatalf("Delete = %+v, %v; want the legacy script", del, err)
		}
		announced(t, "old")
		if n := raw.Exists(ctx, "old").Val(); n != 0 {
			t.Errorf("legacy key still in Redis")
		}
	})
	t.Run("an unreadable record is deleted all the same", func(t *testing.T) {
		raw.HSet(ctx, registry.Key("broken"), "code", "x = 1\n", "style", "lambda")
		del, err := s.Delete(ctx, "broken")
		if err != nil || del.Name != "broken" {
			t.Fatalf("Delete = %+v, %v", del, err)
		}
		announced(t, "broken")
		if n := raw.Exists(ctx, registry.Key("broken")).Val(); n != 0 {
			t.Errorf("record still in Redis")
		}
	})
	t.Run("unknown name", func(t *testing.T) {
		raw.LPush(ctx, "alist", "x") // not a legacy record: left alone
		for _, name := range []string{"never", "alist"} {
			if _, err := s.Delete(ctx, name); !errors.Is(err, spillway.ErrFunctionNotFound) {
				t.Errorf("Delete(%s) = %v, want ErrFunctionNotFound", name, err)
			}
		}
		if n := raw.Exists(ctx, "alist").Val(); n != 1 {
			t.Errorf("Delete removed a list that is no function")
		}
		select {
		case m := <-msgs:
			t.Errorf("message %q for a delete that removed nothing", m.Payload)
		case <-time.After(300 * time.Millisecond):
		}
	})
	t.Run("bad name", func(t *testing.T) {
		if _, err := s.Delete(ctx, "a b"); err == nil || errors.Is(err, spillway.ErrFunctionNotFound) {
			t.Errorf("Delete(\"a b\") = %v, want a name error", err)
		}
	})
	t.Run("published again, it starts at version 1", func(t *testing.T) {
		fn := publish(t, s, "gone", scriptCode)
		announced(t, "gone")
		if fn.Version != 1 {
			t.Errorf("version %d, want 1", fn.Version)
		}
	})
}

func TestVersionWatcherSeesNothingOnDelete(t *testing.T) {
	// A deletion is announced with the function's name, like a publish: a
	// VersionWatcher of that name re-reads, finds no record and delivers
	// nothing; what it delivers next is the next publish.
	r := testutil.StartRedis(t)
	s := mustDial(t, r, watchOpts())
	v1 := publish(t, s, "f", "print(1)\n")
	w := s.Watch(context.Background(), "f", v1)
	defer w.Close()
	quiet(t, w, 300*time.Millisecond)

	if _, err := s.Delete(ctxT(t, 5*time.Second), "f"); err != nil {
		t.Fatal(err)
	}
	quiet(t, w, 700*time.Millisecond)
	v := publish(t, s, "f", "print('again')\n")
	if got := next(t, w, 5*time.Second); got != v {
		t.Fatalf("update = %+v, want %+v", got, v)
	}
}
