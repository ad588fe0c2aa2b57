package policy

import (
	"math"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

const ms = time.Millisecond

// est is a typical estimate: 100ms local service, 300ms cloud round trip,
// 2s worker cold start.
var est = Estimates{LocalService: 100 * ms, CloudRoundTrip: 300 * ms, WorkerColdStart: 2 * time.Second}

func mustOffloader(t *testing.T, name string, cfg OffloadConfig) Offloader {
	t.Helper()
	o, err := NewOffloader(name, cfg)
	if err != nil {
		t.Fatalf("NewOffloader(%q): %v", name, err)
	}
	return o
}

var (
	goLocal     = OffloadDecision{Route: spillway.RouteLocal}
	goOverflow  = OffloadDecision{Route: spillway.RouteCloud, Reason: spillway.ReasonOverflow}
	goPolicy    = OffloadDecision{Route: spillway.RouteCloud, Reason: spillway.ReasonPolicy}
	goCold      = OffloadDecision{Route: spillway.RouteCloud, Reason: spillway.ReasonCold}
	waitLocally = func(d time.Duration) OffloadDecision {
		return OffloadDecision{Route: spillway.RouteLocal, MaxWait: d}
	}
)

func TestNewOffloader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     OffloadConfig
		wantErr bool
	}{
		{"", OffloadConfig{}, false},
		{"overflow", OffloadConfig{}, false},
		{"never", OffloadConfig{}, false},
		{"always", OffloadConfig{}, false},
		{"latency-aware", OffloadConfig{CloudMaxRPS: 5, CloudMaxCostPerHour: 1, BudgetBurst: time.Second, WaitWeight: 4, LambdaMemoryMB: 3008}, false},
		{"latency-aware", OffloadConfig{}, true},                                            // no WaitWeight
		{"overflow", OffloadConfig{CloudMaxRPS: 5}, true},                                   // a cap without a burst
		{"overflow", OffloadConfig{CloudMaxCostPerHour: 1, BudgetBurst: time.Second}, true}, // a cost cap without the memory
		{"smart", OffloadConfig{}, true},
		{"overflow", OffloadConfig{QueueTimeout: -1}, true},
		{"overflow", OffloadConfig{CloudMaxRPS: -1}, true},
		{"overflow", OffloadConfig{CloudMaxCostPerHour: math.NaN()}, true},
		{"overflow", OffloadConfig{LambdaMemoryMB: -1}, true},
		{"latency-aware", OffloadConfig{WaitWeight: -1}, true},
		{"latency-aware", OffloadConfig{WaitWeight: math.Inf(1)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewOffloader(tc.name, tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestOffloadDecide(t *testing.T) {
	// in builds an input: MaxSlots 4 (MAX_SERVERS=4, concurrency 1), 2 ready.
	in := func(inFlight, queued, free int) OffloadInput {
		return OffloadInput{Now: t0, InFlight: inFlight, Queued: queued, MaxSlots: 4, ReadySlots: 2,
			FreeSlots: free, CloudAvailable: true, Estimates: est}
	}
	with := func(i OffloadInput, f func(*OffloadInput)) OffloadInput { f(&i); return i }
	cloudOff := func(i *OffloadInput) { i.CloudAvailable = false }
	pure := OffloadConfig{WaitWeight: 1} // compare plain expected completion times

	for _, tc := range []struct {
		name   string
		policy string
		cfg    OffloadConfig
		in     OffloadInput
		want   OffloadDecision
	}{
		// overflow: the reference rule.
		{"overflow/free slot", "overflow", OffloadConfig{}, in(1, 0, 1), goLocal},
		{"overflow/below max waits", "overflow", OffloadConfig{}, in(2, 1, 0), waitLocally(0)},
		{"overflow/at max", "overflow", OffloadConfig{}, in(2, 2, 0), goOverflow},
		{"overflow/at max running", "overflow", OffloadConfig{}, with(in(4, 0, 0), func(i *OffloadInput) { i.ReadySlots = 4 }), goOverflow},
		{"overflow/cloud off", "overflow", OffloadConfig{}, with(in(2, 5, 0), cloudOff), waitLocally(0)},
		{"overflow/queue timeout bounds wait", "overflow", OffloadConfig{QueueTimeout: 50 * ms}, in(2, 0, 0), waitLocally(50 * ms)},
		{"overflow/queue timeout passed", "overflow", OffloadConfig{QueueTimeout: 50 * ms},
			with(in(2, 0, 0), func(i *OffloadInput) { i.Waited = 50 * ms }), goOverflow},
		{"overflow/queue timeout passed, cloud off", "overflow", OffloadConfig{QueueTimeout: 50 * ms},
			with(in(2, 0, 0), func(i *OffloadInput) { i.Waited = 60 * ms; cloudOff(i) }), waitLocally(0)},
		{"overflow/MAX=N=1", "overflow", OffloadConfig{},
			with(in(1, 0, 0), func(i *OffloadInput) { i.MaxSlots, i.ReadySlots = 1, 1 }), goOverflow},
		{"overflow/N=1 free", "overflow", OffloadConfig{},
			with(in(0, 0, 1), func(i *OffloadInput) { i.MaxSlots, i.ReadySlots = 2, 1 }), goLocal},

		// never and always.
		{"never/full", "never", OffloadConfig{}, in(4, 10, 0), goLocal},
		{"always/free slot", "always", OffloadConfig{}, in(0, 0, 2), goPolicy},
		{"always/cloud off", "always", OffloadConfig{}, with(in(0, 0, 2), cloudOff), goLocal},
		{"always/cloud off full", "always", OffloadConfig{}, with(in(2, 3, 0), cloudOff), waitLocally(0)},

		// latency-aware: wait = position × 100ms / 2 ready slots (new slots
		// open after the 2s cold start); local done = wait + 100ms vs 300ms.
		{"latency/free slot", "latency-aware", pure, in(1, 0, 1), goLocal},
		{"latency/short queue stays", "latency-aware", pure, in(2, 1, 0), waitLocally(200 * ms)}, // wait 100ms: 200ms < 300ms
		{"latency/at max still stays", "latency-aware", pure,
			with(in(4, 0, 0), func(i *OffloadInput) { i.ReadySlots = 4 }), waitLocally(50 * ms)}, // wait 25ms
		{"latency/long queue goes", "latency-aware", pure, in(2, 4, 0), goPolicy},        // wait 250ms
		{"latency/tie stays", "latency-aware", pure, in(2, 3, 0), waitLocally(400 * ms)}, // wait 200ms: 300 = 300
		{"latency/cloud off", "latency-aware", pure, with(in(2, 9, 0), cloudOff), goLocal},
		{"latency/slow cloud keeps queue", "latency-aware", pure,
			with(in(2, 6, 0), func(i *OffloadInput) { i.Estimates.CloudRoundTrip = 3 * time.Second }), waitLocally(700 * ms)},
		{"latency/no ready slot, cold start beats slow cloud", "latency-aware", pure,
			with(in(0, 0, 0), func(i *OffloadInput) {
				i.ReadySlots, i.StartingSlots = 0, 2
				i.Estimates.CloudRoundTrip = 3 * time.Second
			}),
			waitLocally(4 * time.Second)},
		{"latency/no ready slot, cloud beats cold start", "latency-aware", pure,
			with(in(0, 0, 0), func(i *OffloadInput) { i.ReadySlots, i.StartingSlots = 0, 2 }), goCold},
		// A pool at zero: nothing ready or starting yet; the worker the
		// controller starts serves the call after WorkerColdStart, which
		// counts once (it is measured, not a guess of the queue), while
		// the queue behind it counts WaitWeight times.
		{"latency/at zero, warm cloud beats the worker start", "latency-aware", OffloadConfig{WaitWeight: 4},
			with(in(0, 0, 0), func(i *OffloadInput) { i.ReadySlots = 0 }), goCold}, // 2s+100ms > 300ms
		{"latency/at zero, worker start beats a cold Lambda", "latency-aware", OffloadConfig{WaitWeight: 4},
			with(in(0, 0, 0), func(i *OffloadInput) {
				i.ReadySlots = 0
				i.Estimates.WorkerColdStart, i.Estimates.CloudRoundTrip = 500*ms, time.Second
			}), waitLocally(time.Second)}, // 500ms+100ms <= 1s (weighted 4×500ms it would go)
		{"latency/at zero, a queue behind the start is weighted", "latency-aware", OffloadConfig{WaitWeight: 4},
			with(in(0, 5, 0), func(i *OffloadInput) {
				i.ReadySlots, i.MaxSlots = 0, 1
				i.Estimates.WorkerColdStart, i.Estimates.CloudRoundTrip = 500*ms, time.Second
			}), goCold}, // 500ms + 4×(5×100ms) > 1s
		{"latency/at zero, one starting, cloud off", "latency-aware", OffloadConfig{WaitWeight: 4},
			with(in(0, 0, 0), func(i *OffloadInput) { i.ReadySlots, i.StartingSlots = 0, 1; cloudOff(i) }), goLocal},
		{"latency/at zero, the share allows no worker", "latency-aware", OffloadConfig{WaitWeight: 4},
			with(in(0, 0, 0), func(i *OffloadInput) { i.ReadySlots, i.MaxSlots = 0, 0 }), goCold},
		{"latency/queue time timeout caps wait", "latency-aware", OffloadConfig{QueueTimeout: 20 * ms, WaitWeight: 1}, in(2, 1, 0), waitLocally(20 * ms)},
		{"latency/MAX=N=1 busy", "latency-aware", pure,
			with(in(1, 0, 0), func(i *OffloadInput) { i.MaxSlots, i.ReadySlots = 1, 1 }), waitLocally(200 * ms)},
		{"latency/MAX=N=1 queued", "latency-aware", pure,
			with(in(1, 2, 0), func(i *OffloadInput) { i.MaxSlots, i.ReadySlots = 1, 1 }), goPolicy},
		// lb's default WaitWeight 4 counts each second of queue wait four times.
		{"latency/weighted: short wait stays", "latency-aware", OffloadConfig{WaitWeight: 4},
			with(in(4, 0, 0), func(i *OffloadInput) { i.ReadySlots = 4 }), waitLocally(50 * ms)}, // 4×25ms+100ms <= 300ms
		{"latency/weighted: longer wait goes", "latency-aware", OffloadConfig{WaitWeight: 4}, in(2, 1, 0), goPolicy},       // 4×100ms+100ms > 300ms
		{"latency/weighted: tie stays", "latency-aware", OffloadConfig{WaitWeight: 4}, in(2, 0, 0), waitLocally(100 * ms)}, // 4×50ms+100ms = 300ms
		{"latency/zero slots, cloud off", "latency-aware", pure,
			with(in(0, 0, 0), func(i *OffloadInput) { i.MaxSlots, i.ReadySlots = 0, 0; cloudOff(i) }), goLocal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mustOffloader(t, tc.policy, tc.cfg).Decide(tc.in)
			if got != tc.want {
				t.Fatalf("Decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestOffloadBudget spends a CLOUD_MAX_RPS budget and a cost budget and
// checks every cloud-going policy stays local once it is spent and resumes
// when it refills.
func TestOffloadBudget(t *testing.T) {
	full := OffloadInput{Now: t0, InFlight: 4, MaxSlots: 4, ReadySlots: 4, Queued: 20, CloudAvailable: true, Estimates: est}
	// One call at 3008MB for 300ms costs about 0.0000147 USD.
	oneCall := CallCost(300*ms, 3008, DefaultPricePerGBSecond, DefaultPricePerRequest)
	for _, tc := range []struct {
		name  string
		cfg   OffloadConfig
		burst int           // cloud calls allowed at once
		back  time.Duration // at most one call's refill time, at least the time until one more is allowed
	}{
		{"rps", OffloadConfig{CloudMaxRPS: 2}, 2, 500 * ms},
		{"rps below one", OffloadConfig{CloudMaxRPS: 0.5}, 1, 2 * time.Second},
		{"rps with burst", OffloadConfig{CloudMaxRPS: 2, BudgetBurst: 3 * time.Second}, 6, 500 * ms},
		{"cost", OffloadConfig{CloudMaxCostPerHour: oneCall * 3600 * 3.5}, 3, 290 * ms},
		{"rps and cost", OffloadConfig{CloudMaxRPS: 10, CloudMaxCostPerHour: oneCall * 3600 * 2.5}, 2, 400 * ms},
	} {
		for _, policy := range []string{OffloadOverflow, OffloadAlways, OffloadLatencyAware} {
			t.Run(tc.name+"/"+policy, func(t *testing.T) {
				o := mustOffloader(t, policy, withLBDefaults(tc.cfg))
				for i := range tc.burst {
					if d := o.Decide(full); d.Route != spillway.RouteCloud {
						t.Fatalf("call %d: %+v, want cloud", i, d)
					}
				}
				// The waiter asks again once the budget is back for it and
				// the 20 calls queued ahead of it.
				d := o.Decide(full)
				if lim := 21*tc.back + ms; d.Route != spillway.RouteLocal || d.MaxWait <= tc.back || d.MaxWait > lim {
					t.Fatalf("budget spent: %+v, want local with MaxWait in (%v, %v]", d, tc.back, lim)
				}
				later := full
				later.Now = t0.Add(tc.back + ms)
				if d := o.Decide(later); d.Route != spillway.RouteCloud {
					t.Fatalf("after %v: %+v, want cloud", tc.back, d)
				}
				if d := o.Decide(later); d.Route != spillway.RouteLocal {
					t.Fatalf("second after refill: %+v, want local", d)
				}
			})
		}
	}
}

func TestOffloadBudgetSpentWithFreeSlot(t *testing.T) {
	o := mustOffloader(t, OffloadAlways, withLBDefaults(OffloadConfig{CloudMaxRPS: 1}))
	in := OffloadInput{Now: t0, MaxSlots: 2, ReadySlots: 2, FreeSlots: 2, CloudAvailable: true, Estimates: est}
	if d := o.Decide(in); d != goPolicy {
		t.Fatalf("first: %+v", d)
	}
	if d := o.Decide(in); d != goLocal {
		t.Fatalf("budget spent with a free slot: %+v, want local without wait", d)
	}
}

func TestLocalWait(t *testing.T) {
	inf := time.Duration(math.MaxInt64)
	for _, tc := range []struct {
		name                                   string
		queued, free, ready, starting, maxSlot int
		svc, cold                              time.Duration
		want                                   time.Duration
	}{
		{"free slot", 0, 1, 2, 0, 4, 100 * ms, time.Second, 0},
		{"first in line", 0, 0, 2, 0, 2, 100 * ms, time.Second, 50 * ms},
		{"third in line", 2, 0, 2, 0, 2, 100 * ms, time.Second, 150 * ms},
		{"new slots beat the queue", 30, 0, 1, 0, 11, 100 * ms, time.Second, 1100 * ms}, // 10 served by 1s, 10 at 1s, 11 more over 11 slots,
		{"queue drains before cold start", 4, 0, 2, 2, 4, 100 * ms, time.Second, 250 * ms},
		{"only starting slots", 1, 0, 0, 2, 2, 100 * ms, time.Second, time.Second},
		{"only starting slots, long line", 5, 0, 0, 2, 2, 100 * ms, time.Second, time.Second + 200*ms},
		{"no slots at all", 0, 0, 0, 0, 0, 100 * ms, time.Second, inf},
		{"zero service time", 3, 0, 1, 0, 1, 0, time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := LocalWait(OffloadInput{Queued: tc.queued, FreeSlots: tc.free, ReadySlots: tc.ready,
				StartingSlots: tc.starting, MaxSlots: tc.maxSlot,
				Estimates: Estimates{LocalService: tc.svc, WorkerColdStart: tc.cold}})
			if d := got - tc.want; d < -time.Microsecond || d > time.Microsecond {
				t.Fatalf("LocalWait = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLocalWaitParts(t *testing.T) {
	inf := time.Duration(math.MaxInt64)
	for _, tc := range []struct {
		name                                   string
		queued, free, ready, starting, maxSlot int
		start, queue                           time.Duration
	}{
		{"free slot", 0, 1, 2, 0, 4, 0, 0},
		{"ready slots serve it before new ones open", 2, 0, 2, 2, 4, 0, 150 * ms},
		{"at zero, first call", 0, 0, 0, 0, 4, time.Second, 0},
		{"at zero, first call, one starting", 0, 0, 0, 1, 1, time.Second, 0},
		{"at zero, behind three on one starting worker", 3, 0, 0, 1, 1, time.Second, 300 * ms},
		{"new slots, then a queue", 30, 0, 1, 0, 11, time.Second, 100 * ms},
		{"at zero, no slot allowed", 0, 0, 0, 0, 0, 0, inf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := OffloadInput{Queued: tc.queued, FreeSlots: tc.free, ReadySlots: tc.ready,
				StartingSlots: tc.starting, MaxSlots: tc.maxSlot,
				Estimates: Estimates{LocalService: 100 * ms, WorkerColdStart: time.Second}}
			start, queue := LocalWaitParts(in)
			near := func(a, b time.Duration) bool { return a-b < time.Microsecond && b-a < time.Microsecond }
			if !near(start, tc.start) || !near(queue, tc.queue) {
				t.Fatalf("LocalWaitParts = (%v, %v), want (%v, %v)", start, queue, tc.start, tc.queue)
			}
			if w, sum := LocalWait(in), start+queue; tc.queue != inf && !near(w, sum) {
				t.Fatalf("LocalWait = %v, want the parts' sum %v", w, sum)
			}
		})
	}
}

func TestCallCost(t *testing.T) {
	// 1s at 1024MB = 1 GB-s.
	got := CallCost(time.Second, 1024, DefaultPricePerGBSecond, DefaultPricePerRequest)
	want := DefaultPricePerGBSecond + DefaultPricePerRequest
	if math.Abs(got-want) > 1e-15 {
		t.Fatalf("CallCost = %g, want %g", got, want)
	}
}

// withLBDefaults fills the zero WaitWeight, BudgetBurst and LambdaMemoryMB
// with lb's defaults (OFFLOAD_WAIT_WEIGHT=4, CLOUD_BUDGET_BURST=1s,
// LAMBDA_MEMORY=3008), the values internal/config gives an empty
// environment.
func withLBDefaults(c OffloadConfig) OffloadConfig {
	if c.WaitWeight == 0 {
		c.WaitWeight = 4
	}
	if c.BudgetBurst == 0 {
		c.BudgetBurst = time.Second
	}
	if c.LambdaMemoryMB == 0 {
		c.LambdaMemoryMB = 3008
	}
	return c
}
