package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/control"
	"github.com/spillway-faas/spillway/internal/docker"
	"github.com/spillway-faas/spillway/internal/gateway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/netguard"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/ui"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// serve runs the daemon until ctx ends (SIGTERM), then drains and removes
// the workers. lb's port answers from the first moment: /healthz says 503 and
// calls get a "starting" fault until the pool is ready.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	var handler atomic.Pointer[http.Handler]
	starting := startingHandler()
	handler.Store(&starting)
	inner, err := net.Listen("tcp", cfg.ListenAddr())
	if err != nil {
		return fmt.Errorf("listen on %s (LB_LISTEN_HOST, LOAD_BALANCER_PORT): %w", cfg.ListenAddr(), err)
	}
	// Function code in a worker must not call lb: connections from the
	// workers' network are refused once start has learned its subnets.
	guard := netguard.Wrap(inner, log)
	// The operator page answers from the first moment too: it shows that lb
	// is starting until the gateway is its source.
	page := ui.New(ui.Options{Token: cfg.AuthToken, Function: cfg.FunctionName, Log: log})
	defer page.Close()
	pageHandler := page.Handler()
	var hs handover
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hs.begin()
			defer hs.end()
			if hs.leaving.Load() {
				// Leaving: answer the calls that still arrive on open
				// connections, and close each after its answer, so its
				// client reconnects to another replica.
				w.Header().Set("Connection", "close")
			}
			// A connection accepted before the workers' subnets were known.
			if guard.DeniedAddr(r.RemoteAddr) {
				guard.CountRefused()
				w.Header().Set("Connection", "close")
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			if r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/") {
				pageHandler.ServeHTTP(w, r)
				return
			}
			(*handler.Load()).ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// A whole request (a 1 MB body at a slow client's pace) within
		// ReadTimeout; the answer of the longest call within WriteTimeout.
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   cfg.LocalTimeout + cfg.Cloud.LambdaTimeout + 30*time.Second,
		MaxHeaderBytes: 64 << 10,
		IdleTimeout:    2 * time.Minute,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:      hs.connState,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(guard) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-serveErr
	}()
	log.Info("lb listening", "addr", guard.Addr().String(), "function", cfg.FunctionName,
		"servers", cfg.NumberOfServers, "max", cfg.MaxServers, "offload", cfg.OffloadPolicy, "cloud", cfg.Cloud.Mode)

	page.Events().Event(spillway.EventStart, fmt.Sprintf("lb starting: waiting for function %s and its workers (%d)", cfg.FunctionName, cfg.NumberOfServers))
	d, err := start(ctx, cfg, log, guard, page.Events())
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while starting")
			return nil
		}
		return err
	}
	h := d.gw.Handler(d.report)
	handler.Store(&h)
	page.SetSource(pageSource{d.report, d.metrics})
	d.gw.SetReady(true)
	page.Events().Event(spillway.EventStart, fmt.Sprintf("lb ready: %s v%d (%s style), workers ready: %d", d.fn.Name, d.fn.Version, d.fn.Style, cfg.NumberOfServers))
	log.Info("lb ready", "function", d.fn.Name, "version", d.fn.Version, "sha256", short(d.fn.SHA256), "style", d.fn.Style)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		serveErr <- err
		log.Error("http server stopped", "err", err)
	}
	// Hand-over: first refuse new connections, so clients move to another
	// replica; then finish what arrives on open connections, closing each
	// after its answer; then hand the lease over and leave the workers to
	// the other replicas (the last one removes them).
	log.Info("shutting down: listener closed, draining calls in flight", "timeout", cfg.DrainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	hs.leaving.Store(true)
	if err := guard.Close(); err != nil {
		log.Warn("close the listener", "err", err)
	}
	if err := hs.wait(dctx, handoverQuiet); err != nil {
		log.Warn("connections still open at the drain deadline", "err", err)
	}
	sctx, scancel := context.WithTimeout(dctx, 5*time.Second)
	_ = srv.Shutdown(sctx)
	scancel()
	if err := d.gw.Drain(dctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	return d.close(dctx)
}

// pageSource is what the operator page reads: the status and the metrics.
type pageSource struct {
	*control.Report
	metrics prometheus.Gatherer
}

func (s pageSource) Metrics() prometheus.Gatherer { return s.metrics }

// handoverQuiet is how long a leaving lb keeps an idle open connection for
// a call its client may still send on it.
const handoverQuiet = 500 * time.Millisecond

// handover counts the requests being served and the open connections, so
// a leaving lb knows when nothing more can arrive.
type handover struct {
	leaving  atomic.Bool
	active   atomic.Int64 // requests being served
	conns    atomic.Int64 // open connections
	lastDone atomic.Int64 // unix nanos of the last request that ended
}

func (h *handover) begin() { h.active.Add(1) }
func (h *handover) end() {
	h.lastDone.Store(time.Now().UnixNano())
	h.active.Add(-1)
}

func (h *handover) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		h.conns.Add(1)
	case http.StateClosed, http.StateHijacked:
		h.conns.Add(-1)
	}
}

// wait returns once no request is being served and either no connection
// is open or none has sent a call for quiet; or when ctx ends.
func (h *handover) wait(ctx context.Context, quiet time.Duration) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if h.active.Load() == 0 {
			if h.conns.Load() <= 0 || time.Since(time.Unix(0, h.lastDone.Load())) >= quiet {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d calls and %d connections: %w", h.active.Load(), h.conns.Load(), ctx.Err())
		case <-t.C:
		}
	}
}

func startingHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Content-Type", "text/xml")
			_, _ = w.Write(xmlrpc.AppendFault(nil, xmlrpc.Fault{Code: spillway.FaultUnavailable,
				String: "lb is starting: waiting for the function and the worker pool"}))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"ready": false, "state": "starting"}` + "\n"))
	})
}

// daemon owns everything lb started; close releases it in reverse order.
type daemon struct {
	log     *slog.Logger
	store   *registry.Store
	watcher *registry.VersionWatcher
	backend *docker.Backend
	pool    *pool.Pool
	offload *cloud.Offloader
	gw      *gateway.Gateway
	fn      spillway.Function // the version lb started with
	replica *cluster.Replica  // this lb among the pool's replicas
	metrics *prometheus.Registry

	// What runs beside the calls (internal/control).
	cloudRollout *control.CloudRollout // nil when CLOUD=off
	rollout      *control.Rollout
	elasticity   *control.Elasticity
	report       *control.Report

	poolRef atomic.Pointer[pool.Pool]       // set once the pool exists, for OnController
	gwRef   atomic.Pointer[gateway.Gateway] // set once the gateway exists, for load reports

	cancel context.CancelFunc // stops the loops below
	wg     sync.WaitGroup
}

// run runs an owner's loop on the daemon's wait group.
func (d *daemon) run(ctx context.Context, loop func(context.Context)) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		loop(ctx)
	}()
}

func start(ctx context.Context, cfg config.Config, log *slog.Logger, guard *netguard.Listener, events spillway.EventSink) (_ *daemon, err error) {
	d := &daemon{log: log, metrics: prometheus.NewRegistry()}
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
	// One watcher delivers the current record and every later version.
	d.watcher = d.store.Watch(loopCtx, cfg.FunctionName, spillway.Function{})
	d.fn, err = firstFunction(ctx, d.store, d.watcher, cfg.FunctionName, log)
	if err != nil {
		return nil, err
	}

	// The pool's replicas: the lease holder controls the pool and the cloud.
	d.replica, err = cluster.Open(ctx, d.store.Client(), cluster.Config{
		Pool: cfg.PoolName, ID: cfg.LBID, Addr: cfg.ListenAddr(), Tick: cfg.ElasticitySleep, Log: log,
		Load: func() map[string]spillway.Load {
			if gw := d.gwRef.Load(); gw != nil {
				return map[string]spillway.Load{cfg.FunctionName: gw.Load()}
			}
			return nil
		},
		OnController: func(controller bool) {
			if p := d.poolRef.Load(); p != nil {
				p.SetController(controller)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("join the lb replicas of pool %s (POOL_NAME): %w", cfg.PoolName, err)
	}
	log.Info("lb replica", "lb_id", cfg.LBID, "controller", d.replica.Controller(), "others", len(d.replica.Peers()))

	// Policies.
	sched, err := policy.NewScheduler(cfg.Scheduler)
	if err != nil {
		return nil, fmt.Errorf("SCHEDULER: %w", err)
	}
	ocfg := cfg.OffloadConfig()
	// One budget for every path to the cloud: the policy's offloads and lb's
	// forced, timeout, retry and fallback calls.
	budget, err := policy.NewBudget(ocfg)
	if err != nil {
		return nil, fmt.Errorf("cloud budget: %w", err)
	}
	ocfg.Budget = budget
	offloader, err := policy.NewOffloader(cfg.OffloadPolicy, ocfg)
	if err != nil {
		return nil, fmt.Errorf("OFFLOAD_POLICY: %w", err)
	}
	autoscaler, err := policy.NewAutoscaler(cfg.Autoscaler, cfg.ScaleConfig())
	if err != nil {
		return nil, fmt.Errorf("AUTOSCALER: %w", err)
	}

	// Cloud: deployed in the background so a slow or absent cloud never keeps
	// the local pool from serving; until it is deployed the offloader is not
	// Ready and every policy stays local.
	ccfg := cfg.CloudConfig()
	if ccfg.Enabled() {
		awsCfg, err := cloud.LoadAWSConfig(ctx, ccfg)
		if err != nil {
			return nil, fmt.Errorf("load AWS configuration: %w", err)
		}
		deployer := cloud.NewDeployer(awsCfg, ccfg, log)
		// The shim in Lambda refuses results over MAX_RESULT_BYTES too.
		deployer.BuildZip = func(fn spillway.Function) ([]byte, error) {
			return lambdawrap.BuildZipCapped(fn, cfg.MaxResultBytes)
		}
		d.offload = cloud.NewOffloader(awsCfg, ccfg, log)
		d.cloudRollout = control.NewCloudRollout(d.fn, control.CloudRolloutDeps{
			Deployer: deployer, Offload: d.offload, Replica: d.replica,
			Tick: cfg.ElasticitySleep, Events: events, Log: log,
		})
		d.run(loopCtx, d.cloudRollout.Run)
	}

	// Local pool.
	d.backend, err = docker.Open(ctx, cfg.DockerConfig(), log)
	if err != nil {
		return nil, fmt.Errorf("connect to the Docker engine: %w", err)
	}
	if err := d.backend.CheckImage(ctx); err != nil {
		return nil, err
	}
	subnets, err := d.backend.Subnets(ctx)
	if err != nil {
		return nil, fmt.Errorf("workers' subnets, to refuse them on lb's port: %w", err)
	}
	guard.Deny(subnets)
	log.Info("refusing connections from the workers' network", "network", cfg.DockerNetwork, "subnets", fmt.Sprint(subnets))
	estimator := policy.NewEstimator(policy.DefaultEstimatorConfig())
	d.pool = pool.New(d.backend, cfg.PoolConfig())
	d.pool.Scheduler = sched
	d.pool.Logger = log
	d.pool.Events = events
	d.pool.OnWorkerReady = func(startup time.Duration) { estimator.ObserveWorkerStart(startup, time.Now()) }
	d.pool.Fence = d.replica.Fence
	d.poolRef.Store(d.pool)
	d.pool.SetController(d.replica.Controller())
	if err := d.pool.Open(ctx, d.fn); err != nil {
		return nil, fmt.Errorf("start %d workers of %s: %w", cfg.NumberOfServers, cfg.WorkerImage, err)
	}

	// The request path, and what runs beside it.
	d.rollout = control.NewRollout(d.fn, control.RolloutDeps{
		Updates: d.watcher.Updates(), Pool: d.pool, Cloud: d.cloudRollout, Events: events, Log: log,
	})
	deps := gateway.Deps{
		Pool:      d.pool,
		Offloader: offloader,
		Budget:    budget,
		Function:  d.rollout.Function,
		Estimator: estimator,
		Metrics:   d.metrics,
		Log:       log,
	}
	if d.offload != nil {
		deps.Cloud = d.offload
		deps.CloudCurrent = d.rollout.CloudCurrent
	}
	d.gw = gateway.New(gatewayConfig(cfg), deps)
	d.gwRef.Store(d.gw)
	d.elasticity = control.NewElasticity(control.ElasticityConfig{Function: cfg.FunctionName, Tick: cfg.ElasticitySleep},
		control.ElasticityDeps{Pool: d.pool, Calls: d.gw, Autoscaler: autoscaler, Estimator: estimator,
			Peers: d.replica, Events: events, Log: log})
	rdeps := control.ReportDeps{
		Calls: d.gw, Pool: d.pool, Budget: budget, Replicas: d.replica,
		LastScale: d.elasticity.LastScale, Refused: guard.Refused,
	}
	if d.offload != nil {
		rdeps.Cloud = d.offload
		rdeps.CloudCurrent = d.rollout.CloudCurrent
	}
	d.report = control.NewReport(control.ReportConfig{
		Function: cfg.FunctionName, ListenAddr: cfg.ListenAddr(),
		PoolMin: cfg.NumberOfServers, PoolMax: cfg.MaxServers, Concurrency: cfg.WorkerConcurrency,
		Scheduler: cfg.Scheduler, OffloadPolicy: cfg.OffloadPolicy, Autoscaler: cfg.Autoscaler, CloudMode: cfg.Cloud.Mode,
	}, rdeps)
	d.metrics.MustRegister(d.report.Collectors()...)
	d.run(loopCtx, d.elasticity.Run)
	d.run(loopCtx, d.rollout.Run)
	return d, nil
}

// gatewayConfig is what the request path needs of lb's configuration.
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

// firstFunction waits for the function record: a fresh stack starts lb before
// anyone has published.
func firstFunction(ctx context.Context, store *registry.Store, w *registry.VersionWatcher, name string, log *slog.Logger) (spillway.Function, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	fn, err := store.Get(rctx, name)
	cancel()
	if err == nil {
		return fn, nil
	}
	if !errors.Is(err, spillway.ErrFunctionNotFound) {
		return fn, fmt.Errorf("read function %q: %w", name, err)
	}
	log.Warn("no function published yet; waiting for it", "name", name,
		"hint", fmt.Sprintf("bin/addfaas --name %s examples/fib.py", name))
	select {
	case fn, ok := <-w.Updates():
		if !ok {
			return fn, fmt.Errorf("watch function %q: watcher stopped", name)
		}
		return fn, nil
	case <-ctx.Done():
		return spillway.Function{}, ctx.Err()
	}
}

// close stops the loops and removes the workers.
func (d *daemon) close(ctx context.Context) error {
	d.cancel()
	var errs []error
	if d.rollout != nil {
		d.rollout.Close()
	}
	if d.cloudRollout != nil {
		d.cloudRollout.Close()
	}
	if d.elasticity != nil {
		d.elasticity.Close()
	}
	d.wg.Wait()
	// Hand the lease over; the workers stay while another replica lives.
	others := 0
	if d.replica != nil {
		n, err := d.replica.Close(ctx)
		if err != nil {
			d.log.Warn("leave the lb replicas", "err", err)
		}
		others = n
	}
	if d.pool != nil {
		closePool := d.pool.Close
		if others > 0 {
			d.log.Info("leaving the workers to the other lb replicas", "replicas", others)
			closePool = d.pool.Leave
		}
		if err := closePool(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close the pool: %w", err))
		}
	}
	if d.backend != nil {
		// The network goes too unless something else (compose's lb, another
		// replica) still uses it.
		if others == 0 {
			if err := d.backend.RemoveNetwork(ctx); err != nil {
				d.log.Debug("pool network kept", "err", err)
			}
		}
		_ = d.backend.Close()
	}
	if d.offload != nil {
		d.offload.Close()
	}
	if d.watcher != nil {
		_ = d.watcher.Close()
	}
	if d.store != nil {
		_ = d.store.Close()
	}
	return errors.Join(errs...)
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
