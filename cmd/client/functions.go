package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/loadgen"
)

func cmdFunctions(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("functions", "functions [--json] [--lb URL] [--timeout D]", e)
	var c common
	c.register(fs, 10*time.Second)
	asJSON := fs.Bool("json", false, "print JSON: functions() as the lb answers it")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("functions takes no arguments")
	}
	cl, target, err := c.client(e, 1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var reply any
	if err := cl.Call(ctx, "functions", nil, &reply); err != nil {
		if !loadgen.MethodMissing(err) {
			return err
		}
		if *asJSON {
			return fmt.Errorf("%s has no functions method: it serves one function only (an lb from before many functions, or the reference gateway)", target)
		}
		_, err := fmt.Fprintf(e.stdout, "lb %s serves one function only: it has no functions method (an lb from before many functions, or the reference gateway); call, repl and bench without --fn call it\n", target)
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(reply)
	}
	var fns []spillway.FunctionInfo
	if err := fromXMLRPC(reply, &fns); err != nil {
		return fmt.Errorf("read the answer of functions: %w", err)
	}
	return writeFunctions(e.stdout, fns)
}

// fromXMLRPC fills dst, a spillway contract type, from a decoded XML-RPC
// value: the contract's JSON names are the members' names.
func fromXMLRPC(v, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}

// writeFunctions writes functions() as a table, by name.
func writeFunctions(w io.Writer, fns []spillway.FunctionInfo) error {
	if len(fns) == 0 {
		_, err := io.WriteString(w, "no functions served\n")
		return err
	}
	sort.Slice(fns, func(i, j int) bool { return fns[i].Name < fns[j].Name })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "function\tversion\tstyle\tmin\tmax\tconcurrency\ttimeout\tready/workers")
	for _, f := range fns {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\t%d/%d\n",
			f.Name, f.Version, dash(f.Style), f.Min, f.Max, f.Concurrency, seconds(f.TimeoutSeconds), f.Ready, f.Workers)
	}
	return tw.Flush()
}

// functionSections takes status()'s functions member out of st, a copy of
// it without them, when the lb has the section (since many functions) and
// it reads as the contract says. Otherwise st comes back as it is.
func functionSections(st any) (any, []spillway.FunctionSection) {
	m, ok := st.(map[string]any)
	if !ok || m["functions"] == nil {
		return st, nil
	}
	var byName map[string]spillway.FunctionSection
	if err := fromXMLRPC(m["functions"], &byName); err != nil {
		return st, nil
	}
	rest := make(map[string]any, len(m))
	for k, v := range m {
		if k != "functions" {
			rest[k] = v
		}
	}
	secs := make([]spillway.FunctionSection, 0, len(byName))
	for name, s := range byName {
		if s.Name == "" {
			s.Name = name
		}
		secs = append(secs, s)
	}
	sort.Slice(secs, func(i, j int) bool { return secs[i].Name < secs[j].Name })
	return rest, secs
}

// writeSections writes status()'s function sections, a row each.
func writeSections(w io.Writer, secs []spillway.FunctionSection) error {
	if _, err := io.WriteString(w, "functions:\n"); err != nil {
		return err
	}
	if len(secs) == 0 {
		_, err := io.WriteString(w, "  none served\n")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  function\tversion\tserving\tready/workers\tdesired\tmin-max\tin flight\tqueued\tcalls\tlocal\tcloud\terrors\tcold starts\tbreaker")
	for _, s := range secs {
		breaker := "off" // CLOUD=off
		if s.Cloud != nil {
			breaker = dash(s.Cloud.Breaker)
		}
		k := s.Counters
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%d/%d\t%d\t%d-%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n",
			s.Name, s.Version, yesNo(s.Ready), s.PoolReady, s.PoolSize, s.PoolDesired, s.PoolMin, s.PoolMax,
			s.InFlight, s.Queued, k.Calls, k.Local, k.Cloud, k.Errors, k.ColdStarts, breaker)
	}
	return tw.Flush()
}

func seconds(s float64) string { return strconv.FormatFloat(s, 'f', -1, 64) + "s" }

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
