package spillway_test

import (
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

func TestSettingsString(t *testing.T) {
	intp := func(n int) *int { return &n }
	tests := []struct {
		name string
		in   spillway.Settings
		want string
	}{
		{"nothing set", spillway.Settings{}, "defaults"},
		{"min 0 is set", spillway.Settings{Min: intp(0)}, "min=0"},
		{"everything", spillway.Settings{Min: intp(1), Max: intp(4), Concurrency: intp(2), Timeout: 45 * time.Second}, "min=1 max=4 concurrency=2 timeout=45s"},
		{"timeout only", spillway.Settings{Timeout: time.Minute}, "timeout=1m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}
