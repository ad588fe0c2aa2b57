package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/control"
	"github.com/spillway-faas/spillway/internal/fleet"
	"github.com/spillway-faas/spillway/internal/gateway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
)

// unit serves one function: its workers, its Lambda and REST API, its
// rollout, its autoscaler and its request path. The daemon's fleet starts
// one per served function.
type unit struct {
	name string
	log  *slog.Logger

	backend      functionBackend
	pool         *pool.Pool
	deployer     *cloud.Deployer // nil when CLOUD=off
	offload      *cloud.Offloader
	cloudRollout *control.CloudRollout
	rollout      *control.Rollout
	elasticity   *control.Elasticity
	keepWarm     *control.KeepWarm // nil unless CLOUD_KEEP_WARM and a cloud
	gw           *gateway.Gateway
	report       *control.Report
	collectors   []prometheus.Collector

	updates chan spillway.Function // newer versions for the rollout (latest wins)
	// slots are the local slots the function's share of MAX_TOTAL_WORKERS
	// allows, refreshed at each elasticity tick (the offload policy's
	// MaxSlots).
	slots atomic.Int64
	// set are the function's effective settings; only the fleet's
	// goroutine for the function changes them (Update). concurrency and
	// scalesToZero repeat two of them for the request path.
	set          config.Settings
	concurrency  atomic.Int64
	scalesToZero atomic.Bool

	d      *daemon
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ fleet.Unit = (*unit)(nil)

// startUnit starts fn's unit and returns once its minimum of workers is
// ready; on error it has released what it made.
func (d *daemon) startUnit(ctx context.Context, fn spillway.Function) (_ fleet.Unit, err error) {
	cfg := d.cfg
	set := cfg.SettingsFor(fn)
	u := &unit{name: fn.Name, log: d.log.With("function", fn.Name), d: d,
		updates: make(chan spillway.Function, 1), set: set}
	u.concurrency.Store(int64(set.Concurrency))
	u.scalesToZero.Store(set.Min == 0)
	loopCtx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	defer func() {
		if err != nil {
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			_ = u.Close(cctx, false)
		}
	}()

	sched, err := policy.NewScheduler(cfg.Scheduler)
	if err != nil {
		return nil, fmt.Errorf("SCHEDULER: %w", err)
	}
	ocfg := cfg.OffloadConfig()
	ocfg.Budget = d.budget // one budget for every function's path to the cloud
	offloader, err := policy.NewOffloader(cfg.OffloadPolicy, ocfg)
	if err != nil {
		return nil, fmt.Errorf("OFFLOAD_POLICY: %w", err)
	}
	autoscaler, err := policy.NewAutoscaler(cfg.Autoscaler, cfg.ScaleConfigFor(fn))
	if err != nil {
		return nil, fmt.Errorf("AUTOSCALER for %s: %w", fn.Name, err)
	}
	replica := d.replica.Function(fn.Name)

	// Cloud: deployed in the background, as for one function. A function
	// whose cloud names clash with the default function's is served
	// locally only, and says why.
	ccfg, clash := cfg.CloudConfigFor(fn.Name)
	if clash != nil && d.awsCfg != nil {
		u.log.Error("function served without the cloud", "err", clash)
		d.events.Event(spillway.EventStart, fmt.Sprintf("function %s served without the cloud: %v", fn.Name, clash))
	}
	if d.awsCfg != nil && clash == nil {
		u.deployer = cloud.NewDeployer(*d.awsCfg, ccfg, u.log)
		u.deployer.BuildZip = func(fn spillway.Function) ([]byte, error) {
			return lambdawrap.BuildZipCapped(fn, cfg.MaxResultBytes)
		}
		u.offload = cloud.NewOffloader(*d.awsCfg, ccfg, u.log)
		u.cloudRollout = control.NewCloudRollout(fn, control.CloudRolloutDeps{
			Deployer: u.deployer, Offload: u.offload, Replica: replica,
			Tick: cfg.ElasticitySleep, Events: d.events, Log: u.log,
		})
		u.run(loopCtx, u.cloudRollout.Run)
	}

	// One engine connection and one network for every function's workers.
	u.backend, err = d.network.For(fn)
	if err != nil {
		return nil, fmt.Errorf("the pool backend of %s: %w", fn.Name, err)
	}
	estimator := policy.NewEstimator(policy.DefaultEstimatorConfig())
	u.pool = pool.New(u.backend, cfg.PoolConfigFor(fn))
	u.pool.Scheduler = sched
	u.pool.Logger = u.log
	u.pool.Events = d.events
	startSeconds := control.WorkerStartSeconds(fn.Name) // registered with the report's collectors
	u.pool.OnWorkerReady = func(startup time.Duration) {
		estimator.ObserveWorkerStart(startup, time.Now())
		startSeconds.Observe(startup.Seconds())
	}
	u.pool.Fence = d.replica.Fence
	d.addPool(fn.Name, u.pool)
	d.share.Join(fn.Name, set.Min, set.Max)
	if err := u.pool.Open(ctx, fn); err != nil {
		return nil, fmt.Errorf("start %d workers of %s: %w", set.Min, fn.Name, err)
	}

	u.rollout = control.NewRollout(fn, control.RolloutDeps{
		Updates: u.updates, Pool: u.pool, Cloud: u.cloudRollout, Events: d.events, Log: u.log,
	})
	deps := gateway.Deps{
		Pool:       u.pool,
		Offloader:  offloader,
		Budget:     d.budget,
		Function:   u.rollout.Function,
		Estimator:  estimator,
		Metrics:    d.metrics,
		Arrived:    func() { d.share.Arrived(fn.Name) },
		LocalSlots: func() int { return int(u.slots.Load()) },
		Log:        u.log,
	}
	if u.offload != nil {
		deps.Cloud = u.offload
		deps.CloudCurrent = u.rollout.CloudCurrent
	}
	// A call that finds no ready worker starts one at once; a function
	// that scales to zero sends it to the cloud meanwhile.
	deps.PolicyWeighsStarts = cfg.OffloadPolicy == "latency-aware"
	deps.Wake = func() bool {
		u.elasticity.Kick()
		return u.scalesToZero.Load()
	}
	gcfg := gatewayConfig(cfg)
	gcfg.FunctionName = fn.Name
	gcfg.LocalTimeout = set.Timeout
	gcfg.LocalSlots = set.Max * set.Concurrency
	u.slots.Store(int64(gcfg.LocalSlots))
	u.gw = gateway.New(gcfg, deps)
	u.elasticity = control.NewElasticity(control.ElasticityConfig{Function: fn.Name, Tick: cfg.ElasticitySleep},
		control.ElasticityDeps{Pool: u.pool, Calls: u.gw, Autoscaler: autoscaler, Estimator: estimator,
			Peers: d.replica, Events: d.events, Log: u.log,
			Share: func(want, have, inFlight int) int {
				allowed := d.share.Target(fn.Name, want, have, inFlight)
				u.slots.Store(int64(d.share.Limit(fn.Name)) * u.concurrency.Load())
				return allowed
			}})
	rdeps := control.ReportDeps{Calls: u.gw, Pool: u.pool, Budget: d.budget, LastScale: u.elasticity.LastScale}
	if u.offload != nil {
		rdeps.Cloud = u.offload
		rdeps.CloudCurrent = u.rollout.CloudCurrent
	}
	u.report = control.NewReport(control.ReportConfig{
		Function: fn.Name, PoolMin: set.Min, PoolMax: set.Max, Concurrency: set.Concurrency, Timeout: set.Timeout,
	}, rdeps)
	u.collectors = append(u.report.Collectors(), startSeconds)
	for _, c := range u.collectors {
		if err := d.metrics.Register(c); err != nil {
			return nil, fmt.Errorf("register the metrics of %s: %w", fn.Name, err)
		}
	}
	u.run(loopCtx, u.elasticity.Run)
	u.run(loopCtx, u.rollout.Run)
	if cfg.CloudKeepWarm && u.offload != nil {
		// Pings the Lambda while the function has no ready worker.
		u.keepWarm = control.NewKeepWarm(
			control.KeepWarmConfig{Every: cfg.CloudKeepWarmEvery, Tick: cfg.ElasticitySleep},
			control.KeepWarmDeps{Pool: u.pool, Cloud: u.offload, Budget: d.budget, Peers: d.replica,
				Warmed: estimator.ObserveKeepWarm, Log: u.log})
		u.run(loopCtx, u.keepWarm.Run)
	}
	u.gw.SetReady(true)
	u.log.Info("function ready", "version", fn.Version, "sha256", short(fn.SHA256), "style", fn.Style,
		"min", set.Min, "max", set.Max, "concurrency", set.Concurrency, "timeout", set.Timeout)
	d.events.Event(spillway.EventStart, fmt.Sprintf("%s v%d (%s style) served: %d workers ready", fn.Name, fn.Version, fn.Style, set.Min))
	return u, nil
}

// run runs one of the unit's loops until Close.
func (u *unit) run(ctx context.Context, loop func(context.Context)) {
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		loop(ctx)
	}()
}

// Update applies a newer version's settings and hands the version to the
// rollout, replacing one it has not taken yet.
func (u *unit) Update(fn spillway.Function) {
	u.applySettings(fn)
	for {
		select {
		case u.updates <- fn:
			return
		default:
		}
		select {
		case old := <-u.updates:
			if old.Version > fn.Version {
				fn = old
			}
		default:
		}
	}
}

// applySettings moves the unit to fn's settings when they changed: the
// pool's bounds, the autoscaler, the share, the local deadline and the
// status at once; workers already running keep their concurrency and
// timeout until they are replaced.
func (u *unit) applySettings(fn spillway.Function) {
	cfg := u.d.cfg
	set := cfg.SettingsFor(fn)
	if set == u.set {
		return
	}
	autoscaler, err := policy.NewAutoscaler(cfg.Autoscaler, cfg.ScaleConfigFor(fn))
	if err == nil {
		err = u.pool.Reconfigure(set.Min, set.Max, set.Concurrency, set.Timeout)
	}
	if err != nil {
		u.log.Error("new settings refused; the old ones stay", "version", fn.Version, "settings", fn.Settings.String(), "err", err)
		return
	}
	u.elasticity.SetAutoscaler(autoscaler)
	u.d.share.Join(u.name, set.Min, set.Max)
	u.gw.SetLocalTimeout(set.Timeout)
	u.report.SetSettings(set.Min, set.Max, set.Concurrency, set.Timeout)
	u.concurrency.Store(int64(set.Concurrency))
	u.scalesToZero.Store(set.Min == 0)
	u.slots.Store(int64(u.d.share.Limit(u.name)) * int64(set.Concurrency))
	u.log.Info("settings changed", "version", fn.Version, "min", set.Min, "max", set.Max,
		"concurrency", set.Concurrency, "timeout", set.Timeout)
	u.d.events.Event(spillway.EventScaleUp, fmt.Sprintf("%s v%d settings: min %d, max %d, concurrency %d, timeout %v (was min %d, max %d, concurrency %d, timeout %v)",
		u.name, fn.Version, set.Min, set.Max, set.Concurrency, set.Timeout, u.set.Min, u.set.Max, u.set.Concurrency, u.set.Timeout))
	u.set = set
	u.elasticity.Kick()
}

// Close drains the unit's calls and stops its loops. remove (the function
// was deleted): the controller removes its workers and its cloud
// resources, another replica leaves them to it. Otherwise lb is leaving:
// the workers stay while another replica serves them.
func (u *unit) Close(ctx context.Context, remove bool) error {
	var errs []error
	if u.gw != nil {
		if err := u.gw.Drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain the calls of %s: %w", u.name, err))
		}
	}
	u.cancel()
	for _, c := range []interface{ Close() }{u.rollout, u.cloudRollout, u.elasticity, u.keepWarm} {
		if c != nil && !isNilCloser(c) {
			c.Close()
		}
	}
	u.wg.Wait()
	for _, c := range u.collectors {
		u.d.metrics.Unregister(c)
	}
	if u.gw != nil {
		u.gw.UnregisterMetrics()
	}
	controller := u.d.replica.Controller()
	if u.pool != nil {
		u.d.dropPool(u.name, u.pool)
		closePool := u.pool.Close
		switch {
		case remove && !controller:
			closePool = u.pool.Leave // the controller removes them
		case !remove && u.d.othersRemain():
			u.log.Info("leaving the workers to the other lb replicas")
			closePool = u.pool.Leave
		}
		if err := closePool(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close the pool of %s: %w", u.name, err))
		}
	}
	u.d.share.Leave(u.name)
	if remove && controller && u.deployer != nil {
		if err := u.deployer.Remove(ctx); err != nil {
			errs = append(errs, fmt.Errorf("remove the cloud resources of %s: %w", u.name, err))
		} else {
			u.log.Info("cloud resources removed")
		}
		if err := u.d.replica.Function(u.name).ForgetCloud(ctx); err != nil {
			u.log.Debug("forget the cloud deployment", "err", err)
		}
	}
	if u.offload != nil {
		u.offload.Close()
	}
	if u.backend != nil {
		_ = u.backend.Close()
	}
	if remove {
		u.d.events.Event(spillway.EventStart, fmt.Sprintf("%s deleted: its calls drained, its workers and cloud resources removed", u.name))
	}
	return errors.Join(errs...)
}

// isNilCloser reports whether c holds a nil pointer (a part never built).
func isNilCloser(c interface{ Close() }) bool {
	switch v := c.(type) {
	case *control.Rollout:
		return v == nil
	case *control.CloudRollout:
		return v == nil
	case *control.Elasticity:
		return v == nil
	case *control.KeepWarm:
		return v == nil
	}
	return false
}

// awsConfig is the shared AWS configuration; nil when CLOUD=off.
func awsConfig(ctx context.Context, cfg config.Config) (*aws.Config, error) {
	ccfg := cfg.CloudConfig()
	if !ccfg.Enabled() {
		return nil, nil
	}
	c, err := cloud.LoadAWSConfig(ctx, ccfg)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	return &c, nil
}
