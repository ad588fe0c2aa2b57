package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/pool"
)

func version(v int64, sha string) spillway.Function {
	return spillway.Function{Name: "faas", Version: v, SHA256: sha, Style: spillway.StyleScript}
}

// startRollout runs a rollout from v1 and a cloud rollout (controller,
// real time) until the test ends.
func startRollout(t *testing.T, p *fakePool, dep *fakeDeployer) (*Rollout, chan spillway.Function, *events) {
	t.Helper()
	v1 := version(1, "aaa")
	p.fn = v1
	ev := &events{}
	cr := NewCloudRollout(v1, CloudRolloutDeps{Deployer: dep, Offload: &fakeOffload{}, Replica: &fakeReplica{controller: true},
		Tick: time.Second, Events: ev})
	updates := make(chan spillway.Function)
	r := NewRollout(v1, RolloutDeps{Updates: updates, Pool: p, Cloud: cr, Events: ev})
	ctx, cancel := context.WithCancel(context.Background())
	go cr.Run(ctx)
	go r.Run(ctx)
	t.Cleanup(func() {
		cancel()
		r.Close()
		cr.Close()
	})
	return r, updates, ev
}

func TestRolloutRollsNewCodeOnly(t *testing.T) {
	p := &fakePool{}
	dep := &fakeDeployer{}
	r, updates, ev := startRollout(t, p, dep)
	waitFor(t, "first deploy", r.CloudCurrent)

	// A new version with the same code (only a flag changed): it applies at
	// once, nothing rolls, the cloud stays current.
	flags := version(2, "aaa")
	flags.Idempotent = true
	updates <- flags
	waitFor(t, "flag applied", func() bool { return r.Function().Idempotent })
	if rolls := p.rolls(); len(rolls) != 0 || !r.CloudCurrent() {
		t.Errorf("same code: rolls %v, cloud current %v; want no roll and a current cloud", rolls, r.CloudCurrent())
	}

	// New code: the pool rolls and the cloud follows.
	updates <- version(3, "bbb")
	waitFor(t, "roll and deploy of v3", func() bool {
		return slices.Equal(p.rolls(), []int64{3}) && slices.Contains(dep.attempts(), 3) && r.CloudCurrent()
	})
	if fn := r.Function(); fn.Version != 3 {
		t.Errorf("Function() = v%d, want v3", fn.Version)
	}
	waitFor(t, "roll event", func() bool { return slices.Contains(ev.all(), "roll: every worker runs version 3") })
}

func TestRolloutNewCodeStaysLocalUntilDeployed(t *testing.T) {
	// The cloud deploy of v2 fails: the pool rolls anyway, and calls of v2
	// stay local (CloudCurrent false) while the cloud runs v1.
	p := &fakePool{}
	dep := &fakeDeployer{}
	r, updates, _ := startRollout(t, p, dep)
	waitFor(t, "first deploy", r.CloudCurrent)
	dep.mu.Lock()
	dep.fails = []error{errors.New("lambda says no"), errors.New("lambda says no")}
	dep.mu.Unlock()
	updates <- version(2, "bbb")
	waitFor(t, "roll to v2", func() bool { return slices.Equal(p.rolls(), []int64{2}) })
	if r.CloudCurrent() {
		t.Error("cloud current while its deploy of v2 failed")
	}
}

func TestRolloutReportsIncompleteRoll(t *testing.T) {
	p := &fakePool{rollErr: errors.New("no worker became ready")}
	_, updates, ev := startRollout(t, p, &fakeDeployer{})
	updates <- version(2, "bbb")
	waitFor(t, "incomplete-roll event", func() bool {
		return slices.ContainsFunc(ev.all(), func(e string) bool { return strings.HasPrefix(e, "roll: roll to version 2 incomplete") })
	})
}

// TestCloudDeployBackoff moves the clock by hand through failed deploys:
// the waits double from 1s, and the deploy that succeeds sets the endpoint,
// publishes it to the other replicas and marks the version deployed.
func TestCloudDeployBackoff(t *testing.T) {
	clock := newFakeClock()
	fail := errors.New("CreateFunction: throttled")
	dep := &fakeDeployer{fails: []error{fail, fail, fail, fail, fail, fail}}
	off := &fakeOffload{}
	rep := &fakeReplica{controller: true}
	ev := &events{}
	v1 := version(1, "aaa")
	c := NewCloudRollout(v1, CloudRolloutDeps{Deployer: dep, Offload: off, Replica: rep, Tick: time.Second, Events: ev, Clock: clock})
	go c.Run(context.Background())
	defer c.Close()

	for i, want := range []time.Duration{1, 2, 4, 8, 16, 30} {
		<-clock.waiting
		if got := clock.pending(); !slices.Equal(got, []time.Duration{want * time.Second}) {
			t.Fatalf("after failure %d: waits %v, want %v", i+1, got, want*time.Second)
		}
		if c.Deployed() != "" {
			t.Fatalf("deployed after failure %d", i+1)
		}
		clock.Advance(want * time.Second)
	}
	waitFor(t, "deployed and published", func() bool { return c.Deployed() == pool.Key(v1) && rep.publishedData() != nil })
	if n := len(dep.attempts()); n != 7 {
		t.Errorf("%d deploy attempts, want 7", n)
	}
	if ep := off.endpoint(); ep.FunctionName != "faas" {
		t.Errorf("offload endpoint %+v, want the deployed one", ep)
	}
	var pub deployment
	published := rep.publishedData()
	if err := json.Unmarshal(published, &pub); err != nil || pub.Version != 1 || pub.Key != pool.Key(v1) || pub.Endpoint.FunctionName != "faas" {
		t.Errorf("published %s (%v), want version 1 and its endpoint", published, err)
	}
	if evs := ev.all(); !slices.Equal(evs, []string{"lb: cloud deployed: faas v1"}) {
		t.Errorf("events %q", evs)
	}
}

func TestCloudDeployWantsNewest(t *testing.T) {
	// v2 is wanted while v1's deploy waits for its retry: the retry deploys
	// v2, and an older version wanted late never replaces it.
	clock := newFakeClock()
	dep := &fakeDeployer{fails: []error{errors.New("boom")}}
	c := NewCloudRollout(version(1, "aaa"), CloudRolloutDeps{Deployer: dep, Offload: &fakeOffload{},
		Replica: &fakeReplica{controller: true}, Tick: time.Second, Clock: clock})
	go c.Run(context.Background())
	defer c.Close()
	<-clock.waiting
	c.Want(version(2, "bbb"))
	c.Want(version(1, "aaa"))
	clock.Advance(time.Second)
	waitFor(t, "v2 deployed", func() bool { return c.Deployed() == pool.Key(version(2, "bbb")) })
	if got := dep.attempts(); !slices.Equal(got[:2], []int64{1, 2}) {
		t.Errorf("deployed versions %v, want 1 then 2", got)
	}
}

func TestCloudRolloutFollower(t *testing.T) {
	// Not the controller: no deploy; each tick it looks for the controller's
	// deployment of the wanted version, points the offloader at it and
	// counts the cloud current, so this replica offloads too. A fence lost
	// mid-deploy waits a tick too, not the backoff.
	clock := newFakeClock()
	dep := &fakeDeployer{}
	off := &fakeOffload{}
	rep := &fakeReplica{}
	c := NewCloudRollout(version(2, "bbb"), CloudRolloutDeps{Deployer: dep, Offload: off, Replica: rep, Tick: 3 * time.Second, Clock: clock})
	go c.Run(context.Background())
	defer c.Close()

	<-clock.waiting // nothing published
	if got := clock.pending(); !slices.Equal(got, []time.Duration{3 * time.Second}) {
		t.Fatalf("waits %v, want one tick (3s)", got)
	}
	old, _ := json.Marshal(deployment{Version: 1})
	rep.mu.Lock()
	rep.readCloud = old
	rep.mu.Unlock()
	clock.Advance(3 * time.Second)
	<-clock.waiting // only an older version published
	cur, _ := json.Marshal(deployment{Version: 2, Key: pool.Key(version(2, "bbb")), Endpoint: cloudEndpoint("faas")})
	rep.mu.Lock()
	rep.readCloud = cur
	rep.mu.Unlock()
	clock.Advance(3 * time.Second)
	waitFor(t, "adopted", func() bool {
		return off.endpoint().FunctionName == "faas" && c.Deployed() == pool.Key(version(2, "bbb"))
	})
	if n := len(dep.attempts()); n != 0 {
		t.Errorf("a follower deployed %d times", n)
	}
	if r := NewRollout(version(2, "bbb"), RolloutDeps{Cloud: c}); !r.CloudCurrent() {
		t.Error("a follower that adopted the controller's deployment keeps calls off the cloud")
	}

	// Promoted, but the lease is lost before the deploy: wait a tick.
	rep.mu.Lock()
	rep.controller, rep.fenceErr = true, fmt.Errorf("fence: %w", cluster.ErrNotController)
	rep.mu.Unlock()
	c.Want(version(3, "ccc"))
	<-clock.waiting
	if got := clock.pending(); !slices.Equal(got, []time.Duration{3 * time.Second}) {
		t.Fatalf("waits %v after a lost fence, want one tick (3s)", got)
	}
}
