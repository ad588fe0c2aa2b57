package sim

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
)

// ManyReport is the --json output of a many-function run.
type ManyReport struct {
	Config  ManyConfig   `json:"config"`
	Results []ManyResult `json:"results"`
}

// MainMany runs `lb sim --functions N ...`: every sharing at every cap on
// the same arrivals, as a table (or JSON with --json). It returns the exit
// code: 0, 1 on a failed run, 2 on bad usage.
func MainMany(args []string, stdout, stderr io.Writer) int {
	zero := slices.ContainsFunc(args, func(a string) bool {
		return a == "--scale-to-zero" || a == "-scale-to-zero" || strings.HasPrefix(a, "--scale-to-zero=true") || strings.HasPrefix(a, "-scale-to-zero=true")
	})
	cfg := DefaultManyConfig()
	if zero {
		cfg = DefaultZeroConfig()
	}
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lb sim --functions N [--scale-to-zero] [flags]\n\nSimulates N functions behind one lb sharing MAX_TOTAL_WORKERS, each with its\nown pool, autoscaler, offload policy and Lambda, on Zipf-like popularity with\nbursts, and compares ways to share the cap. Deterministic for a --seed.\nWith --scale-to-zero it compares instead, on mostly idle functions: min 1\n(always warm); min 0 where a call with no ready worker waits for it; min 0\nwhere it goes to the cloud while the worker starts, without and with\nkeep-warm pings (lb sim --functions 100 --scale-to-zero -h lists its defaults).\n\nflags:")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Functions, "functions", cfg.Functions, "how many functions")
	fs.Int64Var(&cfg.Calls, "calls", cfg.Calls, "arrivals in all (the run stops taking calls after this many)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "all functions' base arrival rate together, calls/s")
	fs.Float64Var(&cfg.Zipf, "zipf", cfg.Zipf, "popularity exponent: the function of rank r gets a share ∝ r^-zipf")
	fs.Float64Var(&cfg.BurstFactor, "burst", cfg.BurstFactor, "a function's rate during its bursts, × its base rate")
	fs.DurationVar(&cfg.BurstOn, "burst-on", cfg.BurstOn, "burst length")
	fs.DurationVar(&cfg.BurstEvery, "burst-every", cfg.BurstEvery, "mean time between one function's bursts")
	fs.StringVar(&cfg.Offload, "offload", cfg.Offload, "OFFLOAD_POLICY of every function")
	fs.StringVar(&cfg.Autoscaler, "autoscaler", cfg.Autoscaler, "AUTOSCALER of every function")
	fs.StringVar(&cfg.Scheduler, "scheduler", cfg.Scheduler, "SCHEDULER of every function")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed")
	totals := fs.String("totals", "120,150,200", "comma-separated MAX_TOTAL_WORKERS to compare")
	sharings := fs.String("sharing", "static-even,static-load,shared,take:0s:all,default",
		"comma-separated ways to share the cap: static-even, static-load, shared, default, take:IDLE:MOVES[:busy]")
	fs.Bool("scale-to-zero", false, "compare the ways to treat idle functions instead of ways to share the cap")
	fs.DurationVar(&cfg.ScaleToZeroAfter, "scale-to-zero-after", cfg.ScaleToZeroAfter, "SCALE_TO_ZERO_AFTER, for functions with --servers 0")
	fs.DurationVar(&cfg.KeepWarmEvery, "keep-warm-every", cfg.KeepWarmEvery, "CLOUD_KEEP_WARM_EVERY of the keep-warm variant (0: no pings)")
	fs.BoolVar(&cfg.ColdWait, "cold-wait", cfg.ColdWait, "with --servers 0: a call with no ready worker waits for it instead of going to the cloud")
	cloud := systemFlags(fs, &cfg.Config)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if code, ok := parse(fs, args, cloud, &cfg.Config, stderr); !ok {
		return code
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 2
	}
	if zero {
		return runZero(cfg, *asJSON, stdout, stderr)
	}
	var caps []int
	for _, s := range strings.Split(*totals, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "sim: --totals: %q is not a worker count\n", s)
			return 2
		}
		caps = append(caps, n)
	}
	var shs []Sharing
	for _, s := range strings.Split(*sharings, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		sh, err := ParseSharing(s)
		if err != nil {
			fmt.Fprintf(stderr, "sim: --sharing: %v\n", err)
			return 2
		}
		shs = append(shs, sh)
	}
	rep, err := CompareMany(cfg, caps, shs)
	if err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 1
	}
	if *asJSON {
		return writeJSON(stdout, stderr, rep)
	}
	WriteManyTable(stdout, rep)
	return 0
}

// CompareMany runs every sharing at every cap, as many runs at once as
// there are CPUs (each run is deterministic on its own), and reports them
// cap by cap in the order given.
func CompareMany(cfg ManyConfig, caps []int, shs []Sharing) (ManyReport, error) {
	rep := ManyReport{Config: cfg, Results: make([]ManyResult, len(caps)*len(shs))}
	err := parallel(len(rep.Results), func(i int) error {
		total, sh := caps[i/len(shs)], shs[i%len(shs)]
		r, err := RunMany(cfg, total, sh)
		rep.Results[i] = r
		if err != nil {
			return fmt.Errorf("%s at %d workers: %w", sh.Name, total, err)
		}
		return nil
	})
	return rep, err
}

// parallel runs run(0) to run(n-1), as many at once as there are CPUs,
// and returns when all have, with their errors joined.
func parallel(n int, run func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = run(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WriteManyTable prints a many-function report as an aligned table.
func WriteManyTable(w io.Writer, rep ManyReport) {
	c := rep.Config
	fmt.Fprintf(w, "%d functions  %d calls  base %g calls/s  zipf %g  bursts ×%g for %v every ~%v  min %d max %d concurrency %d  service %v (cv %g)  worker start %v  %s/%s  seed %d\n\n",
		c.Functions, c.Calls, c.Rate, c.Zipf, c.BurstFactor, c.BurstOn, c.BurstEvery, c.Servers, c.Max, c.Concurrency,
		c.Service, c.ServiceCV, c.WorkerColdStart, c.Offload, c.Autoscaler, c.Seed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cap\tsharing\tlocal\toffloaded\tmean ms\tp50 ms\tp99 ms\tp99.9 ms\tcloud cold\tworker starts\tcloud $\tworker-h\tpeak\ttaken\tover cap\tsim s\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.2f%%\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%d\t%.3f\t%.1f\t%d\t%d\t%d\t%.1f\t\n",
			r.Total, r.Sharing, r.Local, 100*r.Offloaded, r.MeanMs, r.P50Ms, r.P99Ms, r.P999Ms, r.CloudColdStarts, r.WorkerStarts,
			r.CloudCostUSD, r.WorkerSeconds/3600, r.PeakWorkers, r.Taken, r.OverCap, r.WallSec)
	}
	_ = tw.Flush() // errors surface on w's next use
}

// runZero runs and prints the scale-to-zero comparison.
func runZero(cfg ManyConfig, asJSON bool, stdout, stderr io.Writer) int {
	rep, err := CompareZero(cfg, ZeroVariants)
	if err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 1
	}
	if asJSON {
		return writeJSON(stdout, stderr, rep)
	}
	WriteZeroTable(stdout, rep)
	return 0
}
