package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/spillway-faas/spillway"
)

// Report is what a replica publishes each tick.
type Report struct {
	ID         string                   `json:"lb_id"`
	Addr       string                   `json:"addr"`
	Controller bool                     `json:"controller"`
	Generation int64                    `json:"generation,omitempty"`
	Functions  map[string]spillway.Load `json:"functions"`
	At         time.Time                `json:"at"`
}

// Config describes one replica.
type Config struct {
	Pool string        // POOL_NAME: the replicas of one pool share a lease
	ID   string        // LB_ID: unique among the pool's replicas
	Addr string        // where it listens, for status
	Tick time.Duration // ELASTICITY_SLEEP: renew, report and read the others each tick
	// TTL is how long the lease outlives its last renewal (default 2×Tick,
	// so another replica takes over within 3×Tick of the holder's death).
	TTL time.Duration
	// Load is this replica's load, read each tick.
	Load func() map[string]spillway.Load
	// OnController learns each change of controllership; it runs on the
	// replica's goroutine and must not block for long.
	OnController func(controller bool)
	Log          *slog.Logger
}

func membersKey(pool string) string    { return "spillway:lbs:" + pool }
func reportKey(pool, id string) string { return "spillway:lb:" + pool + ":" + id }

func (c Config) reportTTL() time.Duration { return 3 * c.Tick }

// Replica runs one lb's part in the cluster: each tick it takes or renews
// the lease, publishes its load and reads the other replicas' reports.
// Build it with Open; Close stops it.
type Replica struct {
	cfg   Config
	rdb   *redis.Client
	lease *Lease
	log   *slog.Logger

	mu         sync.Mutex // guards the fields below
	peers      []Report   // the other live replicas at the last tick
	controller bool       // as last told to OnController
	stopped    bool

	cancel context.CancelFunc
	done   chan struct{}
}

// Open runs a first tick (so the caller knows at once whether it is the
// controller) and starts the loop.
func Open(ctx context.Context, rdb *redis.Client, cfg Config) (*Replica, error) {
	if cfg.Pool == "" || cfg.ID == "" || cfg.Tick <= 0 {
		return nil, fmt.Errorf("cluster: pool %q, id %q and tick %v are required", cfg.Pool, cfg.ID, cfg.Tick)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 2 * cfg.Tick
	}
	r := &Replica{cfg: cfg, rdb: rdb, lease: NewLease(rdb, cfg.Pool, cfg.ID, cfg.TTL), log: cfg.Log, done: make(chan struct{})}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "cluster", "lb_id", cfg.ID)
	if err := r.tick(ctx); err != nil {
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.loop(loopCtx)
	return r, nil
}

func (r *Replica) loop(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.tick(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("cluster tick", "err", err)
		}
	}
}

// tick is one round: lease, report, peers. Each Redis step is bounded by
// the tick.
func (r *Replica) tick(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.Tick, 500*time.Millisecond))
	defer cancel()
	now := time.Now()
	held, lerr := r.lease.Tick(ctx, now)
	r.setController(held)

	rep := Report{ID: r.cfg.ID, Addr: r.cfg.Addr, Controller: held, At: now.UTC()}
	if held {
		rep.Generation = r.lease.Generation()
	}
	if r.cfg.Load != nil {
		rep.Functions = r.cfg.Load()
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode load report: %w", err)
	}
	pipe := r.rdb.TxPipeline()
	pipe.Set(ctx, reportKey(r.cfg.Pool, r.cfg.ID), b, r.cfg.reportTTL())
	pipe.SAdd(ctx, membersKey(r.cfg.Pool), r.cfg.ID)
	if _, err := pipe.Exec(ctx); err != nil {
		return errors.Join(lerr, fmt.Errorf("publish load report: %w", err))
	}
	peers, err := ReadReports(ctx, r.rdb, r.cfg.Pool)
	if err != nil {
		return errors.Join(lerr, err)
	}
	peers = slices.DeleteFunc(peers, func(p Report) bool { return p.ID == r.cfg.ID })
	r.mu.Lock()
	r.peers = peers
	r.mu.Unlock()
	return lerr
}

func (r *Replica) setController(held bool) {
	r.mu.Lock()
	changed := r.controller != held && !r.stopped
	if changed {
		r.controller = held
	}
	r.mu.Unlock()
	if !changed {
		return
	}
	if held {
		r.log.Info("this lb is now the controller", "generation", r.lease.Generation())
	} else {
		r.log.Info("this lb is no longer the controller")
	}
	if r.cfg.OnController != nil {
		r.cfg.OnController(held)
	}
}

// ReadReports returns the live reports of pool's replicas, and forgets
// replicas whose report expired.
func ReadReports(ctx context.Context, rdb *redis.Client, pool string) ([]Report, error) {
	ids, err := rdb.SMembers(ctx, membersKey(pool)).Result()
	if err != nil {
		return nil, fmt.Errorf("list lb replicas: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	slices.Sort(ids)
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = reportKey(pool, id)
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("read lb load reports: %w", err)
	}
	var out []Report
	var gone []any
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			gone = append(gone, ids[i])
			continue
		}
		var rep Report
		if err := json.Unmarshal([]byte(s), &rep); err != nil {
			gone = append(gone, ids[i])
			continue
		}
		out = append(out, rep)
	}
	if len(gone) > 0 {
		if err := rdb.SRem(ctx, membersKey(pool), gone...).Err(); err != nil {
			return out, fmt.Errorf("forget expired lb replicas: %w", err)
		}
	}
	return out, nil
}

// ID is this replica's lb_id.
func (r *Replica) ID() string { return r.cfg.ID }

// Controller reports whether this replica holds the lease now.
func (r *Replica) Controller() bool { return r.lease.Held(time.Now()) }

// Fence fails with an error wrapping ErrNotController unless Redis still
// holds this replica's lease: actions that change shared state (start or
// remove a worker, deploy to the cloud) call it first.
func (r *Replica) Fence(ctx context.Context) error {
	return r.lease.Check(ctx, r.rdb, r.lease.Generation())
}

// Generation is the lease generation held, 0 when not the controller.
func (r *Replica) Generation() int64 { return r.lease.Generation() }

// Peers are the other live replicas at the last tick.
func (r *Replica) Peers() []Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.peers)
}

// OthersLoad sums the other live replicas' load of fn.
func (r *Replica) OthersLoad(fn string) spillway.Load {
	var sum spillway.Load
	for _, p := range r.Peers() {
		sum = sum.Add(p.Functions[fn])
	}
	return sum
}

// Close stops the loop, tells OnController it is no longer the
// controller, hands the lease over (another replica takes it on
// its next tick) and withdraws this replica's report. It returns how many
// other replicas are alive: those that report again within three ticks
// (a killed one's report outlives it that long).
func (r *Replica) Close(ctx context.Context) (others int, err error) {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	// Stop acting as controller before another replica can take over.
	r.setController(false)
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	var errs []error
	if err := r.lease.Release(ctx); err != nil {
		errs = append(errs, err)
	}
	pipe := r.rdb.TxPipeline()
	pipe.Del(ctx, reportKey(r.cfg.Pool, r.cfg.ID))
	pipe.SRem(ctx, membersKey(r.cfg.Pool), r.cfg.ID)
	if _, err := pipe.Exec(ctx); err != nil {
		errs = append(errs, fmt.Errorf("withdraw load report: %w", err))
	}
	peers, err := ReadReports(ctx, r.rdb, r.cfg.Pool)
	if err != nil {
		errs = append(errs, err)
		// Unknown: assume the others live, so their workers stay.
		return len(r.Peers()), errors.Join(errs...)
	}
	seen := map[string]time.Time{}
	for _, p := range peers {
		if p.ID != r.cfg.ID {
			seen[p.ID] = p.At
		}
	}
	if len(seen) == 0 {
		return 0, errors.Join(errs...)
	}
	// A report outlives a killed replica by up to three ticks: count only
	// the replicas that report again within three ticks.
	alive := map[string]bool{}
	deadline := time.NewTimer(3 * r.cfg.Tick)
	defer deadline.Stop()
	poll := time.NewTicker(max(r.cfg.Tick/4, 10*time.Millisecond))
	defer poll.Stop()
	for len(alive) < len(seen) {
		select {
		case <-ctx.Done():
			// Unknown: assume the unconfirmed ones live.
			return len(seen), errors.Join(append(errs, ctx.Err())...)
		case <-deadline.C:
			return len(alive), errors.Join(errs...)
		case <-poll.C:
		}
		fresh, err := ReadReports(ctx, r.rdb, r.cfg.Pool)
		if err != nil {
			continue
		}
		for _, p := range fresh {
			if at, ok := seen[p.ID]; ok && p.At.After(at) {
				alive[p.ID] = true
			}
		}
	}
	return len(alive), errors.Join(errs...)
}

// cloudKey holds what the controller deployed to the cloud for a function,
// for the others: spillway:cloud:<pool>:<function>.
func cloudKey(pool, function string) string { return "spillway:cloud:" + pool + ":" + function }

// Function is this replica's view for one function's cloud deployment:
// the lease is the pool's, the published deployment the function's own.
func (r *Replica) Function(name string) *FunctionReplica {
	return &FunctionReplica{r: r, key: cloudKey(r.cfg.Pool, name)}
}

// FunctionReplica is Replica.Function's view.
type FunctionReplica struct {
	r   *Replica
	key string
}

// Controller reports whether this replica holds the pool's lease.
func (f *FunctionReplica) Controller() bool { return f.r.Controller() }

// Fence fails unless this replica still holds the lease.
func (f *FunctionReplica) Fence(ctx context.Context) error { return f.r.Fence(ctx) }

// PublishCloud stores how to reach the function's cloud deployment for the
// other replicas, only while this replica holds the lease: a controller
// that lost it cannot overwrite its successor's deployment.
func (f *FunctionReplica) PublishCloud(ctx context.Context, data []byte) error {
	return f.r.publishCloud(ctx, f.key, data)
}

// ReadCloud returns what the controller last published for the function,
// nil when nothing is.
func (f *FunctionReplica) ReadCloud(ctx context.Context) ([]byte, error) {
	return f.r.readCloud(ctx, f.key)
}

// ForgetCloud removes the function's published deployment (it was
// deleted), only while this replica holds the lease.
func (f *FunctionReplica) ForgetCloud(ctx context.Context) error {
	if err := f.r.Fence(ctx); err != nil {
		return fmt.Errorf("forget the cloud deployment: %w", err)
	}
	if err := f.r.rdb.Del(ctx, f.key).Err(); err != nil {
		return fmt.Errorf("forget the cloud deployment: %w", err)
	}
	return nil
}

// publishScript writes KEYS[2] only while KEYS[1], the lease, holds ARGV[1]:
// a fenced write.
var publishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
`)

// publishCloud is FunctionReplica.PublishCloud.
func (r *Replica) publishCloud(ctx context.Context, key string, data []byte) error {
	gen := r.lease.Generation()
	if gen == 0 {
		return fmt.Errorf("publish the cloud deployment: %w", ErrNotController)
	}
	n, err := publishScript.Run(ctx, r.rdb, []string{r.lease.key, key}, r.lease.value(gen), data).Int64()
	if err != nil {
		return fmt.Errorf("publish the cloud deployment: %w", err)
	}
	if n != 1 {
		return fmt.Errorf("publish the cloud deployment: lease lost: %w", ErrNotController)
	}
	return nil
}

// readCloud is FunctionReplica.ReadCloud.
func (r *Replica) readCloud(ctx context.Context, key string) ([]byte, error) {
	b, err := r.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the cloud deployment: %w", err)
	}
	return b, nil
}
