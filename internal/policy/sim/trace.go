package sim

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Trace kinds.
const (
	TracePoisson = "poisson" // constant rate Rate
	TraceBursts  = "bursts"  // Rate, with Peak for On out of every Period
	TraceDiurnal = "diurnal" // smooth ramp Rate → Peak → Rate over each Period
	TraceStep    = "step"    // Rate until StepAt, then Peak
	TraceCSV     = "csv"     // the timestamps in Times
)

// Trace describes the arrivals a run replays. Synthetic kinds are
// non-homogeneous Poisson processes drawn from the run's seed.
type Trace struct {
	Kind   string
	Rate   float64       // base rate, calls/s
	Peak   float64       // burst / peak rate, calls/s
	Period time.Duration // bursts and diurnal: cycle length
	On     time.Duration // bursts: how long each burst lasts (from a quarter into each period)
	StepAt time.Duration // step: when the rate jumps
	Times  []float64     // csv: arrival offsets in seconds, sorted, from 0
}

// Validate reports a trace that cannot be replayed.
func (tr Trace) Validate() error {
	switch tr.Kind {
	case TracePoisson:
		if tr.Rate <= 0 {
			return fmt.Errorf("poisson trace needs --rate > 0")
		}
	case TraceBursts, TraceDiurnal:
		if tr.Rate < 0 || tr.Peak <= 0 || tr.Period <= 0 {
			return fmt.Errorf("%s trace needs --rate >= 0, --peak > 0 and --period > 0", tr.Kind)
		}
		if tr.Kind == TraceBursts && (tr.On <= 0 || tr.On > tr.Period) {
			return fmt.Errorf("bursts trace needs 0 < --on <= --period")
		}
	case TraceStep:
		if tr.Rate < 0 || tr.Peak <= 0 {
			return fmt.Errorf("step trace needs --rate >= 0 and --peak > 0")
		}
	case TraceCSV:
		if len(tr.Times) == 0 {
			return fmt.Errorf("csv trace has no timestamps")
		}
	default:
		return fmt.Errorf("unknown trace %q (want poisson, bursts, diurnal, step or csv:FILE)", tr.Kind)
	}
	return nil
}

// RateAt is the trace's true arrival rate at t seconds, and false for csv
// traces, whose rate is unknown.
func (tr Trace) RateAt(t float64) (float64, bool) {
	switch tr.Kind {
	case TracePoisson:
		return tr.Rate, true
	case TraceBursts:
		// Bursts start one quarter into each period, so every run begins
		// at the base rate with the pool at N.
		p := tr.Period.Seconds()
		ph := math.Mod(t, p) - p/4
		if ph >= 0 && ph < tr.On.Seconds() {
			return tr.Peak, true
		}
		return tr.Rate, true
	case TraceDiurnal:
		x := (1 - math.Cos(2*math.Pi*t/tr.Period.Seconds())) / 2
		return tr.Rate + (tr.Peak-tr.Rate)*x, true
	case TraceStep:
		if t >= tr.StepAt.Seconds() {
			return tr.Peak, true
		}
		return tr.Rate, true
	}
	return 0, false
}

func (tr Trace) maxRate() float64 {
	return math.Max(tr.Rate, tr.Peak)
}

// arrivals yields arrival times in seconds, in order.
type arrivals struct {
	tr   Trace
	rng  *rand.Rand
	t    float64
	end  float64
	i    int
	lmax float64
}

func newArrivals(tr Trace, rng *rand.Rand, duration time.Duration) *arrivals {
	return &arrivals{tr: tr, rng: rng, end: duration.Seconds(), lmax: tr.maxRate()}
}

var _ process = (*arrivals)(nil)

// next returns the next arrival time, or false when the trace is over. A
// trace keeps its own place, so it needs no time.
func (a *arrivals) next(float64) (float64, bool) {
	if a.tr.Kind == TraceCSV {
		if a.i >= len(a.tr.Times) || (a.end > 0 && a.tr.Times[a.i] >= a.end) {
			return 0, false
		}
		a.i++
		return a.tr.Times[a.i-1], true
	}
	if a.lmax <= 0 {
		return 0, false
	}
	for { // thinning
		a.t += a.rng.ExpFloat64() / a.lmax
		if a.t >= a.end {
			return 0, false
		}
		r, _ := a.tr.RateAt(a.t)
		if r >= a.lmax || a.rng.Float64()*a.lmax < r {
			return a.t, true
		}
	}
}

// ReadCSV reads arrival timestamps: the first comma-separated field of each
// line, in seconds (absolute, e.g. Unix time, or relative). Blank lines,
// lines starting with # and a non-numeric header are skipped. The times are
// sorted and shifted to start at 0.
func ReadCSV(r io.Reader) ([]float64, error) {
	var ts []float64
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f, _, _ := strings.Cut(s, ",")
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			if line == 1 && len(ts) == 0 {
				continue // header
			}
			return nil, fmt.Errorf("reading trace line %d: %q is not a time in seconds", line, f)
		}
		ts = append(ts, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading trace: %w", err)
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("reading trace: no timestamps")
	}
	slices.Sort(ts)
	t0 := ts[0]
	for i := range ts {
		ts[i] -= t0
	}
	return ts, nil
}
