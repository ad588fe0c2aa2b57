package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestAllot(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	long := time.Minute
	// fs builds a function: min 1, max 8, idle for a minute, nothing in flight.
	fs := func(name string, workers, want int) FunctionShare {
		return FunctionShare{Name: name, Min: 1, Max: 8, Workers: workers, Want: want, LastCall: ago(long)}
	}
	with := func(f FunctionShare, mod func(*FunctionShare)) FunctionShare { mod(&f); return f }
	one := ShareRule{IdleAfter: 5 * time.Second, Moves: 1}
	for _, tc := range []struct {
		name  string
		rule  ShareRule
		total int
		fns   []FunctionShare
		want  []int
	}{
		{"under the cap each gets what it wants", DefaultShareRule, 10,
			[]FunctionShare{fs("a", 2, 4), fs("b", 1, 3)}, []int{4, 3}},
		{"a shrinking function shrinks", DefaultShareRule, 10,
			[]FunctionShare{fs("a", 4, 2), fs("b", 1, 1)}, []int{2, 1}},
		{"want clamped to min and max", DefaultShareRule, 20,
			[]FunctionShare{fs("a", 1, 0), fs("b", 1, 12)}, []int{1, 8}},
		{"free capacity goes to the one with fewest above its min", DefaultShareRule, 6,
			[]FunctionShare{fs("a", 3, 6), fs("b", 1, 4)}, []int{3, 3}},
		{"ties by calls in flight", DefaultShareRule, 5,
			[]FunctionShare{with(fs("a", 2, 4), func(f *FunctionShare) { f.InFlight = 1; f.LastCall = now }),
				with(fs("b", 2, 4), func(f *FunctionShare) { f.InFlight = 3; f.LastCall = now })}, []int{2, 3}},
		{"full: the idle donor shrinks, the needy one waits", DefaultShareRule, 6,
			[]FunctionShare{with(fs("busy", 2, 4), func(f *FunctionShare) { f.LastCall = now }), fs("idle", 4, 4)}, []int{2, 2}},
		{"full: one per decision with Moves 1", one, 6,
			[]FunctionShare{with(fs("busy", 2, 4), func(f *FunctionShare) { f.LastCall = now }), fs("idle", 4, 4)}, []int{2, 3}},
		{"full: Moves 0 never takes", ShareRule{}, 6,
			[]FunctionShare{with(fs("busy", 2, 4), func(f *FunctionShare) { f.LastCall = now }), fs("idle", 4, 4)}, []int{2, 4}},
		{"donor not below its min", DefaultShareRule, 6,
			[]FunctionShare{with(fs("busy", 2, 8), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("idle", 4, 4), func(f *FunctionShare) { f.Min = 3 })}, []int{2, 3}},
		{"recently called is spared", DefaultShareRule, 6,
			[]FunctionShare{with(fs("busy", 2, 4), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("recent", 4, 4), func(f *FunctionShare) { f.LastCall = ago(500 * time.Millisecond) })}, []int{2, 4}},
		{"workers running calls are spared", DefaultShareRule, 6,
			[]FunctionShare{with(fs("busy", 2, 4), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("running", 4, 4), func(f *FunctionShare) { f.InFlight = 3 })}, []int{2, 3}},
		{"all running: nothing to take", DefaultShareRule, 6,
			[]FunctionShare{with(fs("busy", 2, 4), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("running", 4, 4), func(f *FunctionShare) { f.InFlight = 4 })}, []int{2, 4}},
		{"workers running calls are taken with TakeBusy", ShareRule{Moves: 5, TakeBusy: true}, 6,
			[]FunctionShare{with(fs("busy", 2, 4), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("running", 4, 4), func(f *FunctionShare) { f.InFlight = 3 })}, []int{2, 2}},
		{"idle the longest gives first, never called before all", one, 5,
			[]FunctionShare{with(fs("busy", 1, 2), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("old", 2, 2), func(f *FunctionShare) { f.LastCall = ago(time.Hour) }),
				with(fs("never", 2, 2), func(f *FunctionShare) { f.LastCall = time.Time{} }),
			}, []int{1, 2, 1}},
		{"idle the longest gives first", one, 5,
			[]FunctionShare{with(fs("busy", 1, 2), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("newer", 2, 2), func(f *FunctionShare) { f.LastCall = ago(10 * time.Second) }),
				with(fs("older", 2, 2), func(f *FunctionShare) { f.LastCall = ago(20 * time.Second) }),
			}, []int{1, 2, 1}},
		{"workers on their way back cover the need first", DefaultShareRule, 6,
			[]FunctionShare{with(fs("busy", 2, 3), func(f *FunctionShare) { f.LastCall = now }),
				fs("shrinking", 2, 1), fs("idle", 2, 2)}, []int{2, 1, 2}},
		{"the deficit past what comes back is taken", DefaultShareRule, 6,
			[]FunctionShare{with(fs("busy", 2, 5), func(f *FunctionShare) { f.LastCall = now }),
				fs("shrinking", 2, 1), fs("idle", 2, 2)}, []int{2, 1, 1}},
		{"mins over the cap are granted", DefaultShareRule, 2,
			[]FunctionShare{fs("a", 0, 1), fs("b", 0, 1), fs("c", 0, 1)}, []int{1, 1, 1}},
		{"over the cap: excess taken, idle the longest first, regardless of the rule", ShareRule{}, 4,
			[]FunctionShare{with(fs("new", 0, 1), func(f *FunctionShare) { f.Min = 2 }),
				with(fs("a", 3, 3), func(f *FunctionShare) { f.LastCall = now; f.InFlight = 2 }),
				fs("b", 1, 1)}, []int{2, 1, 1}},
		{"over the cap: needy functions give last", DefaultShareRule, 3,
			[]FunctionShare{with(fs("needy", 2, 5), func(f *FunctionShare) { f.LastCall = now }),
				with(fs("steady", 2, 2), func(f *FunctionShare) { f.LastCall = now; f.InFlight = 2 })}, []int{2, 1}},
		{"empty", DefaultShareRule, 8, nil, []int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.rule.Allot(tc.total, tc.fns, now, nil)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Allot = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAllotInvariants checks on random standings what every decision
// promises: sizes within [min, wanted], growth only into free capacity, and
// the total within the cap except for mins.
func TestAllotInvariants(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	rules := []ShareRule{DefaultShareRule, {}, {Moves: 1}, {Moves: 3, TakeBusy: true}, {IdleAfter: time.Minute, Moves: 1 << 30}}
	var dst []int
	for iter := range 20000 {
		n := rng.IntN(8)
		total := rng.IntN(20)
		fns := make([]FunctionShare, n)
		for i := range fns {
			f := FunctionShare{Name: fmt.Sprint(i), Min: rng.IntN(3), Max: rng.IntN(8), Workers: rng.IntN(8), Want: rng.IntN(10), InFlight: rng.IntN(2)}
			if rng.IntN(4) > 0 {
				f.LastCall = now.Add(-time.Duration(rng.IntN(120)) * time.Second)
			}
			fns[i] = f
		}
		r := rules[iter%len(rules)]
		dst = r.Allot(total, fns, now, dst)
		held, mins, sum, sumHeldOrMore := 0, 0, 0, 0
		for i, f := range fns {
			h := max(f.Workers, f.Min)
			held += h
			mins += f.Min
			sum += dst[i]
			sumHeldOrMore += max(h, dst[i])
			if dst[i] < f.Min || dst[i] > want(f) {
				t.Fatalf("%+v %+v: size %d of %s outside [min %d, wanted %d]", r, fns, dst[i], f.Name, f.Min, want(f))
			}
		}
		if sumHeldOrMore > max(total, held) {
			t.Fatalf("%+v total %d %+v: %v grows past free capacity", r, total, fns, dst)
		}
		if sum > max(total, mins) {
			t.Fatalf("%+v total %d %+v: %v sums to %d, over the cap and the mins", r, total, fns, dst, sum)
		}
	}
}

func BenchmarkAllot100(b *testing.B) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	fns := make([]FunctionShare, 100)
	for i := range fns {
		fns[i] = FunctionShare{Name: fmt.Sprint(i), Min: 1, Max: 8, Workers: 1, Want: 1, LastCall: now.Add(-time.Duration(i) * time.Second)}
	}
	fns[0].Want, fns[0].Workers = 8, 2
	var dst []int
	b.ReportAllocs()
	for b.Loop() {
		dst = DefaultShareRule.Allot(100, fns, now, dst)
	}
}
