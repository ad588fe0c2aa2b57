package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/control"
	"github.com/spillway-faas/spillway/internal/fleet"
	"github.com/spillway-faas/spillway/internal/gateway"
	"github.com/spillway-faas/spillway/internal/netguard"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/share"
)

// daemon owns what lb's functions share: Redis, the replicas' lease, the
// workers' network, the cloud budget and AWS configuration, the share of
// MAX_TOTAL_WORKERS, the metrics, the router on lb's port and the fleet of
// function units. close releases it in reverse order.
type daemon struct {
	cfg    config.Config
	log    *slog.Logger
	events spillway.EventSink

	store   *registry.Store
	watcher *registry.SetWatcher
	replica *cluster.Replica
	network engine      // POOL_BACKEND's: the pool's network and its leftovers, no function's own
	awsCfg  *aws.Config // nil when CLOUD=off
	budget  *policy.Budget
	share   *share.Ledger
	metrics *prometheus.Registry
	router  *gateway.Router
	board   *control.Board
	fleet   *fleet.Fleet

	unitsMu sync.Mutex
	units   map[string]*unit // the serving units, by function
	// firsts are the functions published when lb started that have not
	// yet served or failed a start: lb is ready once none is left.
	firsts map[string]bool
	pools  map[string]*pool.Pool // every unit's pool from its creation, starting ones too

	others atomic.Int64 // replicas left when this one left the lease (set by close)
	ready  sync.Once    // tells the first moment lb is ready

	cancel context.CancelFunc // stops the loops below
	wg     sync.WaitGroup
}

// othersRemain reports whether other lb replicas serve the pool after this
// one leaves: its units then leave their workers to them.
func (d *daemon) othersRemain() bool { return d.others.Load() > 0 }

func start(ctx context.Context, cfg config.Config, log *slog.Logger, guard *netguard.Listener, events spillway.EventSink) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, events: events, metrics: prometheus.NewRegistry(),
		units: map[string]*unit{}, pools: map[string]*pool.Pool{}, firsts: map[string]bool{}}
	loopCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	defer func() {
		if err != nil {
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			_ = d.close(cctx)
		}
	}()

	d.store, err = registry.Dial(ctx, cfg.RedisAddr, registry.Options{Password: cfg.RedisPassword, ConnectTimeout: time.Minute, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("connect to Redis at %s (REDIS_ADDR): %w", cfg.RedisAddr, err)
	}

	// The pool's replicas: the lease holder controls every function's
	// workers and cloud deployment.
	d.replica, err = cluster.Open(ctx, d.store.Client(), cluster.Config{
		Pool: cfg.PoolName, ID: cfg.LBID, Addr: cfg.ListenAddr(), Tick: cfg.ElasticitySleep, Log: log,
		Load: d.load,
		// A pool that is still opening learns it too: as a follower it
		// waits for the controller's workers, which it may have to start.
		OnController: func(controller bool) {
			d.unitsMu.Lock()
			defer d.unitsMu.Unlock()
			for _, p := range d.pools {
				p.SetController(controller)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("join the lb replicas of pool %s (POOL_NAME): %w", cfg.PoolName, err)
	}
	log.Info("lb replica", "lb_id", cfg.LBID, "controller", d.replica.Controller(), "others", len(d.replica.Peers()))

	// One budget for every path to the cloud, of every function.
	if d.budget, err = policy.NewBudget(cfg.OffloadConfig()); err != nil {
		return nil, fmt.Errorf("cloud budget: %w", err)
	}
	if d.awsCfg, err = awsConfig(ctx, cfg); err != nil {
		return nil, err
	}
	d.share = share.New(cfg.MaxTotalWorkers, time.Now)

	// The workers' network, shared by every function's workers.
	if d.network, err = openEngine(ctx, cfg, log); err != nil {
		return nil, err
	}
	if err := d.network.CheckImage(ctx); err != nil {
		return nil, err
	}
	subnets, err := d.network.Subnets(ctx)
	if err != nil {
		return nil, fmt.Errorf("workers' subnets, to refuse them on lb's port: %w", err)
	}
	guard.Deny(subnets)
	log.Info("refusing connections from the workers' network", "network", cfg.DockerNetwork, "subnets", fmt.Sprint(subnets))

	gateway.RegisterProcessMetrics(d.metrics)
	d.metrics.MustRegister(control.LBCollectors(d.replica, guard.Refused)...)
	d.router = gateway.NewRouter(gateway.RouterConfig{DefaultFunction: cfg.FunctionName,
		MaxRequestBytes: cfg.MaxRequestBytes, AuthToken: cfg.AuthToken, Pprof: cfg.Pprof}, d.metrics, log)
	d.board = control.NewBoard(control.BoardConfig{
		DefaultFunction: cfg.FunctionName, ListenAddr: cfg.ListenAddr(),
		PoolMin: cfg.NumberOfServers, PoolMax: cfg.MaxServers, Concurrency: cfg.WorkerConcurrency,
		Scheduler: cfg.Scheduler, OffloadPolicy: cfg.OffloadPolicy, Autoscaler: cfg.Autoscaler, CloudMode: cfg.Cloud.Mode,
	}, control.BoardDeps{Reports: d.reports, Ready: d.router.Ready, Replicas: d.replica, Share: d.share.Status})

	// The functions published now are starting from the first moment; the
	// default one too while it is not published yet, so that call_faas
	// says "starting" rather than "no such function".
	if selected(cfg, cfg.FunctionName) {
		d.router.Starting(cfg.FunctionName)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	fns, err := d.store.List(rctx)
	rcancel()
	if err != nil {
		return nil, fmt.Errorf("list the published functions: %w", err)
	}
	for _, fn := range fns {
		if selected(cfg, fn.Name) {
			d.router.Starting(fn.Name)
			d.firsts[fn.Name] = true
		}
	}
	d.router.SetReadyCheck(func() bool {
		d.unitsMu.Lock()
		defer d.unitsMu.Unlock()
		return len(d.firsts) == 0
	})
	if len(fns) == 0 {
		log.Warn("no function published yet; waiting for one", "hint", "bin/addfaas --name "+cfg.FunctionName+" examples/fib.py")
	}

	d.fleet = fleet.New(fleet.Config{
		Select: func(name string) bool { return selected(cfg, name) },
		Start:  d.startUnit,
		Hooks: fleet.Hooks{
			Starting: d.router.Starting,
			Serving: func(name string, fu fleet.Unit) {
				u := fu.(*unit)
				d.unitsMu.Lock()
				d.units[name] = u
				delete(d.firsts, name)
				d.unitsMu.Unlock()
				d.router.Serve(name, u.gw)
				d.tellReady()
			},
			Leaving: func(name string, deleted bool) {
				d.unitsMu.Lock()
				delete(d.units, name)
				delete(d.firsts, name)
				d.unitsMu.Unlock()
				if deleted {
					d.router.Remove(name)
					log.Info("function deleted: draining its calls, removing its workers and cloud resources", "function", name)
				}
			},
			Failed: func(name string, err error) {
				d.unitsMu.Lock()
				delete(d.firsts, name)
				d.unitsMu.Unlock()
				d.tellReady()
				events.Event(spillway.EventStart, fmt.Sprintf("%s could not start: %v", name, err))
			},
		},
		CloseTimeout: cfg.DrainTimeout + time.Minute,
		Log:          log,
	})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.sweepOrphans(loopCtx)
	}()
	d.watcher = d.store.WatchAll(loopCtx)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.follow(loopCtx)
	}()
	return d, nil
}

// sweepOrphans removes, once lb is ready and if it is the controller, the
// workers of functions it does not serve: deleted while no lb ran, or no
// longer selected by FUNCTIONS (another pool's lb would not share its
// POOL_NAME). Their cloud resources stay: lb cannot tell which it made.
func (d *daemon) sweepOrphans(ctx context.Context) {
	for !d.router.Ready() || !d.replica.Controller() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	names, err := d.network.PoolFunctions(sctx)
	if err != nil {
		d.log.Warn("look for workers of functions not served", "err", err)
		return
	}
	published, err := d.store.List(sctx)
	if err != nil {
		d.log.Warn("look for workers of functions not served", "err", err)
		return
	}
	served := map[string]bool{}
	for _, n := range d.router.Names() {
		served[n] = true
	}
	for _, fn := range published {
		if selected(d.cfg, fn.Name) {
			served[fn.Name] = true // starting, or about to
		}
	}
	for _, name := range names {
		if served[name] {
			continue
		}
		b, err := d.network.For(spillway.Function{Name: name})
		if err != nil {
			d.log.Warn("remove workers of a function not served", "function", name, "err", err)
			continue
		}
		if svc, ok := b.(pool.ServiceBackend); ok {
			if err := svc.RemoveService(sctx); err != nil {
				d.log.Warn("remove the service of a function not served", "function", name, "err", err)
			}
			continue
		}
		ws, err := b.List(sctx)
		if err != nil {
			d.log.Warn("remove workers of a function not served", "function", name, "err", err)
			continue
		}
		for _, w := range ws {
			if err := b.Remove(sctx, w.ID); err != nil {
				d.log.Warn("remove a worker of a function not served", "function", name, "worker", w.Name, "err", err)
			}
		}
		d.log.Info("removed the workers of a function not served", "function", name, "workers", len(ws))
	}
}

// tellReady logs and shows the first moment lb is ready.
func (d *daemon) tellReady() {
	if !d.router.Ready() {
		return
	}
	d.ready.Do(func() {
		names := strings.Join(d.router.Names(), ", ")
		d.log.Info("lb ready", "functions", names)
		d.events.Event(spillway.EventStart, "lb ready: serving "+names)
	})
}

// follow hands the registry's changes to the fleet until ctx ends.
func (d *daemon) follow(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-d.watcher.Changes():
			if !ok {
				return
			}
			d.fleet.Apply(fleet.Change{Function: c.Function, Deleted: c.Deleted})
		}
	}
}

// selected reports whether FUNCTIONS selects name.
func selected(cfg config.Config, name string) bool {
	return cfg.Functions == nil || slices.Contains(cfg.Functions, name)
}

// functionsText is FUNCTIONS for people.
func functionsText(cfg config.Config) string {
	if cfg.Functions == nil {
		return "every published function"
	}
	return strings.Join(cfg.Functions, ", ")
}

// addPool makes p learn each change of controller from now on, and tells
// it whether this replica controls the pool now.
func (d *daemon) addPool(name string, p *pool.Pool) {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	d.pools[name] = p
	p.SetController(d.replica.Controller())
}

// dropPool stops p learning of changes of controller.
func (d *daemon) dropPool(name string, p *pool.Pool) {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	if d.pools[name] == p {
		delete(d.pools, name)
	}
}

// reports are the serving units' reports, by function.
func (d *daemon) reports() map[string]*control.Report {
	d.unitsMu.Lock()
	defer d.unitsMu.Unlock()
	out := make(map[string]*control.Report, len(d.units))
	for n, u := range d.units {
		out[n] = u.report
	}
	return out
}

// load is this replica's load of each function, for the controller.
func (d *daemon) load() map[string]spillway.Load {
	if d.router == nil {
		return nil
	}
	gws := d.router.Gateways()
	out := make(map[string]spillway.Load, len(gws))
	for n, g := range gws {
		out[n] = g.Load()
	}
	return out
}

// gatewayConfig is what the request path needs of lb's configuration; the
// function's own settings replace the pool's values (startUnit).
func gatewayConfig(c config.Config) gateway.Config {
	return gateway.Config{
		FunctionName:    c.FunctionName,
		LocalTimeout:    c.LocalTimeout,
		CloudTimeout:    c.Cloud.LambdaTimeout,
		LocalSlots:      c.LocalSlots(),
		MaxQueued:       c.MaxQueued,
		MaxRequestBytes: c.MaxRequestBytes,
		AuthToken:       c.AuthToken,
		Pprof:           c.Pprof,
	}
}

// close stops following the registry, hands the lease over, and closes
// every unit (each leaves its workers to the other replicas, or removes
// them when this was the last).
func (d *daemon) close(ctx context.Context) error {
	d.cancel()
	d.wg.Wait()
	var errs []error
	if d.watcher != nil {
		_ = d.watcher.Close()
	}
	if d.replica != nil {
		n, err := d.replica.Close(ctx)
		if err != nil {
			d.log.Warn("leave the lb replicas", "err", err)
		}
		d.others.Store(int64(n))
		if n > 0 {
			d.log.Info("leaving the workers to the other lb replicas", "replicas", n)
		}
	}
	if d.fleet != nil {
		if err := d.fleet.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if d.network != nil {
		// The network goes too unless something else (compose's lb, another
		// replica) still uses it.
		if !d.othersRemain() {
			if err := d.network.RemoveNetwork(ctx); err != nil {
				d.log.Debug("pool network kept", "err", err)
			}
		}
		_ = d.network.Close()
	}
	if d.store != nil {
		_ = d.store.Close()
	}
	return errors.Join(errs...)
}
