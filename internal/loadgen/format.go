package loadgen

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// routeOrder lists routes in the order reports show them.
func routeOrder(m map[string]Stats) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		switch k {
		case "local":
			return 0
		case "cloud":
			return 1
		case RouteUnknown:
			return 2
		}
		return 3
	}
	sort.Slice(keys, func(i, j int) bool {
		if rank(keys[i]) != rank(keys[j]) {
			return rank(keys[i]) < rank(keys[j])
		}
		return keys[i] < keys[j]
	})
	return keys
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func ms(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// WriteText writes the human report of one run.
func WriteText(w io.Writer, rep Report) error {
	var b strings.Builder
	model := fmt.Sprintf("closed, %d callers", rep.Concurrency)
	if rep.Model == "open" {
		model = fmt.Sprintf("open, %g calls/s, at most %d in flight", rep.Rate, rep.Concurrency)
	}
	if rep.Label != "" {
		fmt.Fprintf(&b, "== %s ==\n", rep.Label)
	}
	fmt.Fprintf(&b, "target      %s (%s)\n", rep.Target, model)
	if rep.Function != "" {
		fmt.Fprintf(&b, "function    %s\n", rep.Function)
	}
	switch {
	case rep.NoInvoke:
		fmt.Fprintf(&b, "method      %s (the target has no invoke: routes unknown)\n", rep.Method)
	case rep.Method == "call_faas" || rep.Method == "call":
		fmt.Fprintf(&b, "method      %s (routes unknown)\n", rep.Method)
	}
	fmt.Fprintf(&b, "calls       %d sent, %d ok, %d errors", rep.Sent, rep.OK, rep.Errors)
	if rep.Warmup > 0 {
		fmt.Fprintf(&b, " (+%d warm-up, not counted)", rep.Warmup)
	}
	if rep.Unsent > 0 {
		fmt.Fprintf(&b, " (%d never sent: stopped)", rep.Unsent)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "throughput  %.1f calls/s ok, %.1f calls/s answered, over %.2f s\n", rep.Throughput, rep.CallRate, rep.DurationS)
	if len(rep.ErrorCodes) > 0 {
		b.WriteString("errors     ")
		for _, k := range sortedKeys(rep.ErrorCodes) {
			fmt.Fprintf(&b, " %s: %d;", ErrorKeyName(k), rep.ErrorCodes[k])
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency ms\tcalls\tp50\tp90\tp99\tp99.9\tmax\t")
	row := func(name string, s Stats) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", name, s.Count, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.P999), ms(s.Max))
	}
	row("all", rep.Latency)
	for _, k := range routeOrder(rep.Routes) {
		name := k
		if name == "" {
			name = "(no route)"
		}
		row(name, rep.Routes[k])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "cold starts %d\n", rep.ColdStarts)
	b.WriteString("reasons    ")
	if len(rep.Reasons) == 0 {
		b.WriteString(" none")
	}
	for _, k := range sortedKeys(rep.Reasons) {
		fmt.Fprintf(&b, " %s: %d;", k, rep.Reasons[k])
	}
	b.WriteString("\n")
	if rep.Pool != nil {
		fmt.Fprintf(&b, "pool size   %d..%d (%s)\n", rep.Pool.Min, rep.Pool.Max, plural(rep.Pool.Samples, "sample"))
	} else {
		b.WriteString("pool size   not reported\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// WriteCompare writes reports side by side, one column each.
func WriteCompare(w io.Writer, reps []Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	cells := func(name string, f func(Report) string) {
		fmt.Fprintf(tw, "%s\t", name)
		for _, r := range reps {
			fmt.Fprintf(tw, "%s\t", f(r))
		}
		fmt.Fprintln(tw)
	}
	cells("", func(r Report) string { return r.Label })
	cells("calls", func(r Report) string { return strconv.FormatInt(r.Sent, 10) })
	cells("errors", func(r Report) string { return strconv.FormatInt(r.Errors, 10) })
	cells("calls/s ok", func(r Report) string { return strconv.FormatFloat(r.Throughput, 'f', 1, 64) })
	for _, p := range []struct {
		name string
		f    func(Stats) float64
	}{
		{"p50 ms", func(s Stats) float64 { return s.P50 }},
		{"p90 ms", func(s Stats) float64 { return s.P90 }},
		{"p99 ms", func(s Stats) float64 { return s.P99 }},
		{"p99.9 ms", func(s Stats) float64 { return s.P999 }},
		{"max ms", func(s Stats) float64 { return s.Max }},
	} {
		cells(p.name, func(r Report) string { return ms(p.f(r.Latency)) })
	}
	for _, route := range []string{"local", "cloud"} {
		cells(route+" calls", func(r Report) string { return strconv.FormatInt(r.Routes[route].Count, 10) })
		cells(route+" p50 ms", func(r Report) string {
			if r.Routes[route].Count == 0 {
				return "-"
			}
			return ms(r.Routes[route].P50)
		})
		cells(route+" p99 ms", func(r Report) string {
			if r.Routes[route].Count == 0 {
				return "-"
			}
			return ms(r.Routes[route].P99)
		})
	}
	cells("cold starts", func(r Report) string { return strconv.FormatInt(r.ColdStarts, 10) })
	cells("reasons", func(r Report) string {
		var parts []string
		for _, k := range sortedKeys(r.Reasons) {
			parts = append(parts, k+":"+strconv.FormatInt(r.Reasons[k], 10))
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, " ")
	})
	cells("pool size", func(r Report) string {
		if r.Pool == nil {
			return "-"
		}
		return fmt.Sprintf("%d..%d", r.Pool.Min, r.Pool.Max)
	})
	return tw.Flush()
}

// Target checks and normalises the lb URL: flagURL, else fallback (the
// client's configuration: LB_URL, else lb's port on loopback).
func Target(flagURL, fallback string) (string, error) {
	raw := flagURL
	if raw == "" {
		raw = fallback
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("lb URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("lb URL %q: want http(s)://host:port/", raw)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return u.String(), nil
}

// CheckLoopback refuses a target that is not on this machine's loopback
// ("localhost", 127.0.0.0/8 or ::1). Names are not resolved.
func CheckLoopback(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("lb URL %q: %w", rawURL, err)
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("target %s is not loopback: load goes only to this machine unless --allow-remote is given", host)
}
