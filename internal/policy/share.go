package policy

import (
	"cmp"
	"slices"
	"time"
)

// FunctionShare is one function's standing when the functions served by one
// lb share MAX_TOTAL_WORKERS.
type FunctionShare struct {
	Name     string
	Min, Max int // --min and --max (Max below Min counts as Min)
	// Workers is what the function holds now: its members, starting ones
	// included, or more if it was last allowed more (the pool is about to
	// start them).
	Workers int
	// Want is its autoscaler's desired size.
	Want     int
	InFlight int
	// LastCall is its last arrival; zero means never.
	LastCall time.Time
}

// ShareRule says when a function that needs a worker, with the cap reached,
// may take one from another function. The simulator in policy/sim compares
// rules (BENCHMARKS.md, "Many functions: sharing MAX_TOTAL_WORKERS");
// DefaultShareRule is the one it chose.
type ShareRule struct {
	// IdleAfter is how old a function's last call must be before a worker
	// above its min can be taken from it. Too short and a function between
	// two calls of a steady stream loses a worker it needs a moment later
	// (a worker start costs seconds); too long and the needy function
	// offloads while idle workers wait for their own scale-down.
	IdleAfter time.Duration
	// Moves is the most workers one needy function may take from others in
	// one decision; 0 means never take (workers come back only when their
	// own autoscaler gives them up, after SCALE_DOWN_DELAY).
	Moves int
	// TakeBusy lets workers running calls be taken (they drain: finish
	// their calls, then stop). Without it a function gives only workers
	// beyond its calls in flight (InFlight counts calls, so with
	// WORKER_CONCURRENCY above 1 this spares more than it must).
	TakeBusy bool
}

// DefaultShareRule is lb's rule: a needy function takes its whole deficit
// at once from functions not called for at least a second (one default
// ELASTICITY_SLEEP tick), sparing workers that run calls. The simulator
// chose it (100 functions, 1M calls, caps of 120 to 200 workers over 100
// mins; BENCHMARKS.md, "Many functions: sharing MAX_TOTAL_WORKERS"):
//   - against a shared pool that never takes, it offloaded 10 to 19% fewer
//     calls at caps 150 and 200 with a p99 within 5%; static splits did
//     worse than both;
//   - taking from functions called less than a second ago offloaded fewer
//     still, but started 1.3 to 76 times more workers (a worker taken from a
//     function between two calls starts again a moment later) and raised
//     the p99 by up to 70%; half a second was close to one second and
//     started 60% more workers at cap 150 (a start costs the host CPU the
//     simulator does not charge);
//   - waiting 2s before taking kept about half of the gain, 3s a fifth;
//   - one worker per decision or the whole deficit differed by under a
//     point; taking workers that run calls changed nothing at 1s.
var DefaultShareRule = ShareRule{IdleAfter: time.Second, Moves: 1 << 30}

// Allot returns each function's allowed size now under DefaultShareRule
// (see ShareRule.Allot).
func Allot(total int, fns []FunctionShare, now time.Time) []int {
	return DefaultShareRule.Allot(total, fns, now, nil)
}

// Allot returns, aligned with fns, the size each function may have now when
// all of them together may hold at most total workers. It reuses dst's
// storage when it is large enough.
//
//   - Mins are always granted, even when together they exceed total.
//   - A function never gets more than it wants (clamped to [Min, Max]).
//   - A function that wants more grows into free capacity (total minus what
//     all hold), those holding fewest workers above their min first (ties:
//     more calls in flight, then name), so the share is max-min fair.
//   - When the cap is reached, workers that functions are giving back of
//     their own accord cover the remaining need first; past those, a needy
//     function takes up to Moves workers from functions above their min
//     that may give (ShareRule), idle the longest first: those functions'
//     sizes drop now, and the needy one grows on a later decision, once
//     their counts dropped. Sizes never rise past what the counts allow, so
//     the total stays within the cap except for mins.
//   - Above the cap (mins raised, or total lowered), functions above their
//     min give back the excess, idle the longest first, whatever the rule.
func (r ShareRule) Allot(total int, fns []FunctionShare, now time.Time, dst []int) []int {
	n := len(fns)
	dst = slices.Grow(dst[:0], n)[:n]
	held, release := 0, 0
	needy := 0
	for i, f := range fns {
		h := max(f.Workers, f.Min)
		w := want(f)
		dst[i] = min(w, h)
		held += h
		release += h - dst[i]
		if w > h {
			needy++
		}
	}
	free := total - held
	if free < 0 {
		// Over the cap: what is being given back counts first.
		excess := -free - release
		free = 0
		if excess > 0 {
			r.take(fns, now, dst, excess, true)
		}
		release = 0 // all of it goes to repaying the excess (or more than that)
	}
	if needy == 0 {
		return dst
	}
	order := make([]int, 0, needy)
	for i, f := range fns {
		if want(f) > max(f.Workers, f.Min) {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		fa, fb := fns[a], fns[b]
		return cmp.Or(
			cmp.Compare(max(fa.Workers, fa.Min)-fa.Min, max(fb.Workers, fb.Min)-fb.Min),
			cmp.Compare(fb.InFlight, fa.InFlight),
			cmp.Compare(fa.Name, fb.Name),
		)
	})
	for _, i := range order {
		deficit := want(fns[i]) - dst[i]
		g := min(deficit, free)
		dst[i] += g
		free -= g
		deficit -= g
		if deficit == 0 {
			continue
		}
		// Wait for workers already on their way back.
		c := min(deficit, release)
		release -= c
		deficit -= c
		if deficit > 0 && r.Moves > 0 {
			r.take(fns, now, dst, min(deficit, r.Moves), false)
		}
	}
	return dst
}

// want is f's autoscaler's size clamped to [Min, Max].
func want(f FunctionShare) int {
	return min(max(f.Want, f.Min), max(f.Max, f.Min))
}

// take lowers the sizes in dst of functions that may give, idle the
// longest first (never called before any call; ties by name), by up to n
// workers in all, none below its min. force ignores the rule (the total is
// over the cap) but still spares functions that want to grow, unless
// nothing else is left.
func (r ShareRule) take(fns []FunctionShare, now time.Time, dst []int, n int, force bool) {
	var donors, needy []int
	for i, f := range fns {
		switch {
		case dst[i] <= f.Min:
		case want(f) > max(f.Workers, f.Min):
			needy = append(needy, i)
		case force || f.LastCall.IsZero() || now.Sub(f.LastCall) >= r.IdleAfter:
			donors = append(donors, i)
		}
	}
	idle := func(a, b int) int {
		fa, fb := fns[a], fns[b]
		switch {
		case fa.LastCall.Equal(fb.LastCall):
			return cmp.Compare(fa.Name, fb.Name)
		case fa.LastCall.IsZero():
			return -1
		case fb.LastCall.IsZero():
			return 1
		}
		return fa.LastCall.Compare(fb.LastCall)
	}
	slices.SortFunc(donors, idle)
	if force {
		// The cap comes first: needy functions give too, last.
		slices.SortFunc(needy, idle)
		donors = append(donors, needy...)
	}
	for _, d := range donors {
		if n == 0 {
			return
		}
		floor := fns[d].Min
		if !force && !r.TakeBusy {
			floor = max(floor, fns[d].InFlight)
		}
		g := max(0, min(n, dst[d]-floor))
		dst[d] -= g
		n -= g
	}
}
