package sim

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from this run")

// TestGolden pins what each simulator reports, to the last digit, for small
// runs of the single-function, many-function and scale-to-zero comparisons:
// the table as lb sim prints it, then the JSON. A change to the model moves
// these on purpose (go test ./internal/policy/sim -run TestGolden -update, and say why in the
// commit); a change to how the simulators are built must leave them as
// they are. Wall-clock times are zeroed.
func TestGolden(t *testing.T) {
	single := DefaultConfig()
	single.Duration, single.LocalTimeout = 3*time.Minute, 300*time.Millisecond
	singleOff := single
	singleOff.CloudOff = true
	many := DefaultManyConfig()
	many.Functions, many.Calls, many.Rate = 12, 8000, 40
	zero := DefaultZeroConfig()
	zero.Functions, zero.Calls, zero.Rate = 10, 3000, 0.5

	for _, tc := range []struct {
		name string
		run  func(t *testing.T, w *bytes.Buffer) any
	}{
		{"single", func(t *testing.T, w *bytes.Buffer) any {
			rep := mustCompare(t, single, "overflow", "latency-aware/reference/least-connections", "never", "always")
			WriteTable(w, rep)
			return rep
		}},
		{"single-cloud-off", func(t *testing.T, w *bytes.Buffer) any {
			rep := mustCompare(t, singleOff, "overflow", "latency-aware")
			WriteTable(w, rep)
			return rep
		}},
		{"many", func(t *testing.T, w *bytes.Buffer) any {
			var shs []Sharing
			for _, s := range []string{"static-even", "static-load", "shared", "take:0s:1:busy", "default"} {
				sh, err := ParseSharing(s)
				if err != nil {
					t.Fatal(err)
				}
				shs = append(shs, sh)
			}
			rep, err := CompareMany(many, []int{15, 24}, shs)
			rep = mustNoWall(t, rep, err)
			WriteManyTable(w, rep)
			return rep
		}},
		{"zero", func(t *testing.T, w *bytes.Buffer) any {
			rep, err := CompareZero(zero, ZeroVariants)
			rep = mustNoWall(t, rep, err)
			WriteZeroTable(w, rep)
			return rep
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			rep := tc.run(t, &got)
			js, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got.WriteString("\n")
			got.Write(js)
			got.WriteString("\n")
			path := filepath.Join("testdata", "golden", tc.name+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -run TestGolden -update=true writes it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%s changed (-want +got):\n%s", path, lineDiff(string(want), got.String()))
			}
		})
	}
}

// mustCompare runs the single-function policies on cfg, wall-clock times
// zeroed.
func mustCompare(t *testing.T, cfg Config, policies ...string) Report {
	t.Helper()
	var pols []Policy
	for _, p := range policies {
		pols = append(pols, ParsePolicy(p, "predictive", "round-robin"))
	}
	rep, err := Compare(cfg, pols)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rep.Results {
		rep.Results[i].WallSec = 0
	}
	return rep
}

// mustNoWall fails t on err, else returns rep with its wall-clock times
// zeroed.
func mustNoWall(t *testing.T, rep ManyReport, err error) ManyReport {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	for i := range rep.Results {
		rep.Results[i].WallSec = 0
	}
	return rep
}

// lineDiff lists the lines that differ, by line number.
func lineDiff(want, got string) string {
	wl, gl := bytes.Split([]byte(want), []byte("\n")), bytes.Split([]byte(got), []byte("\n"))
	var b bytes.Buffer
	for i := range max(len(wl), len(gl)) {
		var w, g []byte
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if !bytes.Equal(w, g) {
			fmt.Fprintf(&b, "line %d:\n-%s\n+%s\n", i+1, w, g)
		}
	}
	return b.String()
}
