package pool

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// mv builds a member view: state, "new" or "old" code, calls in flight.
func mv(state State, code string, inFlight int) memberView {
	return memberView{state: state, key: code, inFlight: inFlight, hasContainer: true}
}

// acts renders a plan as "start", "remove 0", "drain 2 (scale down)", ...
func acts(as []action) []string {
	out := []string{}
	for _, a := range as {
		switch a.kind {
		case actStart:
			out = append(out, "start")
		case actRemove:
			out = append(out, fmt.Sprintf("remove %d", a.member))
		case actForget:
			out = append(out, fmt.Sprintf("forget %d", a.member))
		case actDrain:
			out = append(out, fmt.Sprintf("drain %d (%s)", a.member, a.reason))
		}
	}
	return out
}

func TestPlan(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	noContainer := mv(StateFailed, "new", 0)
	noContainer.hasContainer = false
	goneFailed := mv(StateFailed, "new", 0)
	goneFailed.gone = true
	tests := []struct {
		name     string
		follower bool
		// managed: the workers are a service's replicas (the pool views
		// itself as a follower then); controller: this lb controls it.
		managed, controller bool
		desired             int
		nextTry             time.Duration // after t0; 0: no backoff
		at                  time.Duration // now, after t0
		members             []memberView
		want                []string
	}{
		{name: "empty pool starts the desired size", desired: 2, want: []string{"start", "start"}},
		{name: "starting members count", desired: 2, members: []memberView{mv(StateStarting, "new", 0), mv(StateReady, "new", 1)}},
		{name: "backoff holds starts", desired: 2, nextTry: 2 * time.Second, at: time.Second},
		{name: "backoff over", desired: 2, nextTry: 2 * time.Second, at: 2 * time.Second, want: []string{"start", "start"}},
		{name: "failed member removed and replaced", desired: 1, members: []memberView{mv(StateFailed, "new", 0)},
			want: []string{"remove 0", "start"}},
		{name: "failed start without a container is forgotten", desired: 1, members: []memberView{noContainer},
			want: []string{"forget 0", "start"}},
		{name: "drained member removed once idle", desired: 1,
			members: []memberView{mv(StateDraining, "new", 0), mv(StateDraining, "new", 2), mv(StateReady, "new", 0)},
			want:    []string{"remove 0"}},
		{name: "scale down drains idle members, newest first", desired: 1,
			members: []memberView{mv(StateReady, "new", 0), mv(StateReady, "new", 0), mv(StateReady, "new", 1)},
			want:    []string{"drain 1 (scale down)", "drain 0 (scale down)"}},
		{name: "scale down never drains a busy member", desired: 1,
			members: []memberView{mv(StateReady, "new", 1), mv(StateReady, "new", 3)}},
		{name: "roll starts the new version, old ones keep serving", desired: 2,
			members: []memberView{mv(StateReady, "old", 0), mv(StateReady, "old", 1)},
			want:    []string{"start", "start"}},
		{name: "roll drains one old member per ready new one, idle first", desired: 2,
			members: []memberView{mv(StateReady, "old", 1), mv(StateReady, "old", 0), mv(StateReady, "new", 0), mv(StateStarting, "new", 0)},
			want:    []string{"drain 1 (roll to version 7)"}},
		{name: "roll drains busy old members when no idle one is left", desired: 2,
			members: []memberView{mv(StateReady, "old", 1), mv(StateReady, "old", 2), mv(StateReady, "new", 0), mv(StateReady, "new", 0)},
			want:    []string{"drain 0 (roll to version 7)", "drain 1 (roll to version 7)"}},
		{name: "follower only forgets, never starts or drains", follower: true, desired: 3,
			members: []memberView{mv(StateFailed, "new", 0), mv(StateDraining, "new", 0), mv(StateReady, "old", 0), mv(StateReady, "new", 0)},
			want:    []string{"forget 0", "forget 1"}},
		{name: "a service's controller has a failed worker still listed replaced, forgets the rest, starts nothing",
			follower: true, managed: true, controller: true, desired: 3,
			members: []memberView{mv(StateFailed, "new", 0), goneFailed, mv(StateDraining, "new", 0), mv(StateReady, "old", 0)},
			want:    []string{"remove 0", "forget 1", "forget 2"}},
		{name: "a service's follower only forgets", follower: true, managed: true, desired: 3,
			members: []memberView{mv(StateFailed, "new", 0), goneFailed, mv(StateDraining, "new", 0), mv(StateReady, "old", 0)},
			want:    []string{"forget 0", "forget 1", "forget 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := view{follower: tt.follower, managed: tt.managed, controller: tt.controller, desired: tt.desired, key: "new", version: 7, members: tt.members}
			if tt.nextTry > 0 {
				v.nextTry = t0.Add(tt.nextTry)
			}
			got := acts(plan(v, t0.Add(tt.at)))
			want := tt.want
			if want == nil {
				want = []string{}
			}
			if !slices.Equal(got, want) {
				t.Errorf("plan:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestPlanMovesWithTime replays a failed start's backoff on a clock moved by
// hand: no start before nextTry, the missing members at it.
func TestPlanMovesWithTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := view{desired: 3, key: "new", nextTry: t0.Add(500 * time.Millisecond),
		members: []memberView{mv(StateReady, "new", 0)}}
	for _, step := range []struct {
		at     time.Duration
		starts int
	}{{0, 0}, {250 * time.Millisecond, 0}, {499 * time.Millisecond, 0}, {500 * time.Millisecond, 2}, {time.Second, 2}} {
		if got := len(plan(v, t0.Add(step.at))); got != step.starts {
			t.Errorf("at +%v: %d starts, want %d", step.at, got, step.starts)
		}
	}
}
