package main

import (
	"context"
	"encoding/json"
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
	h := d.gw.Handler()
	handler.Store(&h)
	page.SetSource(d.gw)
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
	watcher *registry.Watcher
	backend *docker.Backend
	pool    *pool.Pool
	guard   *netguard.Listener // lb's listener: refuses the workers' subnets
	offload *cloud.Offloader
	budget  *policy.Budget // CLOUD_MAX_RPS, CLOUD_MAX_COST_PER_HOUR on every path to the cloud
	deploy  *cloud.Deployer
	gw      *gateway.Gateway
	fn      spillway.Function
	events  spillway.EventSink
	replica *cluster.Replica // this lb among the pool's replicas
	tick    time.Duration    // ELASTICITY_SLEEP

	poolRef atomic.Pointer[pool.Pool]       // set once the pool exists, for OnController
	gwRef   atomic.Pointer[gateway.Gateway] // set once the gateway exists, for load reports

	cancel context.CancelFunc // stops the loops below
	wg     sync.WaitGroup

	deployMu sync.Mutex // serialises deploys (start-up retry and updates)

	wantMu sync.Mutex        // guards want
	want   spillway.Function // the newest version the cloud should run

	deployKick chan struct{}                     // a new version is wanted in the cloud
	current    atomic.Pointer[spillway.Function] // what the workers run (or roll to)
	deployed   atomic.Pointer[string]            // pool.Key of what the cloud runs
}

// function is what the workers run now.
func (d *daemon) function() spillway.Function {
	if fn := d.current.Load(); fn != nil {
		return *fn
	}
	return spillway.Function{}
}

// cloudCurrent reports whether the cloud runs the workers' code: calls of a
// newer version than the cloud's stay local.
func (d *daemon) cloudCurrent() bool {
	k := d.deployed.Load()
	return k != nil && *k == pool.Key(d.function())
}

// setWant records the version the cloud should run; every deploy after it
// deploys this one, so a slow retry of an older version never wins.
func (d *daemon) setWant(fn spillway.Function) {
	d.wantMu.Lock()
	defer d.wantMu.Unlock()
	if fn.Version >= d.want.Version {
		d.want = fn
	}
}

func (d *daemon) wanted() spillway.Function {
	d.wantMu.Lock()
	defer d.wantMu.Unlock()
	return d.want
}

func start(ctx context.Context, cfg config.Config, log *slog.Logger, guard *netguard.Listener, events spillway.EventSink) (_ *daemon, err error) {
	d := &daemon{log: log, guard: guard, events: events, deployKick: make(chan struct{}, 1), tick: cfg.ElasticitySleep}
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
	first := d.fn
	d.current.Store(&first)

	// The pool's replicas: the lease holder controls the pool and the cloud.
	d.replica, err = cluster.Open(ctx, d.store.Client(), cluster.Config{
		Pool: cfg.PoolName, ID: cfg.LBID, Addr: cfg.ListenAddr(), Tick: cfg.ElasticitySleep, Log: log,
		Load: func() map[string]cluster.Load {
			if gw := d.gwRef.Load(); gw != nil {
				return gw.Load()
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
	ocfg := policy.OffloadConfig{
		QueueTimeout:        cfg.QueueTimeout,
		CloudMaxRPS:         cfg.CloudMaxRPS,
		CloudMaxCostPerHour: cfg.CloudMaxCostHour,
		BudgetBurst:         cfg.CloudBudgetBurst,
		WaitWeight:          cfg.OffloadWaitWeight,
		LambdaMemoryMB:      int(cfg.Cloud.LambdaMemory),
	}
	// One budget for every path to the cloud: the policy's offloads and lb's
	// forced, timeout, retry and fallback calls.
	budget, err := policy.NewBudget(ocfg)
	if err != nil {
		return nil, fmt.Errorf("cloud budget: %w", err)
	}
	ocfg.Budget = budget
	d.budget = budget
	offloader, err := policy.NewOffloader(cfg.OffloadPolicy, ocfg)
	if err != nil {
		return nil, fmt.Errorf("OFFLOAD_POLICY: %w", err)
	}
	autoscaler, err := policy.NewAutoscaler(cfg.Autoscaler, policy.ScaleConfig{
		N: cfg.NumberOfServers, Max: cfg.MaxServers, Concurrency: cfg.WorkerConcurrency,
		ScaleDownDelay: cfg.ScaleDownDelay, Tick: cfg.ElasticitySleep, TargetUtilization: cfg.ScaleTargetUtil,
	})
	if err != nil {
		return nil, fmt.Errorf("AUTOSCALER: %w", err)
	}

	// Cloud: deployed in the background so a slow or absent cloud never keeps
	// the local pool from serving; until it is deployed the offloader is not
	// Ready and every policy stays local.
	ccfg := cloudConfig(cfg)
	if ccfg.Enabled() {
		awsCfg, err := cloud.LoadAWSConfig(ctx, ccfg)
		if err != nil {
			return nil, fmt.Errorf("load AWS configuration: %w", err)
		}
		d.deploy = cloud.NewDeployer(awsCfg, ccfg, log)
		// The shim in Lambda refuses results over MAX_RESULT_BYTES too.
		d.deploy.BuildZip = func(fn spillway.Function) ([]byte, error) {
			return lambdawrap.BuildZipCapped(fn, cfg.MaxResultBytes)
		}
		d.offload = cloud.NewOffloader(awsCfg, ccfg, log)
		d.setWant(d.fn)
		d.deployKick <- struct{}{}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.deployLoop(loopCtx)
		}()
	}

	// Local pool.
	d.backend, err = docker.Open(ctx, docker.ConfigFrom(cfg), log)
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
	d.pool = pool.New(d.backend, pool.ConfigFrom(cfg))
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

	deps := gateway.Deps{
		Pool:       gateway.PoolOf(d.pool),
		Offloader:  offloader,
		Budget:     budget,
		Function:   d.function,
		Autoscaler: autoscaler,
		Estimator:  estimator,
		Scale:      func(n int) { d.pool.Scale(n) },
		Cluster:    d.replica,
		Details:    d.details,
		Log:        log,
		Events:     events,
	}
	if d.offload != nil {
		deps.Cloud = d.offload
		deps.CloudCurrent = d.cloudCurrent
	}
	deps.Collectors = d.collectors()
	d.gw = gateway.New(cfg, deps)
	d.gwRef.Store(d.gw)

	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.followUpdates(loopCtx)
	}()
	return d, nil
}

// firstFunction waits for the function record: a fresh stack starts lb before
// anyone has published.
func firstFunction(ctx context.Context, store *registry.Store, w *registry.Watcher, name string, log *slog.Logger) (spillway.Function, error) {
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

// deployLoop deploys the wanted version each time it is kicked, until ctx
// ends. It runs apart from the pool's rolls, which never wait for it.
func (d *daemon) deployLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.deployKick:
		}
		d.deployWithRetry(ctx)
	}
}

// kickDeploy asks deployLoop to deploy the wanted version.
func (d *daemon) kickDeploy() {
	select {
	case d.deployKick <- struct{}{}:
	default: // a deploy of the newest wanted version is already due
	}
}

// deployWithRetry makes the offloader reach the wanted version in the
// cloud: the controller deploys it, retrying with capped backoff; another
// replica waits until the controller has published it (or it becomes the
// controller itself).
func (d *daemon) deployWithRetry(ctx context.Context) {
	backoff := time.Second
	for {
		var err error
		if d.replica.Controller() {
			err = d.deployOnce(ctx)
		} else {
			err = d.adoptDeployment(ctx)
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		wait := backoff
		if errors.Is(err, cluster.ErrNotController) || errors.Is(err, errNotPublished) {
			wait = d.tick
		} else {
			d.log.Warn("cloud deploy failed; offloading waits for it", "err", err, "retry_in", backoff)
			backoff = min(2*backoff, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// errNotPublished says the controller has not published the wanted version.
var errNotPublished = errors.New("the controller has not deployed this version yet")

// deployment is what the controller publishes of its cloud deployment.
type deployment struct {
	Version  int64          `json:"version"`
	Endpoint cloud.Endpoint `json:"endpoint"`
}

// adoptDeployment points the offloader at the controller's deployment of
// the wanted version.
func (d *daemon) adoptDeployment(ctx context.Context) error {
	fn := d.wanted()
	b, err := d.replica.ReadCloud(ctx)
	if err != nil {
		return err
	}
	var dep deployment
	if b == nil {
		return errNotPublished
	}
	if err := json.Unmarshal(b, &dep); err != nil {
		return fmt.Errorf("read the controller's cloud deployment: %w", err)
	}
	if dep.Version < fn.Version {
		return errNotPublished
	}
	d.offload.SetEndpoint(dep.Endpoint)
	d.log.Info("cloud deployment of the controller adopted", "function", fn.Name, "version", dep.Version, "endpoint", dep.Endpoint)
	return nil
}

func (d *daemon) deployOnce(ctx context.Context) error {
	d.deployMu.Lock()
	defer d.deployMu.Unlock()
	fn := d.wanted()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := d.replica.Fence(dctx); err != nil {
		return fmt.Errorf("deploy %s v%d: %w", fn.Name, fn.Version, err)
	}
	ep, err := d.deploy.Deploy(dctx, fn)
	if err != nil {
		return fmt.Errorf("deploy %s v%d: %w", fn.Name, fn.Version, err)
	}
	d.offload.SetEndpoint(ep)
	key := pool.Key(fn)
	d.deployed.Store(&key)
	d.events.Event(spillway.EventStart, fmt.Sprintf("cloud deployed: %s v%d", fn.Name, fn.Version))
	if b, err := json.Marshal(deployment{Version: fn.Version, Endpoint: ep}); err == nil {
		if err := d.replica.PublishCloud(dctx, b); err != nil {
			d.log.Warn("publish the cloud deployment to the other replicas", "err", err)
		}
	}
	d.log.Info("cloud deployed", "function", fn.Name, "version", fn.Version, "endpoint", ep,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// followUpdates rolls the pool and redeploys the Lambda for each new version.
func (d *daemon) followUpdates(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case fn, ok := <-d.watcher.Updates():
			if !ok {
				return
			}
			same := pool.Key(fn) == pool.Key(d.pool.Function())
			d.current.Store(&fn) // flags such as idempotent apply at once
			if same {
				continue // same code, style and handler: nothing to roll
			}
			d.log.Info("function updated; rolling the pool", "version", fn.Version, "sha256", short(fn.SHA256))
			if d.deploy != nil {
				// The cloud follows in its own loop: a slow or failing deploy
				// never holds up the local roll, and until it succeeds the
				// new version's calls stay local (cloudCurrent).
				d.setWant(fn)
				d.kickDeploy()
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			if err := d.pool.Roll(rctx, fn); err != nil {
				d.log.Error("roll to the new version incomplete", "version", fn.Version, "err", err)
				d.events.Event(spillway.EventRoll, fmt.Sprintf("roll to version %d incomplete: %v", fn.Version, err))
			} else {
				d.log.Info("pool rolled", "version", fn.Version)
				d.events.Event(spillway.EventRoll, fmt.Sprintf("every worker runs version %d", fn.Version))
			}
			cancel()
		}
	}
}

func (d *daemon) details() map[string]any {
	s := d.pool.Snapshot()
	members := make([]any, 0, len(s.Members))
	for _, m := range s.Members {
		members = append(members, map[string]any{
			"name": m.Name, "addr": m.Addr, "state": string(m.State), "in_flight": m.InFlight, "capacity": m.Capacity,
			"version": m.Version, "sha256": m.SHA256, "completed": m.Completed, "cold_starts": m.ColdStarts,
		})
	}
	fn := d.pool.Function()
	out := map[string]any{
		"members":  members,
		"function": map[string]any{"name": fn.Name, "version": fn.Version, "sha256": fn.SHA256, "style": string(fn.Style)},
		"pool": map[string]any{
			"starting": s.Starting, "draining": s.Draining, "waiting": s.Waiting,
			"started": s.Counters.Started, "adopted": s.Counters.Adopted, "failed": s.Counters.Failed,
			"replacements": s.Counters.Replacements, "removed": s.Counters.Removed, "start_failed": s.Counters.StartFailed,
		},
	}
	if d.offload != nil {
		st := d.offload.Stats()
		out["cloud"] = map[string]any{
			"ready": d.offload.Ready(), "current": d.cloudCurrent(), "breaker": st.Breaker.String(), "calls": st.Calls,
			"succeeded": st.Succeeded, "failed": st.Failed, "retries": st.Retries,
			"throttled": st.Throttled, "rejected": st.Rejected, "cold_starts": st.ColdStarts,
		}
		if use, ok := d.budget.Use(time.Now()); ok {
			out["cloud"].(map[string]any)["budget"] = map[string]any{
				"max_rps": use.MaxRPS, "max_cost_per_hour": use.MaxCostPerHour,
				"calls": use.Calls, "spent_usd": use.SpentUSD, "used": use.Used,
			}
		}
	}
	return out
}

// collectors expose the pool's and the cloud's counters to /metrics.
func (d *daemon) collectors() []prometheus.Collector {
	poolCounter := func(name, help string, f func(pool.Counters) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(d.pool.Snapshot().Counters)) })
	}
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "spillway_lb_refused_connections_total",
			Help: "Connections and requests to lb refused because they came from the workers' network.",
		}, func() float64 { return float64(d.guard.Refused()) }),
		poolCounter("spillway_worker_replacements_total", "Workers started to replace a failed one.",
			func(c pool.Counters) uint64 { return c.Replacements }),
		poolCounter("spillway_worker_failures_total", "Ready workers taken out of rotation (failed call, health probe, container died).",
			func(c pool.Counters) uint64 { return c.Failed }),
		poolCounter("spillway_worker_starts_total", "Workers that became ready after a start.",
			func(c pool.Counters) uint64 { return c.Started }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spillway_function_version", Help: "Version of the function the pool runs."},
			func() float64 { return float64(d.pool.Function().Version) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spillway_lb_controller", Help: "1 when this lb replica holds the pool's lease (scales, rolls, deploys)."},
			func() float64 {
				if d.replica.Controller() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spillway_lb_replicas", Help: "Live lb replicas of the pool, this one included."},
			func() float64 { return float64(1 + len(d.replica.Peers())) }),
	}
	if d.offload != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "spillway_cloud_circuit_state",
				Help: "Offload circuit breaker: 0 closed, 1 half-open, 2 open.",
			}, func() float64 { return breakerValue(d.offload.State()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "spillway_cloud_ready",
				Help: "1 when the function is deployed and the breaker lets calls through.",
			}, func() float64 {
				if d.offload.Ready() {
					return 1
				}
				return 0
			}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "spillway_cloud_throttled_total",
				Help: "429 answers from the cloud (each is retried within the call's deadline).",
			}, func() float64 { return float64(d.offload.Stats().Throttled) }),
		)
	}
	return cs
}

func breakerValue(s cloud.BreakerState) float64 {
	switch s {
	case cloud.BreakerHalfOpen:
		return 1
	case cloud.BreakerOpen:
		return 2
	}
	return 0
}

// close stops the loops and removes the workers.
func (d *daemon) close(ctx context.Context) error {
	d.cancel()
	var errs []error
	if d.gw != nil {
		d.gw.Close()
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

func cloudConfig(c config.Config) cloud.Config {
	cc := cloud.Defaults(c.FunctionName)
	cc.Mode = cloud.Mode(c.Cloud.Mode)
	cc.Region = c.Cloud.Region
	cc.Role = c.Cloud.Role
	cc.Endpoint = c.Cloud.Endpoint
	cc.LambdaName = c.Cloud.LambdaName
	cc.MemoryMB = c.Cloud.LambdaMemory
	cc.Timeout = c.Cloud.LambdaTimeout
	cc.APIName = c.Cloud.APIName
	cc.Stage = c.Cloud.APIStage
	cc.ThrottleRPS = c.Cloud.ThrottleRPS
	cc.ThrottleBurst = c.Cloud.ThrottleBurst
	cc.OffloadVia = cloud.Via(c.Cloud.OffloadVia)
	return cc
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
