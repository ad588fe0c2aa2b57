package control

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
)

// fakeClock is a clock the test moves by hand: After fires once Advance
// has passed its deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
	waiting chan struct{} // gets a token each time After is called
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), waiting: make(chan struct{}, 1000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, clockWaiter{at: c.now.Add(d), ch: ch})
	c.waiting <- struct{}{}
	return ch
}

// Advance moves the clock by d and fires every wait that is due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.SliceStable(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// pending is the deadlines of the waits not yet fired, as offsets from now.
func (c *fakeClock) pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, w := range c.waiters {
		out = append(out, w.at.Sub(c.now))
	}
	return out
}

// fakePool is a worker pool as the control parts see it; every field is
// guarded by mu.
type fakePool struct {
	mu       sync.Mutex
	counts   spillway.PoolCounts
	snap     pool.Snapshot
	fn       spillway.Function
	scaled   []int
	rolled   []int64 // versions Roll was asked for
	rollErr  error
	rollHold chan struct{} // when set, Roll waits for it
}

func (p *fakePool) Counts() spillway.PoolCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

func (p *fakePool) Scale(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.scaled = append(p.scaled, n)
	p.counts.Desired = n
	return n
}

func (p *fakePool) scales() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.scaled...)
}

func (p *fakePool) Snapshot() pool.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snap
}

func (p *fakePool) Function() spillway.Function {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fn
}

func (p *fakePool) Roll(ctx context.Context, fn spillway.Function) error {
	p.mu.Lock()
	p.fn = fn
	p.rolled = append(p.rolled, fn.Version)
	hold, err := p.rollHold, p.rollErr
	p.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (p *fakePool) rolls() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.rolled...)
}

// fakeCalls is the gateway's side of the load and the status.
type fakeCalls struct {
	load  spillway.Load
	calls spillway.CallStats
	ready bool
}

func (c *fakeCalls) Load() spillway.Load       { return c.load }
func (c *fakeCalls) Calls() spillway.CallStats { return c.calls }
func (c *fakeCalls) Ready() bool               { return c.ready }

// fakeEstimator returns fixed estimates.
type fakeEstimator policy.Estimates

func (e fakeEstimator) Estimates(time.Time) policy.Estimates { return policy.Estimates(e) }

// fakeReplica is this lb among the pool's replicas.
type fakeReplica struct {
	mu         sync.Mutex
	controller bool
	others     spillway.Load
	peers      []cluster.Report
	fenceErr   error
	published  []byte
	readCloud  []byte // what the controller published, as a follower reads it
}

func (r *fakeReplica) ID() string { return "lb-a" }
func (r *fakeReplica) Controller() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.controller
}
func (r *fakeReplica) setController(c bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.controller = c
}
func (r *fakeReplica) OthersLoad(string) spillway.Load { return r.others }
func (r *fakeReplica) Peers() []cluster.Report         { return r.peers }
func (r *fakeReplica) Fence(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fenceErr
}
func (r *fakeReplica) PublishCloud(_ context.Context, b []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.published = b
	return nil
}
func (r *fakeReplica) publishedData() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.published
}
func (r *fakeReplica) ReadCloud(context.Context) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readCloud, nil
}

// fakeDeployer deploys with the errors of fails, one per attempt, then
// succeeds.
type fakeDeployer struct {
	mu       sync.Mutex
	fails    []error
	deployed []int64 // versions asked for
}

func (d *fakeDeployer) Deploy(_ context.Context, fn spillway.Function) (cloud.Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deployed = append(d.deployed, fn.Version)
	if len(d.fails) > 0 {
		err := d.fails[0]
		d.fails = d.fails[1:]
		return cloud.Endpoint{}, err
	}
	return cloudEndpoint(fn.Name), nil
}

func cloudEndpoint(name string) cloud.Endpoint {
	return cloud.Endpoint{InvokeURL: "https://cloud.test/" + name, FunctionName: name}
}

func (d *fakeDeployer) attempts() []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int64(nil), d.deployed...)
}

// fakeOffload is the offload client: its target and its state.
type fakeOffload struct {
	mu    sync.Mutex
	ep    cloud.Endpoint
	stats cloud.Stats
	ready bool
}

func (o *fakeOffload) SetEndpoint(ep cloud.Endpoint) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ep = ep
}

func (o *fakeOffload) endpoint() cloud.Endpoint {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ep
}

func (o *fakeOffload) Ready() bool               { return o.ready }
func (o *fakeOffload) State() cloud.BreakerState { return o.stats.Breaker }
func (o *fakeOffload) Stats() cloud.Stats        { return o.stats }

// events records operator events.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) Event(kind spillway.EventKind, cause string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, string(kind)+": "+cause)
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

type autoscalerFunc func(policy.ScaleSnapshot) policy.ScaleDecision

func (f autoscalerFunc) Decide(s policy.ScaleSnapshot) policy.ScaleDecision { return f(s) }

// waitFor polls cond for up to 10s.
func waitFor(t interface {
	Helper()
	Fatalf(string, ...any)
}, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
