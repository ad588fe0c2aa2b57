package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// warmupFlag takes a count ("50") or a duration ("2s").
type warmupFlag struct {
	n int64
	d time.Duration
}

func (w *warmupFlag) String() string {
	if w.d > 0 {
		return w.d.String()
	}
	return strconv.FormatInt(w.n, 10)
}

func (w *warmupFlag) Set(s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return fmt.Errorf("negative warm-up %d", n)
		}
		w.n, w.d = n, 0
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("want a count (50) or a duration (2s), got %q", s)
	}
	w.n, w.d = 0, d
	return nil
}

type benchFlags struct {
	common
	conc        int
	n           int64
	d           time.Duration
	rate        float64
	param       string
	paramJSON   bool
	route       string
	method      string
	warmup      warmupFlag
	jsonOut     bool
	out         string
	compare     bool
	allowRemote bool
	poll        time.Duration
	noProgress  bool
}

const benchSynopsis = `bench [-c CONC] [-n COUNT | -d DURATION] [--rate RPS] [--param P] [--warmup N|DURATION]
              [--json] [--out FILE.png] [--compare] [--route local|cloud] [--method invoke|call_faas]
              [--fn NAME] [--lb URL] [--allow-remote]

Closed model by default: CONC callers, each sending its next call when the last is answered.
With --rate, open model: calls are due at a fixed rate whatever the answers, latency counts from
the due time (so queueing in the target shows), and at most CONC (default 1024) are in flight.
-n and -d bound the measured calls; warm-up calls come first and are not in the figures.
--compare runs the same load three times through invoke: forced local, forced cloud, and the
lb's own policy (hybrid), and prints one table.
Any XML-RPC FaaS gateway with call_faas(param) can be measured: --method call_faas calls it
directly, and the default (invoke) falls back to call_faas when the target has no invoke.
call_faas does not say where a call ran, so its routes are reported as unknown. --compare and
--route need invoke.
--fn NAME loads the function NAME of an lb that serves many: invoke(param, {"function": NAME}),
or with --method call_faas, call(NAME, param).`

func cmdBench(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("bench", benchSynopsis, e)
	var f benchFlags
	f.register(fs, loadgen.DefaultTimeout)
	f.registerFn(fs)
	fs.IntVar(&f.conc, "c", 0, "callers (closed model; default 4) or most calls in flight (open model; default 1024)")
	fs.Int64Var(&f.n, "n", 0, "measured calls (default 1000 when -d is not given)")
	fs.DurationVar(&f.d, "d", 0, "measured duration, e.g. 30s")
	fs.Float64Var(&f.rate, "rate", 0, "open model: calls per second")
	fs.StringVar(&f.param, "param", "20", "parameter sent with each call")
	fs.BoolVar(&f.paramJSON, "param-json", false, "--param is JSON (default: sent as a string)")
	fs.StringVar(&f.route, "route", "", "force every call's route: local or cloud (default: the lb's policy)")
	fs.StringVar(&f.method, "method", "invoke", "method to call: invoke (route, worker, reason; falls back to call_faas when the target lacks it) or call_faas (any XML-RPC FaaS gateway; routes unknown)")
	fs.Var(&f.warmup, "warmup", "warm-up calls before measuring: a count (50) or a duration (2s)")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.StringVar(&f.out, "out", "", "write a PNG chart of latency over time, the local/cloud split and pool size")
	fs.BoolVar(&f.compare, "compare", false, "run forced local, forced cloud and hybrid, and compare them")
	fs.BoolVar(&f.allowRemote, "allow-remote", false, "allow a target that is not on loopback")
	fs.DurationVar(&f.poll, "poll", 250*time.Millisecond, "how often to read the pool size from status()")
	fs.BoolVar(&f.noProgress, "no-progress", false, "no progress bar even on a terminal")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("bench takes no arguments (got %q); see client bench -h", pos)
	}
	if f.n == 0 && f.d == 0 {
		f.n = 1000
	}
	if f.conc == 0 && f.rate == 0 {
		f.conc = 4
	}
	if f.route != "" && f.route != "local" && f.route != "cloud" {
		return usagef("--route %q: want local or cloud", f.route)
	}
	if f.compare && f.route != "" {
		return usagef("--compare and --route do not go together")
	}
	if f.method != "invoke" && f.method != "call_faas" {
		return usagef("--method %q: want invoke or call_faas", f.method)
	}
	if f.method == "call_faas" && (f.compare || f.route != "") {
		return usagef("--compare and --route force routes through invoke: they do not go with --method call_faas")
	}
	cfg := loadgen.Config{
		Concurrency:    f.conc,
		Rate:           f.rate,
		Requests:       f.n,
		Duration:       f.d,
		WarmupRequests: f.warmup.n,
		WarmupDuration: f.warmup.d,
		Timeout:        f.timeout,
		PollEvery:      f.poll,
	}
	if err := cfg.Validate(); err != nil {
		return usageError{msg: err.Error()}
	}
	param, err := paramValue(f.param, f.paramJSON)
	if err != nil {
		return err
	}
	conns := f.conc
	if f.rate > 0 && conns == 0 {
		conns = loadgen.DefaultMaxInFlight
	}
	cl, target, err := f.client(e, conns)
	if err != nil {
		return err
	}
	if !f.allowRemote {
		for _, t := range strings.Split(target, ",") {
			if err := loadgen.CheckLoopback(t); err != nil {
				return usageError{msg: err.Error()}
			}
		}
	}
	rctx, cancel := context.WithTimeout(ctx, f.timeout)
	fn, err := f.function(rctx, cl, target)
	cancel()
	if err != nil {
		return err
	}
	// The method called when call_faas is asked for (or invoke proves
	// missing): call for a named function.
	unrouted := "call_faas"
	if fn != "" {
		unrouted = "call"
	}

	type mode struct {
		label   string
		options map[string]any
	}
	modes := []mode{{label: "", options: nil}}
	if f.route != "" {
		modes = []mode{{label: f.route, options: map[string]any{"route": f.route}}}
	}
	if f.compare {
		modes = []mode{
			{"local", map[string]any{"route": "local"}},
			{"cloud", map[string]any{"route": "cloud"}},
			{"hybrid", nil},
		}
	}

	var reports []loadgen.Report
	for _, m := range modes {
		if ctx.Err() != nil {
			break
		}
		// Only a run that forces no route may fall back to call_faas.
		forced := m.options != nil
		var caller loadgen.Caller
		invoke := &loadgen.InvokeCaller{Client: cl, Param: param, Options: m.options, Function: fn, Fallback: !forced}
		caller = invoke
		if f.method == "call_faas" {
			caller = &loadgen.CallFaasCaller{Client: cl, Param: param, Function: fn}
		}
		runCtx, stopRun := context.WithCancel(ctx)
		if forced {
			// Without invoke the run cannot force routes: stop at the
			// first answer that says so.
			caller = loadgen.CallerFunc(func(ctx context.Context) loadgen.Outcome {
				o := invoke.Call(ctx)
				if errors.Is(o.Err, loadgen.ErrNoInvoke) {
					stopRun()
				}
				return o
			})
		}
		var done atomic.Int64
		// Without --fn the calls go to the default function: its pool.
		r := &loadgen.Runner{Caller: caller, PoolSize: poolSizer(cl, cmp.Or(fn, f.dfltFn)), Completed: &done}
		stopBar := startProgress(e, &f, cfg, m.label, &done)
		res, err := r.Run(runCtx, cfg)
		stopBar()
		stopRun()
		if err != nil {
			return usageError{msg: err.Error()}
		}
		if forced && invoke.InvokeMissing() {
			what := "--route"
			if f.compare {
				what = "--compare"
			}
			return fmt.Errorf("%s forces routes through invoke, and %s has no invoke method (a gateway with only call_faas): run without %s, or with --method call_faas", what, target, what)
		}
		rep := res.Report
		rep.Label = m.label
		rep.Target = target
		rep.Param = param
		rep.Function = f.fn
		rep.Method = f.method
		if f.method == "call_faas" {
			rep.Method = unrouted
		}
		if f.method == "invoke" && invoke.InvokeMissing() {
			rep.Method, rep.NoInvoke = unrouted, true
		}
		if m.options != nil {
			rep.Options = m.options
		}
		reports = append(reports, rep)
		if f.out != "" {
			path := f.out
			if f.compare {
				path = suffixed(f.out, m.label)
			}
			if err := writeChart(path, res, chartTitle(rep)); err != nil {
				return err
			}
		}
	}

	if f.jsonOut {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if f.compare {
			if err := enc.Encode(map[string]any{"compare": reports}); err != nil {
				return err
			}
		} else if err := enc.Encode(reports[0]); err != nil {
			return err
		}
	} else {
		for i, rep := range reports {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			if err := loadgen.WriteText(e.stdout, rep); err != nil {
				return err
			}
		}
		if f.compare && len(reports) > 1 {
			fmt.Fprintln(e.stdout)
			if err := loadgen.WriteCompare(e.stdout, reports); err != nil {
				return err
			}
		}
	}
	for _, rep := range reports {
		if rep.Sent > 0 && rep.OK == 0 {
			return fmt.Errorf("every call failed (%s)", summarizeErrors(rep.ErrorCodes))
		}
	}
	return nil
}

func summarizeErrors(codes map[string]int64) string {
	var parts []string
	for k, v := range codes {
		parts = append(parts, fmt.Sprintf("%s ×%d", loadgen.ErrorKeyName(k), v))
	}
	return strings.Join(parts, ", ")
}

// poolSizer reads status().pool_size, when the lb reports it: that of the
// function fn's section when the lb has sections (since many functions)
// and fn is set, else the lb's own.
func poolSizer(cl *xmlrpc.Client, fn string) loadgen.PoolSizer {
	return func(ctx context.Context) (int, bool, error) {
		var st any
		if err := cl.Call(ctx, "status", nil, &st); err != nil {
			return 0, false, err
		}
		m, ok := st.(map[string]any)
		if !ok {
			return 0, false, nil
		}
		if fns, ok := m["functions"].(map[string]any); ok && fn != "" {
			if m, ok = fns[fn].(map[string]any); !ok {
				return 0, false, nil
			}
		}
		n, ok := m["pool_size"].(int64)
		return int(n), ok, nil
	}
}

func suffixed(path, label string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + label + ext
}

func chartTitle(rep loadgen.Report) string {
	t := fmt.Sprintf("%s, param %v", rep.Target, rep.Param)
	if rep.Function != "" {
		t = fmt.Sprintf("%s %s, param %v", rep.Target, rep.Function, rep.Param)
	}
	if rep.Label != "" {
		t = rep.Label + ": " + t
	}
	if rep.Model == "open" {
		return t + fmt.Sprintf(", %g calls/s", rep.Rate)
	}
	return t + fmt.Sprintf(", %d callers", rep.Concurrency)
}

func writeChart(path string, res *loadgen.Result, title string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := loadgen.WritePNG(f, res, title); err != nil {
		f.Close()
		return fmt.Errorf("chart %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return nil
}

// startProgress shows a bar on a terminal while a run lasts; the returned
// function stops it and waits for its goroutine.
func startProgress(e *env, f *benchFlags, cfg loadgen.Config, label string, done *atomic.Int64) func() {
	if !e.stderrTTY || f.noProgress || f.jsonOut {
		return func() {}
	}
	desc := "bench"
	if label != "" {
		desc = label
	}
	byCount := cfg.Duration == 0
	total := cfg.Requests + cfg.WarmupRequests
	if !byCount {
		total = int64((cfg.Duration + cfg.WarmupDuration) / time.Second)
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionClearOnFinish(),
	}
	if byCount {
		opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("calls"))
	} else {
		opts = append(opts, progressbar.OptionSetItsString("s"))
	}
	bar := progressbar.NewOptions64(total, opts...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				_ = bar.Finish()
				return
			case <-t.C:
				if byCount {
					_ = bar.Set64(min(done.Load(), total))
				} else {
					_ = bar.Set64(min(int64(time.Since(start)/time.Second), total))
				}
			}
		}
	}()
	return func() {
		close(stop)
		wg.Wait()
	}
}
