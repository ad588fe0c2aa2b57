package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/pool"
)

// RolledPool is the part of the worker pool a rollout moves
// (internal/pool.Pool).
type RolledPool interface {
	// Function is the version the pool's new members run.
	Function() spillway.Function
	// Roll moves the pool to fn; it returns when every worker runs it.
	Roll(ctx context.Context, fn spillway.Function) error
}

// rollTimeout bounds one roll of the pool and one deploy to the cloud.
const rollTimeout = 5 * time.Minute

// RolloutDeps are what a rollout follows and moves.
type RolloutDeps struct {
	// Updates delivers each new version of the function
	// (registry.VersionWatcher.Updates).
	Updates <-chan spillway.Function
	Pool    RolledPool
	// Cloud follows the pool to each new version; nil when CLOUD=off.
	Cloud  *CloudRollout
	Events spillway.EventSink // nil tells no one
	Log    *slog.Logger
}

// Rollout follows the function's versions: it records what the workers run
// (the gateway reads it on every call), rolls the pool to each new version
// and hands that version to the cloud, which follows on its own.
type Rollout struct {
	d       RolloutDeps
	log     *slog.Logger
	loop    loop
	current atomic.Pointer[spillway.Function] // what the workers run (or roll to)
}

// NewRollout starts from first, the version the pool opened with.
func NewRollout(first spillway.Function, d RolloutDeps) *Rollout {
	r := &Rollout{d: d, log: d.Log}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.current.Store(&first)
	return r
}

// Function is what the workers run now.
func (r *Rollout) Function() spillway.Function { return *r.current.Load() }

// CloudCurrent reports whether the cloud runs the workers' code: calls of a
// newer version than the cloud's stay local. Without a cloud it is true.
func (r *Rollout) CloudCurrent() bool {
	return r.d.Cloud == nil || r.d.Cloud.Deployed() == pool.Key(r.Function())
}

// Run follows the updates until ctx ends, Close, or the updates end.
func (r *Rollout) Run(ctx context.Context) {
	r.loop.run(ctx, func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case fn, ok := <-r.d.Updates:
				if !ok {
					return
				}
				r.update(ctx, fn)
			}
		}
	})
}

// Close stops following and waits; a roll under way is abandoned (the pool
// goes on with it).
func (r *Rollout) Close() { r.loop.close() }

// update takes a new version: flags such as idempotent apply at once; new
// code, style or handler rolls the pool and redeploys the cloud.
func (r *Rollout) update(ctx context.Context, fn spillway.Function) {
	same := pool.Key(fn) == pool.Key(r.d.Pool.Function())
	r.current.Store(&fn)
	if same {
		return // same code, style and handler: nothing to roll
	}
	r.log.Info("function updated; rolling the pool", "version", fn.Version, "sha256", short(fn.SHA256))
	if r.d.Cloud != nil {
		// The cloud follows in its own loop: a slow or failing deploy never
		// holds up the local roll, and until it succeeds the new version's
		// calls stay local (CloudCurrent).
		r.d.Cloud.Want(fn)
	}
	rctx, cancel := context.WithTimeout(ctx, rollTimeout)
	defer cancel()
	if err := r.d.Pool.Roll(rctx, fn); err != nil {
		r.log.Error("roll to the new version incomplete", "version", fn.Version, "err", err)
		r.event(spillway.EventRoll, fmt.Sprintf("roll to version %d incomplete: %v", fn.Version, err))
		return
	}
	r.log.Info("pool rolled", "version", fn.Version)
	r.event(spillway.EventRoll, fmt.Sprintf("every worker runs version %d", fn.Version))
}

func (r *Rollout) event(kind spillway.EventKind, cause string) {
	if r.d.Events != nil {
		r.d.Events.Event(kind, cause)
	}
}

// Deployer puts a function version in the cloud and says where to call it
// (internal/cloud.Deployer).
type Deployer interface {
	Deploy(ctx context.Context, fn spillway.Function) (cloud.Endpoint, error)
}

// EndpointSetter is the offload client's target (internal/cloud.Offloader).
type EndpointSetter interface {
	SetEndpoint(ep cloud.Endpoint)
}

// DeployReplica is what a cloud rollout needs of this lb's place among the
// pool's replicas (internal/cluster.Replica): only the controller deploys,
// and it publishes its deployment for the others.
type DeployReplica interface {
	Controller() bool
	// Fence fails unless this replica still holds the lease.
	Fence(ctx context.Context) error
	PublishCloud(ctx context.Context, data []byte) error
	// ReadCloud is what the controller published; nil when nothing yet.
	ReadCloud(ctx context.Context) ([]byte, error)
}

// CloudRolloutDeps are the cloud and the replica a cloud rollout works with.
type CloudRolloutDeps struct {
	Deployer Deployer
	Offload  EndpointSetter
	Replica  DeployReplica
	// Tick (ELASTICITY_SLEEP) is how often a replica that is not the
	// controller looks for the controller's deployment.
	Tick   time.Duration
	Events spillway.EventSink // nil tells no one
	Log    *slog.Logger
	Clock  Clock
}

// CloudRollout keeps the cloud on the wanted version: the controller
// deploys it, retrying with capped backoff; another replica waits until the
// controller has published it (or it becomes the controller itself). It runs
// apart from the pool's rolls, which never wait for it.
type CloudRollout struct {
	d     CloudRolloutDeps
	log   *slog.Logger
	clock Clock
	loop  loop
	kick  chan struct{} // a new version is wanted (buffer 1)

	deployMu sync.Mutex // serialises deploys

	wantMu sync.Mutex        // guards want
	want   spillway.Function // the newest version the cloud should run

	deployed atomic.Pointer[string] // pool.Key of what the cloud runs
}

// NewCloudRollout wants first in the cloud; Run deploys it.
func NewCloudRollout(first spillway.Function, d CloudRolloutDeps) *CloudRollout {
	c := &CloudRollout{d: d, log: d.Log, clock: clockOr(d.Clock), kick: make(chan struct{}, 1)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.Want(first)
	return c
}

// Want records the version the cloud should run and asks Run to deploy it;
// every deploy after it deploys this one, so a slow retry of an older
// version never wins.
func (c *CloudRollout) Want(fn spillway.Function) {
	c.wantMu.Lock()
	if fn.Version >= c.want.Version {
		c.want = fn
	}
	c.wantMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default: // a deploy of the newest wanted version is already due
	}
}

func (c *CloudRollout) wanted() spillway.Function {
	c.wantMu.Lock()
	defer c.wantMu.Unlock()
	return c.want
}

// Deployed is the pool.Key of what the cloud runs, as this replica
// deployed it or adopted the controller's deployment; "" until then.
func (c *CloudRollout) Deployed() string {
	if k := c.deployed.Load(); k != nil {
		return *k
	}
	return ""
}

// Run deploys the wanted version each time one is wanted, until ctx ends
// or Close.
func (c *CloudRollout) Run(ctx context.Context) {
	c.loop.run(ctx, func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.kick:
			}
			c.deployWithRetry(ctx)
		}
	})
}

// Close stops deploying and waits.
func (c *CloudRollout) Close() { c.loop.close() }

// errNotPublished says the controller has not published the wanted version.
var errNotPublished = errors.New("the controller has not deployed this version yet")

// maxBackoff caps the wait between failed deploys.
const maxBackoff = 30 * time.Second

// deployWithRetry makes the offloader reach the wanted version.
func (c *CloudRollout) deployWithRetry(ctx context.Context) {
	backoff := time.Second
	for {
		var err error
		if c.d.Replica.Controller() {
			err = c.deployOnce(ctx)
		} else {
			err = c.adopt(ctx)
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		wait := backoff
		if errors.Is(err, cluster.ErrNotController) || errors.Is(err, errNotPublished) {
			wait = c.d.Tick
		} else {
			c.log.Warn("cloud deploy failed; offloading waits for it", "err", err, "retry_in", backoff)
			backoff = min(2*backoff, maxBackoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.clock.After(wait):
		}
	}
}

// deployment is what the controller publishes of its cloud deployment.
type deployment struct {
	Version  int64          `json:"version"`
	Key      string         `json:"key,omitempty"` // pool.Key of the deployed version
	Endpoint cloud.Endpoint `json:"endpoint"`
}

// adopt points the offloader at the controller's deployment of the wanted
// version.
func (c *CloudRollout) adopt(ctx context.Context) error {
	fn := c.wanted()
	b, err := c.d.Replica.ReadCloud(ctx)
	if err != nil {
		return err
	}
	if b == nil {
		return errNotPublished
	}
	var dep deployment
	if err := json.Unmarshal(b, &dep); err != nil {
		return fmt.Errorf("read the controller's cloud deployment: %w", err)
	}
	if dep.Version < fn.Version {
		return errNotPublished
	}
	c.d.Offload.SetEndpoint(dep.Endpoint)
	key := dep.Key
	if key == "" { // published by an lb that did not say
		key = pool.Key(fn)
	}
	c.deployed.Store(&key)
	c.log.Info("cloud deployment of the controller adopted", "function", fn.Name, "version", dep.Version, "endpoint", dep.Endpoint)
	return nil
}

// deployOnce deploys the wanted version as the controller and publishes it.
func (c *CloudRollout) deployOnce(ctx context.Context) error {
	c.deployMu.Lock()
	defer c.deployMu.Unlock()
	fn := c.wanted()
	dctx, cancel := context.WithTimeout(ctx, rollTimeout)
	defer cancel()
	start := c.clock.Now()
	if err := c.d.Replica.Fence(dctx); err != nil {
		return fmt.Errorf("deploy %s v%d: %w", fn.Name, fn.Version, err)
	}
	ep, err := c.d.Deployer.Deploy(dctx, fn)
	if err != nil {
		return fmt.Errorf("deploy %s v%d: %w", fn.Name, fn.Version, err)
	}
	c.d.Offload.SetEndpoint(ep)
	key := pool.Key(fn)
	c.deployed.Store(&key)
	if c.d.Events != nil {
		c.d.Events.Event(spillway.EventStart, fmt.Sprintf("cloud deployed: %s v%d", fn.Name, fn.Version))
	}
	if b, err := json.Marshal(deployment{Version: fn.Version, Key: key, Endpoint: ep}); err == nil {
		if err := c.d.Replica.PublishCloud(dctx, b); err != nil {
			c.log.Warn("publish the cloud deployment to the other replicas", "err", err)
		}
	}
	c.log.Info("cloud deployed", "function", fn.Name, "version", fn.Version, "endpoint", ep,
		"took", c.clock.Now().Sub(start).Round(time.Millisecond))
	return nil
}
