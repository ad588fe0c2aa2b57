package config

import (
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestEveryReadIsDeclaredAndDocumented reads the code of the whole module:
// no package but internal/config reads an environment variable, each read
// names its variable, and every variable read is documented in
// .env.example. Test support that only tests import (and that therefore
// cannot import config) reads its own documented variables.
func TestEveryReadIsDeclaredAndDocumented(t *testing.T) {
	scan, err := scanEnv("../..")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := documented("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range envViolations(scan, doc) {
		t.Error(v)
	}
	var sites, outside []string
	for _, r := range scan.Reads {
		sites = append(sites, r.Pos+" "+r.Name)
		if r.Pkg != "internal/config" {
			outside = append(outside, r.Pos+" "+r.Name)
		}
	}
	t.Logf("%d places read a variable, %d of them outside internal/config (test support: %v): %v",
		len(sites), len(outside), outside, sortedKeys(scan.TestOnly))
}

// TestScanFindsWhatConfigAsks: the variables the scan finds read in
// internal/config are exactly those its loaders ask for when they run, so
// the scan misses none of config's reads.
func TestScanFindsWhatConfigAsks(t *testing.T) {
	scan, err := scanEnv("../..")
	if err != nil {
		t.Fatal(err)
	}
	static := map[string]bool{}
	for _, r := range scan.Reads {
		if r.Pkg == "internal/config" {
			static[r.Name] = true
		}
	}
	asked := map[string]bool{}
	record := func(k string) (string, bool) { asked[k] = true; return "", false }
	if _, err := Load(record); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadWorker(record); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadClient(record); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAddfaas(record); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadLocalcloud(record); err != nil {
		t.Fatal(err)
	}
	if a, s := sortedKeys(asked), sortedKeys(static); !slices.Equal(a, s) {
		t.Errorf("config's loaders ask for\n  %v\nthe scan finds\n  %v", a, s)
	}
}

// TestScanCatchesReadsOutsideConfig runs the check on a small tree
// (testdata/envscan) that reads variables every way the scan knows: each
// way is caught, and config's own reads through its parser are not.
func TestScanCatchesReadsOutsideConfig(t *testing.T) {
	scan, err := scanEnv("testdata/envscan")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := documented("testdata/envscan/.env.example")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range envViolations(scan, doc) {
		file, rest, _ := strings.Cut(v, ":")
		_, rest, _ = strings.Cut(rest, ":") // drop the line
		got = append(got, file+":"+rest)
	}
	want := []string{
		"cmd/tool/main.go: reads READ_OUTSIDE outside internal/config",
		"cmd/tool/main.go: reads VIA_CLOSURE outside internal/config",
		"cmd/tool/main.go: reads VIA_CLOSURE, which .env.example does not document",
		"cmd/tool/main.go: reads VIA_FACTORY outside internal/config",
		"cmd/tool/main.go: reads VIA_FACTORY, which .env.example does not document",
		"cmd/tool/main.go: reads VIA_FIELD outside internal/config",
		"cmd/tool/main.go: reads VIA_FIELD, which .env.example does not document",
		"cmd/tool/main.go: reads VIA_HELPER outside internal/config",
		"cmd/tool/main.go: reads VIA_HELPER, which .env.example does not document",
		"cmd/tool/main.go: reads VIA_VARIABLE outside internal/config",
		"cmd/tool/main.go: reads VIA_VARIABLE, which .env.example does not document",
		"cmd/tool/main.go: reads a variable it does not name with a constant",
		"cmd/tool/main.go: reads the whole environment (os.Environ)",
		"internal/config/config.go: reads UNDOCUMENTED, which .env.example does not document",
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if !scan.TestOnly["internal/testhelp"] || scan.TestOnly["internal/config"] {
		t.Errorf("test-only packages %v, want internal/testhelp alone", scan.TestOnly)
	}
	// The helpers' own bodies and config's parser are no read sites: 8
	// reads in the tool, 2 in config, 1 in the test support.
	if len(scan.Reads) != 11 {
		t.Errorf("%d reads, want 11: %+v", len(scan.Reads), scan.Reads)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
