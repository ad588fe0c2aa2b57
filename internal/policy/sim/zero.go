package sim

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/policy"
)

// ZeroVariant is one way to treat functions that go idle, compared by
// `lb sim --functions N --scale-to-zero`.
type ZeroVariant struct {
	Name     string
	Min      int  // each function's --min: 1 always warm, 0 scales to zero
	ColdWait bool // with min 0: a call with no ready worker waits for one (Knative)
	KeepWarm bool // with min 0: keep-warm pings while at zero
	// Offload, when set, is every function's OFFLOAD_POLICY in this
	// variant, and it places the calls with no ready worker too.
	Offload string
}

// ZeroVariants are the policies of the scale-to-zero comparison: (a) min 1,
// always warm; (b) min 0, the call waits for its worker to start (Knative's
// activator); (c) min 0, the call goes to the cloud with reason cold while
// its worker starts (Spillway); (c) with CLOUD_KEEP_WARM pings; and (d)
// that with OFFLOAD_POLICY=latency-aware placing every call, those with no
// ready worker included: it weighs the worker's start against the cloud.
var ZeroVariants = []ZeroVariant{
	{Name: "a: min 1, always warm", Min: 1},
	{Name: "b: min 0, wait for the worker", ColdWait: true},
	{Name: "c: min 0, cloud while it starts"},
	{Name: "c + keep-warm pings", KeepWarm: true},
	{Name: "d: c + keep-warm, latency-aware", KeepWarm: true, Offload: policy.OffloadLatencyAware},
}

// DefaultZeroConfig is 100 mostly idle functions for the scale-to-zero
// comparison: 10 calls/s together at base with steep (Zipf 2) popularity,
// so the top function takes 61% of the calls, the tenth one is called about
// every 16 s and the last one about every 27 minutes; each function also
// bursts to 10× its rate for 30 s about every 20 minutes. 300,000 calls
// last about 8 simulated hours. A worker starts in 1 s (±20%), the middle
// of the 0.5–1.4 s measured in the integration tests; the Lambda's cold
// start is 800 ms and it keeps an idle environment 5 minutes;
// SCALE_TO_ZERO_AFTER and CLOUD_KEEP_WARM_EVERY are lb's defaults, 5 and 4
// minutes.
func DefaultZeroConfig() ManyConfig {
	c := DefaultManyConfig()
	c.Rate, c.Zipf, c.Calls = 10, 2, 300_000
	c.BurstFactor, c.BurstOn, c.BurstEvery = 10, 30*time.Second, 20*time.Minute
	c.WorkerColdStart = time.Second
	lb := config.Defaults()
	c.ScaleToZeroAfter, c.KeepWarmEvery = lb.ScaleToZeroAfter, lb.CloudKeepWarmEvery
	return c
}

// unshared gives each function its own --max whatever the others do (a
// static split of a cap that is every function's max).
var unshared = Sharing{Name: "unshared", Static: "even"}

// CompareZero runs every variant on the same arrivals, each function's pool
// bounded only by its --max (the cap is every function's max), as many runs
// at once as there are CPUs. cfg's Servers, ColdWait and whether
// KeepWarmEvery is used come from each variant.
func CompareZero(cfg ManyConfig, variants []ZeroVariant) (ManyReport, error) {
	rep := ManyReport{Config: cfg, Results: make([]ManyResult, len(variants))}
	err := parallel(len(variants), func(i int) error {
		v, c := variants[i], cfg
		c.Servers, c.ColdWait = v.Min, v.ColdWait
		if !v.KeepWarm {
			c.KeepWarmEvery = 0
		}
		if v.Offload != "" {
			c.Offload, c.ColdDecide = v.Offload, true
		}
		r, err := RunMany(c, c.Functions*c.Max, unshared)
		r.Variant = v.Name
		rep.Results[i] = r
		if err != nil {
			return fmt.Errorf("%s: %w", v.Name, err)
		}
		return nil
	})
	return rep, err
}

// WriteZeroTable prints a scale-to-zero comparison as an aligned table.
func WriteZeroTable(w io.Writer, rep ManyReport) {
	c := rep.Config
	fmt.Fprintf(w, "%d functions  %d calls  base %g calls/s  zipf %g  bursts ×%g for %v every ~%v  max %d  service %v (cv %g)  worker start %v  lambda cold start %v (keep-alive %v)  scale to zero after %v  keep-warm every %v  %s  seed %d\n\n",
		c.Functions, c.Calls, c.Rate, c.Zipf, c.BurstFactor, c.BurstOn, c.BurstEvery, c.Max, c.Service, c.ServiceCV,
		c.WorkerColdStart, c.CloudColdStart, c.CloudKeepAlive, c.ScaleToZeroAfter, c.KeepWarmEvery, c.Offload, c.Seed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tp50 ms\tp99 ms\tp99.9 ms\tcold calls\tcold p50 ms\tcold p99 ms\tcold max ms\toffloaded\tcloud $\tpings $\tworker-h\tworker starts\tto zero\tsim h\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%d\t%.0f\t%.0f\t%.0f\t%.2f%%\t%.3f\t%.4f\t%.1f\t%d\t%d\t%.1f\t\n",
			r.Variant, r.P50Ms, r.P99Ms, r.P999Ms, r.ColdCalls, r.ColdP50Ms, r.ColdP99Ms, r.ColdMaxMs, 100*r.Offloaded,
			r.CloudCostUSD, r.PingCostUSD, r.WorkerSeconds/3600, r.WorkerStarts, r.ScaledToZero, r.SimSeconds/3600)
	}
	_ = tw.Flush() // errors surface on w's next use
}
