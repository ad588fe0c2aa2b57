package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
)

func intp(n int) *int { return &n }

// settingsString prints settings by value, for comparisons and messages.
func settingsString(s spillway.Settings) string {
	opt := func(p *int) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf("min=%s max=%s concurrency=%s timeout=%s", opt(s.Min), opt(s.Max), opt(s.Concurrency), s.Timeout)
}

func TestSettingsRoundTrip(t *testing.T) {
	// Each publish stores exactly the settings it was given, in the fields
	// min, max, concurrency and timeout (a Go duration); a setting left out
	// is no field at all, even when an earlier version had it. Get and List
	// read back what was published.
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 30*time.Second)

	tests := []struct {
		name       string
		in         spillway.Settings
		wantFields map[string]string
	}{
		{"all set", spillway.Settings{Min: intp(1), Max: intp(4), Concurrency: intp(2), Timeout: 45 * time.Second},
			map[string]string{"min": "1", "max": "4", "concurrency": "2", "timeout": "45s"}},
		{"some unset: their fields go", spillway.Settings{Max: intp(3), Timeout: 90 * time.Second},
			map[string]string{"max": "3", "timeout": "1m30s"}},
		{"min 0 (scale to zero) is set, not unset", spillway.Settings{Min: intp(0)},
			map[string]string{"min": "0"}},
		{"none", spillway.Settings{}, map[string]string{}},
		{"placement constraints, one a line", spillway.Settings{Constraints: "node.labels.gpu==true\nnode.role!=manager"},
			map[string]string{"constraints": "node.labels.gpu==true\nnode.role!=manager"}},
		{"the limits", spillway.Settings{Min: intp(7), Max: intp(7), Concurrency: intp(256), Timeout: 15 * time.Minute},
			map[string]string{"min": "7", "max": "7", "concurrency": "256", "timeout": "15m0s"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fn := spillway.Function{Name: "f", Code: scriptCode + fmt.Sprintf("# %d\n", i), Style: spillway.StyleScript, Settings: tc.in}
			pub, err := s.Publish(ctx, fn)
			if err != nil {
				t.Fatalf("Publish: %v", err)
			}
			h, err := raw.HGetAll(ctx, registry.Key("f")).Result()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, f := range []string{"min", "max", "concurrency", "timeout", "constraints"} {
				if v, ok := h[f]; ok {
					got[f] = v
				}
			}
			if diff := mapDiff(tc.wantFields, got); diff != "" {
				t.Errorf("settings fields (-want +got):\n%s", diff)
			}

			back, err := s.Get(ctx, "f")
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			listed, err := s.List(ctx)
			if err != nil || len(listed) != 1 {
				t.Fatalf("List = %v, %v", listed, err)
			}
			want := settingsString(tc.in)
			for what, got := range map[string]spillway.Settings{"Publish": pub.Settings, "Get": back.Settings, "List": listed[0].Settings} {
				if g := settingsString(got); g != want {
					t.Errorf("%s settings = %s, want %s", what, g, want)
				}
			}
		})
	}
}

func TestPublishRejectsBadSettings(t *testing.T) {
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 20*time.Second)

	tests := []struct {
		name string
		in   spillway.Settings
		want string // in the error: the field, its value and the rule
	}{
		{"negative min", spillway.Settings{Min: intp(-1)}, "min -1: must be between 0 and 1000"},
		{"max 0", spillway.Settings{Max: intp(0)}, "max 0: must be between 1 and 1000"},
		{"max below min", spillway.Settings{Min: intp(3), Max: intp(2)}, "max 2: must be at least min (3)"},
		{"min over 1000", spillway.Settings{Min: intp(1001)}, "min 1001: must be between 0 and 1000"},
		{"max over 1000", spillway.Settings{Max: intp(5000)}, "max 5000: must be between 1 and 1000"},
		{"a constraint without an operator", spillway.Settings{Constraints: "gpu"}, `constraints "gpu": want one placement constraint such as node.labels.gpu==true`},
		{"concurrency 0", spillway.Settings{Concurrency: intp(0)}, "concurrency 0: must be between 1 and 256"},
		{"concurrency 257", spillway.Settings{Concurrency: intp(257)}, "concurrency 257: must be between 1 and 256"},
		{"negative timeout", spillway.Settings{Timeout: -time.Second}, "timeout -1s: must be positive and at most 15m"},
		{"timeout over 15m", spillway.Settings{Timeout: 15*time.Minute + time.Second}, "timeout 15m1s: must be positive and at most 15m"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Publish(ctx, spillway.Function{Name: "f", Code: scriptCode, Style: spillway.StyleScript, Settings: tc.in})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"f"`) {
				t.Errorf("Publish error = %v, want one naming the function and saying %q", err, tc.want)
			}
		})
	}
	if n := raw.DBSize(ctx).Val(); n != 0 {
		t.Errorf("DBSIZE = %d after rejected publishes, want 0", n)
	}
}

func TestCheckSettingsReportsEveryProblem(t *testing.T) {
	errs := registry.CheckSettings(spillway.Settings{Min: intp(-2), Concurrency: intp(1000), Timeout: time.Hour})
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	if got, want := strings.Join(fields, ","), "min,concurrency,timeout"; got != want {
		t.Errorf("fields = %s, want %s (%v)", got, want, errs)
	}
	if errs := registry.CheckSettings(spillway.Settings{}); len(errs) != 0 {
		t.Errorf("unset settings: %v, want no problem", errs)
	}
}

func TestBadStoredSettings(t *testing.T) {
	// A record edited by hand with a bad setting is refused by Get and List
	// with an error that names the function and the field; a bare number of
	// seconds is read as a timeout.
	r := testutil.StartRedis(t)
	s := mustDial(t, r, registry.Options{})
	raw := rawClient(t, r)
	ctx := ctxT(t, 20*time.Second)

	t.Run("bare seconds", func(t *testing.T) {
		raw.HSet(ctx, registry.Key("secs"), "code", scriptCode, "style", "script", "version", "1", "timeout", "30")
		fn, err := s.Get(ctx, "secs")
		if err != nil || fn.Settings.Timeout != 30*time.Second {
			t.Errorf("Get = %s, %v; want timeout 30s", settingsString(fn.Settings), err)
		}
		raw.Del(ctx, registry.Key("secs"))
	})

	tests := []struct {
		field, value, want string
	}{
		{"min", "two", `min "two" is not an integer`},
		{"max", "0", "max 0: must be between 1 and 1000"},
		{"concurrency", "1.5", `concurrency "1.5" is not an integer`},
		{"concurrency", "300", "concurrency 300: must be between 1 and 256"},
		{"timeout", "soon", `timeout "soon": not a duration`},
		{"timeout", "0s", `timeout "0s": must be positive`},
		{"timeout", "20m", "timeout 20m0s: must be positive and at most 15m"},
	}
	for _, tc := range tests {
		t.Run(tc.field+"="+tc.value, func(t *testing.T) {
			key := registry.Key("bad")
			raw.HSet(ctx, key, "code", scriptCode, "style", "script", "version", "1", tc.field, tc.value)
			defer raw.Del(ctx, key)
			_, err := s.Get(ctx, "bad")
			if !errors.Is(err, registry.ErrMalformedRecord) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), key) {
				t.Errorf("Get error = %v, want ErrMalformedRecord naming %s and saying %q", err, key, tc.want)
			}
			_, err = s.List(ctx)
			if !errors.Is(err, registry.ErrMalformedRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("List error = %v, want ErrMalformedRecord saying %q", err, tc.want)
			}
		})
	}
}
