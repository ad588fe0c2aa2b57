package sim

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spillway-faas/spillway/internal/policy"
)

// Report is the --json output.
type Report struct {
	Config  Config   `json:"config"`
	Results []Result `json:"results"`
}

// Main runs `lb sim`: it parses args, simulates each policy on the same
// trace and prints a table (or JSON with --json). It returns the exit code:
// 0, 1 on a failed run, 2 on bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	if hasFlag(args, "functions") {
		return MainMany(args, stdout, stderr)
	}
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lb sim [flags]\n\nReplays an arrival trace against the real scheduling, offload and autoscaling\npolicies and compares them. Deterministic for a --seed.\nWith --functions N it simulates N functions sharing MAX_TOTAL_WORKERS instead\n(lb sim --functions 100 -h lists those flags).\n\nflags:")
		fs.PrintDefaults()
	}
	trace := fs.String("trace", cfg.Trace.Kind, "arrival trace: poisson, bursts, diurnal, step, or csv:FILE (first column: seconds)")
	fs.Float64Var(&cfg.Trace.Rate, "rate", cfg.Trace.Rate, "base arrival rate, calls/s")
	fs.Float64Var(&cfg.Trace.Peak, "peak", cfg.Trace.Peak, "burst/peak arrival rate, calls/s (bursts, diurnal, step)")
	fs.DurationVar(&cfg.Trace.Period, "period", cfg.Trace.Period, "bursts/diurnal cycle")
	fs.DurationVar(&cfg.Trace.On, "on", cfg.Trace.On, "bursts: burst length")
	fs.DurationVar(&cfg.Trace.StepAt, "step-at", cfg.Trace.StepAt, "step: when the rate jumps to --peak")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long arrivals come")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed")
	policies := fs.String("policies", "overflow,latency-aware,never", "comma-separated offload[/autoscaler[/scheduler]] to compare")
	autoscaler := fs.String("autoscaler", policy.AutoscalerPredictive, "AUTOSCALER for policies that name none: predictive or reference")
	scheduler := fs.String("scheduler", policy.SchedulerRoundRobin, "SCHEDULER for policies that name none")
	cloud := systemFlags(fs, &cfg)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if code, ok := parse(fs, args, cloud, &cfg, stderr); !ok {
		return code
	}
	cfg.Trace.Kind = *trace
	if path, ok := strings.CutPrefix(*trace, "csv:"); ok {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintf(stderr, "sim: opening trace: %v\n", err)
			return 2
		}
		ts, err := ReadCSV(f)
		_ = f.Close() // read-only
		if err != nil {
			fmt.Fprintf(stderr, "sim: %s: %v\n", path, err)
			return 2
		}
		cfg.Trace.Kind, cfg.Trace.Times = TraceCSV, ts
		if !flagSet(fs, "duration") {
			cfg.Duration = time.Duration(ts[len(ts)-1]*1e9) + time.Nanosecond
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 2
	}
	var pols []Policy
	for _, s := range strings.Split(*policies, ",") {
		if s = strings.TrimSpace(s); s != "" {
			pols = append(pols, ParsePolicy(s, *autoscaler, *scheduler))
		}
	}
	rep, err := Compare(cfg, pols)
	if err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 1
	}
	if *asJSON {
		rep.Config.Trace.Times = nil // the input file, not worth echoing
		return writeJSON(stdout, stderr, rep)
	}
	WriteTable(stdout, rep)
	return 0
}

// systemFlags registers the flags of the simulated system that single- and
// many-function runs share, with cfg's values as defaults; it returns
// --cloud, for parseCloud.
func systemFlags(fs *flag.FlagSet, cfg *Config) *string {
	fs.IntVar(&cfg.Servers, "servers", cfg.Servers, "NUMBER_OF_SERVERS (with --functions: each function's --min)")
	fs.IntVar(&cfg.Max, "max", cfg.Max, "MAX_SERVERS (with --functions: each function's --max)")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "WORKER_CONCURRENCY")
	fs.DurationVar(&cfg.Tick, "tick", cfg.Tick, "ELASTICITY_SLEEP")
	fs.DurationVar(&cfg.ScaleDownDelay, "scale-down-delay", cfg.ScaleDownDelay, "SCALE_DOWN_DELAY")
	fs.DurationVar(&cfg.LocalTimeout, "local-timeout", cfg.LocalTimeout, "LOCAL_TIMEOUT (0: none)")
	fs.DurationVar(&cfg.QueueTimeout, "queue-timeout", cfg.QueueTimeout, "QUEUE_TIMEOUT")
	fs.DurationVar(&cfg.Service, "service", cfg.Service, "mean local service time")
	fs.Float64Var(&cfg.ServiceCV, "service-cv", cfg.ServiceCV, "coefficient of variation of the service time (lognormal; 0: constant)")
	fs.DurationVar(&cfg.WorkerColdStart, "worker-cold-start", cfg.WorkerColdStart, "time to start a worker")
	cloud := fs.String("cloud", "on", "on or off (CLOUD=off)")
	fs.DurationVar(&cfg.CloudOverhead, "cloud-overhead", cfg.CloudOverhead, "network + API Gateway time per cloud call")
	fs.Float64Var(&cfg.CloudSpeed, "cloud-speed", cfg.CloudSpeed, "Lambda run time as a multiple of the local service time")
	fs.DurationVar(&cfg.CloudColdStart, "cloud-cold-start", cfg.CloudColdStart, "Lambda cold start")
	fs.DurationVar(&cfg.CloudKeepAlive, "cloud-keep-alive", cfg.CloudKeepAlive, "how long an idle Lambda environment stays warm")
	fs.IntVar(&cfg.LambdaMemoryMB, "lambda-memory", cfg.LambdaMemoryMB, "LAMBDA_MEMORY in MB")
	fs.Float64Var(&cfg.CloudMaxRPS, "cloud-max-rps", 0, "CLOUD_MAX_RPS (0: no cap)")
	fs.Float64Var(&cfg.CloudMaxCostPerHour, "cloud-max-cost", 0, "CLOUD_MAX_COST_PER_HOUR in USD (0: no cap)")
	return cloud
}

// parse reads args into fs's flags and --cloud (as systemFlags returned it)
// into cfg. When the run should not go on it returns false and the exit
// code: 0 after -h, 2 on bad usage (said on stderr).
func parse(fs *flag.FlagSet, args []string, cloud *string, cfg *Config, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sim: unexpected argument %q\n", fs.Arg(0))
		return 2, false
	}
	if err := parseCloud(*cloud, cfg); err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 2, false
	}
	return 0, true
}

// writeJSON prints a report as indented JSON and returns the exit code.
func writeJSON(stdout, stderr io.Writer, rep any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 1
	}
	return 0
}

func parseCloud(v string, cfg *Config) error {
	switch v {
	case "on":
	case "off":
		cfg.CloudOff = true
	default:
		return fmt.Errorf("--cloud=%q: want on or off", v)
	}
	return nil
}

// hasFlag reports whether args set the flag name (-name, --name, with or
// without =value), before the first non-flag argument.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" || !strings.HasPrefix(a, "-") {
			return false
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// Compare runs every policy on cfg.
func Compare(cfg Config, pols []Policy) (Report, error) {
	rep := Report{Config: cfg}
	for _, p := range pols {
		r, err := Run(cfg, p)
		if err != nil {
			return rep, fmt.Errorf("policy %s: %w", p, err)
		}
		rep.Results = append(rep.Results, r)
	}
	return rep, nil
}

// WriteTable prints a report as an aligned table.
func WriteTable(w io.Writer, rep Report) {
	c := rep.Config
	fmt.Fprintf(w, "trace %s  rate %g/s peak %g/s  duration %v  N=%d MAX=%d concurrency %d  service %v (cv %g)  worker cold start %v  cloud +%v ×%g cold %v  seed %d\n\n",
		c.Trace.Kind, c.Trace.Rate, c.Trace.Peak, c.Duration, c.Servers, c.Max, c.Concurrency, c.Service, c.ServiceCV,
		c.WorkerColdStart, c.CloudOverhead, c.CloudSpeed, c.CloudColdStart, c.Seed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tcalls\toffloaded\tp50 ms\tp95 ms\tp99 ms\tmax ms\tcloud cold\tcloud $\tworker-h\tpool min/avg/max\tscale up/down\tlag ticks\tsim s\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%d\t%.2f%%\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%.4f\t%.2f\t%d/%.1f/%d\t%d/%d\t%d\t%.2f\t\n",
			r.Policy, r.Calls, 100*r.Offloaded, r.P50Ms, r.P95Ms, r.P99Ms, r.MaxMs, r.CloudColdStarts, r.CloudCostUSD,
			r.WorkerSeconds/3600, r.PoolMin, r.PoolMean, r.PoolMax, r.ScaleUps, r.ScaleDowns, r.MaxLagTicks, r.WallSec)
	}
	_ = tw.Flush() // errors surface on w's next use; nothing to add here
}
