package control

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
)

func TestElasticityStep(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		controller bool
		peers      bool // false: a lone lb
		desired    int  // the pool's desired size before the tick
		decide     int  // the autoscaler's answer
		wantSnap   *policy.ScaleSnapshot
		wantScaled []int
		wantEvent  string // prefix of the one event, "" for none
		wantLast   string
	}{
		{name: "follower stays quiet", peers: true, desired: 2, decide: 4},
		{name: "lone lb is the controller", desired: 2, decide: 3,
			wantSnap:   &policy.ScaleSnapshot{Now: now, Members: 2, Ready: 2, InFlight: 3, Queued: 1, ArrivalRate: 10, ServiceTime: time.Second, ColdStart: 2 * time.Second},
			wantScaled: []int{3}, wantEvent: "scale up: 2 → 3 workers: busy", wantLast: "2026-01-01T12:00:00Z 2->3 (busy)"},
		{name: "controller sizes for every replica", controller: true, peers: true, desired: 2, decide: 4,
			wantSnap:   &policy.ScaleSnapshot{Now: now, Members: 2, Ready: 2, InFlight: 3 + 7, Queued: 1 + 5, ArrivalRate: 10 + 40, ServiceTime: time.Second, ColdStart: 2 * time.Second},
			wantScaled: []int{4}, wantEvent: "scale up: 2 → 4 workers", wantLast: "2026-01-01T12:00:00Z 2->4 (busy)"},
		{name: "scale down", desired: 4, decide: 2,
			wantScaled: []int{2}, wantEvent: "scale down: 4 → 2 workers", wantLast: "2026-01-01T12:00:00Z 4->2 (busy)"},
		{name: "same size: scaled, no event", desired: 2, decide: 2, wantScaled: []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakePool{counts: spillway.PoolCounts{Members: 2, Ready: 2, Desired: tt.desired}}
			var got *policy.ScaleSnapshot
			ev := &events{}
			d := ElasticityDeps{
				Pool:      p,
				Calls:     &fakeCalls{load: spillway.Load{InFlight: 3, Queued: 1, ArrivalRate: 99}},
				Estimator: fakeEstimator{ArrivalRate: 10, LocalService: time.Second, WorkerColdStart: 2 * time.Second},
				Autoscaler: autoscalerFunc(func(s policy.ScaleSnapshot) policy.ScaleDecision {
					got = &s
					return policy.ScaleDecision{Desired: tt.decide, Reason: "busy"}
				}),
				Events: ev,
			}
			if tt.peers {
				d.Peers = &fakeReplica{controller: tt.controller, others: spillway.Load{InFlight: 7, Queued: 5, ArrivalRate: 40}}
			}
			e := NewElasticity(ElasticityConfig{Function: "faas", Tick: time.Second}, d)
			e.step(now)
			if tt.wantSnap != nil && (got == nil || *got != *tt.wantSnap) {
				t.Errorf("snapshot:\n got %+v\nwant %+v", got, tt.wantSnap)
			}
			if tt.wantSnap == nil && tt.wantScaled == nil && got != nil {
				t.Errorf("decided on %+v, want no decision", *got)
			}
			if s := p.scales(); !slices.Equal(s, tt.wantScaled) {
				t.Errorf("Scale calls %v, want %v", s, tt.wantScaled)
			}
			evs := ev.all()
			switch {
			case tt.wantEvent == "" && len(evs) != 0:
				t.Errorf("events %q, want none", evs)
			case tt.wantEvent != "" && (len(evs) != 1 || !strings.HasPrefix(evs[0], tt.wantEvent)):
				t.Errorf("events %q, want one starting %q", evs, tt.wantEvent)
			}
			if last := e.LastScale(); last != tt.wantLast {
				t.Errorf("LastScale = %q, want %q", last, tt.wantLast)
			}
		})
	}
}

// TestElasticityTicks moves the clock by hand: the loop decides once per
// tick, only while this replica is the controller, and stops on Close.
func TestElasticityTicks(t *testing.T) {
	clock := newFakeClock()
	p := &fakePool{counts: spillway.PoolCounts{Members: 1, Ready: 1, Desired: 1}}
	rep := &fakeReplica{}
	decisions := 0
	e := NewElasticity(ElasticityConfig{Function: "faas", Tick: time.Second}, ElasticityDeps{
		Pool: p, Calls: &fakeCalls{}, Peers: rep, Clock: clock,
		Autoscaler: autoscalerFunc(func(s policy.ScaleSnapshot) policy.ScaleDecision {
			decisions++
			return policy.ScaleDecision{Desired: s.Members + 1}
		}),
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(context.Background())
	}()
	<-clock.waiting // the loop waits for its first tick
	tick := func() {
		t.Helper()
		if got := clock.pending(); len(got) != 1 || got[0] != time.Second {
			t.Fatalf("pending waits %v, want one of the tick (1s)", got)
		}
		clock.Advance(time.Second)
		<-clock.waiting // the tick is handled: the loop waits for the next
	}
	for range 3 {
		tick() // a follower: quiet
	}
	rep.setController(true)
	tick()
	tick()
	if s := p.scales(); !slices.Equal(s, []int{2, 2}) || decisions != 2 {
		t.Errorf("Scale calls %v after 3 follower and 2 controller ticks, decisions %d; want [2 2], 2", s, decisions)
	}
	e.Close()
	<-done
	e.Run(context.Background()) // never runs again after Close
}

// A kick steps at once, without waiting for the tick (a call found the
// function at zero workers), and sees the latest call of every replica.
func TestElasticityKick(t *testing.T) {
	clock := newFakeClock()
	p := &fakePool{counts: spillway.PoolCounts{}}
	own := clock.Now().Add(-time.Second)
	peer := clock.Now()
	rep := &fakeReplica{controller: true, others: spillway.Load{LastCall: peer}}
	seen := make(chan policy.ScaleSnapshot, 4)
	e := NewElasticity(ElasticityConfig{Function: "faas", Tick: time.Hour}, ElasticityDeps{
		Pool: p, Calls: &fakeCalls{load: spillway.Load{LastCall: own}}, Peers: rep, Clock: clock,
		Autoscaler: autoscalerFunc(func(s policy.ScaleSnapshot) policy.ScaleDecision {
			seen <- s
			return policy.ScaleDecision{Desired: 1, Reason: policy.ScaleFromZero}
		}),
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(context.Background())
	}()
	<-clock.waiting
	e.Kick()
	select {
	case s := <-seen:
		if !s.LastCall.Equal(peer) {
			t.Errorf("snapshot's last call %v, want the later of this replica's (%v) and the others' (%v)", s.LastCall, own, peer)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a kick did not step within 10s (the tick is an hour away)")
	}
	<-clock.waiting
	if s := p.scales(); !slices.Equal(s, []int{1}) {
		t.Errorf("Scale calls %v, want [1]", s)
	}
	e.Close()
	<-done
}
