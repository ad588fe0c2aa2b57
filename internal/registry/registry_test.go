package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
)

const scriptCode = "import sys\nprint(int(sys.argv[1]) * 2)\n"
const handlerCode = "def handler(event, context):\n    return event['parameter']\n"

// mustDial connects a Store to r with short timeouts for tests.
func mustDial(t *testing.T, r *testutil.Redis, opts registry.Options) *registry.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := registry.Dial(ctx, r.Addr, opts)
	if err != nil {
		t.Fatalf("Dial(%s): %v", r.Addr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawClient is an independent client to check what is really in Redis.
func rawClient(t *testing.T, r *testutil.Redis) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestPublishWritesRecordAndAnnounces(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 20*time.Second)

	sub := raw.Subscribe(ctx, registry.UpdatesChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // subscription confirmed
		t.Fatalf("subscribe: %v", err)
	}
	msgs := sub.Channel()

	tests := []struct {
		name        string
		in          spillway.Function
		wantVersion int64
		wantHandler string
	}{
		{"first script publish", spillway.Function{Name: "fib", Code: scriptCode, Style: spillway.StyleScript}, 1, ""},
		{"second publish bumps version", spillway.Function{Name: "fib", Code: scriptCode + "# v2\n", Style: spillway.StyleScript}, 2, ""},
		{"handler gets default handler name", spillway.Function{Name: "fib", Code: handlerCode, Style: spillway.StyleHandler}, 3, "handler"},
		{"named handler kept", spillway.Function{Name: "other", Code: "def main(e, c):\n    return 1\n", Style: spillway.StyleHandler, Handler: "main"}, 1, "main"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now().UTC().Truncate(time.Second)
			got, err := s.Publish(ctx, tc.in)
			if err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if got.Version != tc.wantVersion {
				t.Errorf("version = %d, want %d", got.Version, tc.wantVersion)
			}
			wantSHA := registry.SHA256(tc.in.Code)
			if got.SHA256 != wantSHA {
				t.Errorf("sha256 = %s, want %s", got.SHA256, wantSHA)
			}

			h, err := raw.HGetAll(ctx, registry.Key(tc.in.Name)).Result()
			if err != nil {
				t.Fatalf("HGETALL: %v", err)
			}
			want := map[string]string{
				"code":       tc.in.Code,
				"style":      string(tc.in.Style),
				"handler":    tc.wantHandler,
				"runtime":    spillway.DefaultRuntime,
				"sha256":     wantSHA,
				"version":    strconv.FormatInt(tc.wantVersion, 10),
				"updated_at": got.UpdatedAt.Format(time.RFC3339),
			}
			if diff := mapDiff(want, h); diff != "" {
				t.Errorf("stored hash (-want +got):\n%s", diff)
			}
			at, err := time.Parse(time.RFC3339, h["updated_at"])
			if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
				t.Errorf("updated_at = %q (%v), want RFC 3339 near now", h["updated_at"], err)
			}

			select {
			case m := <-msgs:
				if m.Channel != registry.UpdatesChannel || m.Payload != tc.in.Name {
					t.Errorf("message = %s %q, want %s %q", m.Channel, m.Payload, registry.UpdatesChannel, tc.in.Name)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no message on " + registry.UpdatesChannel)
			}

			back, err := s.Get(ctx, tc.in.Name)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if back != got {
				t.Errorf("Get = %+v\nwant %+v", back, got)
			}
		})
	}
}

func TestPublishRejectsBadRecords(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 10*time.Second)
	tests := []struct {
		name string
		fn   spillway.Function
	}{
		{"empty name", spillway.Function{Code: scriptCode, Style: spillway.StyleScript}},
		{"name with colon", spillway.Function{Name: "a:b", Code: scriptCode, Style: spillway.StyleScript}},
		{"no style", spillway.Function{Name: "f", Code: scriptCode}},
		{"empty code", spillway.Function{Name: "f", Style: spillway.StyleScript}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Publish(ctx, tc.fn); err == nil {
				t.Fatal("Publish succeeded, want an error")
			}
		})
	}
	if n := raw.DBSize(ctx).Val(); n != 0 {
		t.Errorf("DBSIZE = %d after rejected publishes, want 0", n)
	}
}

func TestGet(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 10*time.Second)

	// What the reference system wrote: SET faas <code>.
	raw.Set(ctx, "faas", scriptCode, 0)
	raw.Set(ctx, "emptylegacy", "", 0)
	raw.HSet(ctx, registry.Key("badstyle"), "code", "x = 1\n", "style", "lambda", "version", "1")
	raw.HSet(ctx, registry.Key("badversion"), "code", "x = 1\n", "style", "script", "version", "one")
	raw.HSet(ctx, registry.Key("nocode"), "style", "script", "version", "1")
	raw.LPush(ctx, "alist", "x")
	// A hash without sha256/runtime (written by hand) still reads.
	raw.HSet(ctx, registry.Key("byhand"), "code", handlerCode, "style", "handler", "version", "7")

	t.Run("legacy plain key is a script", func(t *testing.T) {
		fn, err := s.Get(ctx, "faas")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		want := spillway.Function{Name: "faas", Code: scriptCode, Style: spillway.StyleScript,
			Runtime: spillway.DefaultRuntime, SHA256: registry.SHA256(scriptCode)}
		if fn != want {
			t.Errorf("Get = %+v\nwant %+v", fn, want)
		}
	})
	t.Run("hash wins over legacy key", func(t *testing.T) {
		if _, err := s.Publish(ctx, spillway.Function{Name: "faas", Code: handlerCode, Style: spillway.StyleHandler}); err != nil {
			t.Fatal(err)
		}
		fn, err := s.Get(ctx, "faas")
		if err != nil || fn.Style != spillway.StyleHandler || fn.Version != 1 {
			t.Errorf("Get = %+v, %v; want the hashed handler record v1", fn, err)
		}
	})
	t.Run("hand-written hash", func(t *testing.T) {
		fn, err := s.Get(ctx, "byhand")
		if err != nil {
			t.Fatal(err)
		}
		if fn.SHA256 != registry.SHA256(handlerCode) || fn.Version != 7 || fn.Runtime != spillway.DefaultRuntime || fn.HandlerName() != "handler" {
			t.Errorf("Get = %+v", fn)
		}
	})

	errCases := []struct {
		name string
		want error
	}{
		{"missing", spillway.ErrFunctionNotFound},
		{"emptylegacy", spillway.ErrFunctionNotFound},
		{"badstyle", registry.ErrMalformedRecord},
		{"badversion", registry.ErrMalformedRecord},
		{"nocode", registry.ErrMalformedRecord},
	}
	for _, tc := range errCases {
		t.Run("error "+tc.name, func(t *testing.T) {
			_, err := s.Get(ctx, tc.name)
			if !errors.Is(err, tc.want) {
				t.Errorf("Get(%q) error = %v, want %v", tc.name, err, tc.want)
			}
		})
	}
	t.Run("error wrong type", func(t *testing.T) {
		_, err := s.Get(ctx, "alist")
		if err == nil || errors.Is(err, spillway.ErrFunctionNotFound) {
			t.Errorf("Get(alist) error = %v, want a WRONGTYPE error", err)
		}
	})
}

func TestList(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 20*time.Second)

	raw.Set(ctx, "faas", scriptCode, 0) // legacy: not listed
	// Enough unrelated keys that SCAN takes several rounds.
	for i := range 600 {
		raw.Set(ctx, fmt.Sprintf("noise:%d", i), "x", 0)
	}
	raw.Set(ctx, registry.Key("stringnotahash"), "x", 0)
	want := map[string]int64{"alpha": 2, "beta": 1, "gamma": 3}
	for name, n := range want {
		for range n {
			if _, err := s.Publish(ctx, spillway.Function{Name: name, Code: scriptCode, Style: spillway.StyleScript}); err != nil {
				t.Fatal(err)
			}
		}
	}
	fns, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var got []string
	for _, fn := range fns {
		got = append(got, fmt.Sprintf("%s:%d:%s", fn.Name, fn.Version, fn.Style))
		if fn.Code != "" || fn.SHA256 != registry.SHA256(scriptCode) || fn.UpdatedAt.IsZero() {
			t.Errorf("listed %+v: want no code, the stored sha256 and updated_at", fn)
		}
	}
	if g, w := strings.Join(got, " "), "alpha:2:script beta:1:script gamma:3:script"; g != w {
		t.Errorf("List = %s, want %s", g, w)
	}
}

func TestConcurrentPublishesGetDistinctVersions(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	ctx := ctxT(t, 30*time.Second)
	const n = 50
	versions := make(chan int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			fn, err := s.Publish(ctx, spillway.Function{Name: "f", Code: fmt.Sprintf("print(%d)\n", i), Style: spillway.StyleScript})
			if err != nil {
				t.Errorf("Publish %d: %v", i, err)
				return
			}
			versions <- fn.Version
		})
	}
	wg.Wait()
	close(versions)
	seen := map[int64]bool{}
	for v := range versions {
		if seen[v] {
			t.Errorf("version %d assigned twice", v)
		}
		seen[v] = true
	}
	for v := int64(1); v <= n; v++ {
		if !seen[v] {
			t.Errorf("version %d never assigned", v)
		}
	}
	fn, err := s.Get(ctx, "f")
	if err != nil || fn.Version != n {
		t.Fatalf("Get = %+v, %v; want version %d", fn, err, n)
	}
}

func TestDialUnreachableIsBoundedAndNamesAddress(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	start := time.Now()
	_, err := registry.Dial(context.Background(), addr, registry.Options{ConnectTimeout: 700 * time.Millisecond})
	took := time.Since(start)
	if err == nil {
		t.Fatal("Dial succeeded against a closed port")
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q should name %s and the cause", err, addr)
	}
	if took > 2*time.Second {
		t.Errorf("Dial took %s, want about 700ms", took)
	}

	// The caller's context bounds it too.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := registry.Dial(ctx, addr, registry.Options{ConnectTimeout: time.Minute}); err == nil {
		t.Fatal("Dial succeeded against a closed port")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Dial ignored its context: took %s", took)
	}
}

// TestDialWithPassword: a Redis that requires a password serves a store
// that has it and refuses, at once and with a clear error, one that does
// not. Protection off: a Redis without a password serves anyone.
func TestDialWithPassword(t *testing.T) {
	const pw = "s3cret-pw"
	r := testutil.StartRedisAuth(t, pw)
	ctx := context.Background()
	s, err := registry.Dial(ctx, r.Addr, registry.Options{Password: pw, ConnectTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Dial with the password: %v", err)
	}
	if _, err := s.Publish(ctx, spillway.Function{Name: "pw", Code: "print(1)\n", Style: spillway.StyleScript}); err != nil {
		t.Errorf("Publish with the password: %v", err)
	}
	s.Close()
	for _, wrong := range []string{"", "wrong"} {
		start := time.Now()
		_, err := registry.Dial(ctx, r.Addr, registry.Options{Password: wrong, ConnectTimeout: 30 * time.Second})
		if err == nil {
			t.Fatalf("Dial with password %q succeeded", wrong)
		}
		if !strings.Contains(err.Error(), "REDIS_PASSWORD") || !strings.Contains(err.Error(), r.Addr) || strings.Contains(err.Error(), pw) {
			t.Errorf("error %q should name REDIS_PASSWORD and %s, and not the password", err, r.Addr)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("Dial with password %q retried for %v; an auth failure is final", wrong, took)
		}
	}
	open := testutil.StartRedis(t)
	s, err = registry.Dial(ctx, open.Addr, registry.Options{ConnectTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("protection off: Dial without a password to an open Redis: %v", err)
	}
	if _, err := s.Publish(ctx, spillway.Function{Name: "pw", Code: "print(1)\n", Style: spillway.StyleScript}); err != nil {
		t.Errorf("protection off: Publish: %v", err)
	}
	s.Close()
}

func TestDialRetriesUntilServerStarts(t *testing.T) {
	r := testutil.StartRedis(t)
	r.Stop()
	done := make(chan error, 1)
	go func() {
		s, err := registry.Dial(context.Background(), r.Addr, registry.Options{ConnectTimeout: 10 * time.Second})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	r.Start()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Dial did not return")
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"faas", true}, {"fib-2_x", true}, {"A1", true}, {strings.Repeat("a", registry.MaxNameLen), true},
		{"", false}, {"-lead", false}, {"_lead", false}, {"a:b", false}, {"a b", false}, {"a/b", false},
		{"é", false}, {strings.Repeat("a", registry.MaxNameLen+1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := registry.ValidateName(tc.name); (err == nil) != tc.ok {
				t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}

func mapDiff(want, got map[string]string) string {
	var b strings.Builder
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			fmt.Fprintf(&b, "-%s: %q\n+%s: %q\n", k, w, k, g)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "+%s: %q (unexpected)\n", k, g)
		}
	}
	return b.String()
}

func TestIdempotentFlagRoundTrips(t *testing.T) {
	// addfaas --idempotent writes field idempotent=1; a later publish
	// without it removes the field, so the function runs at most once again.
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 20*time.Second)
	for i, idem := range []bool{true, false} {
		fn := spillway.Function{Name: "pay", Code: scriptCode + fmt.Sprintf("# %d\n", i), Style: spillway.StyleScript, Idempotent: idem}
		if _, err := s.Publish(ctx, fn); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "pay")
		if err != nil {
			t.Fatal(err)
		}
		field, _ := raw.HGet(ctx, registry.Key("pay"), "idempotent").Result()
		if got.Idempotent != idem || (field == "1") != idem {
			t.Errorf("published idempotent=%v: read back %v, field %q", idem, got.Idempotent, field)
		}
	}
}

func TestReuseProcessFlagRoundTrips(t *testing.T) {
	// addfaas --reuse-process writes field reuse_process=1, which Get and
	// List read back; a later publish without it removes the field.
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 20*time.Second)
	for i, reuse := range []bool{true, false} {
		fn := spillway.Function{Name: "fast", Code: scriptCode + fmt.Sprintf("# %d\n", i), Style: spillway.StyleScript, ReuseProcess: reuse}
		if _, err := s.Publish(ctx, fn); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "fast")
		if err != nil {
			t.Fatal(err)
		}
		listed, err := s.List(ctx)
		if err != nil || len(listed) != 1 {
			t.Fatalf("List: %v, %v", listed, err)
		}
		field, _ := raw.HGet(ctx, registry.Key("fast"), "reuse_process").Result()
		if got.ReuseProcess != reuse || listed[0].ReuseProcess != reuse || (field == "1") != reuse || got.Idempotent {
			t.Errorf("published reuse_process=%v: Get %v, List %v, field %q", reuse, got.ReuseProcess, listed[0].ReuseProcess, field)
		}
	}
	if err := raw.HSet(ctx, registry.Key("fast"), "reuse_process", "maybe").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "fast"); !errors.Is(err, registry.ErrMalformedRecord) {
		t.Errorf("reuse_process=maybe: %v, want ErrMalformedRecord", err)
	}
}
