// Package localcloud is an offline, wire-compatible stand-in for the AWS
// Lambda and API Gateway (REST v1) APIs that really runs functions.
//
// It speaks what aws-sdk-go-v2, botocore and the AWS CLI send (REST-JSON,
// SigV4 headers accepted and ignored) and runs each function's zip with Python
// through a Runtime-API bootstrap: one hardened, network-less container per
// execution environment (or, unsafe for untrusted code, one process), one
// invocation per environment at a time, environments kept warm and reused, a
// concurrency limit answered with 429 TooManyRequestsException, the function's
// timeout enforced. API Gateway stages serve their deployment's snapshot at
// /_aws/execute-api/{apiId}/{stage}/{path} and on the Host
// {apiId}.execute-api.localhost, honouring API keys and usage plan throttles.
package localcloud

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	_ "embed"
)

//go:embed bootstrap.py
var bootstrapPy []byte

// Defaults of Config.
const (
	DefaultListen          = "127.0.0.1:4566"
	DefaultRegion          = "us-east-1"
	DefaultAccountID       = "000000000000"
	DefaultConcurrency     = 10
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultTransitionDelay = 250 * time.Millisecond
	DefaultInitTimeout     = 10 * time.Second
)

// Config is localcloud's configuration. internal/config builds it from the
// variables named on the fields (config.LoadLocalcloud); zero fields take
// the defaults above, which config also gives those variables.
type Config struct {
	Region    string // region in ARNs and URIs (us-east-1)
	AccountID string // account in ARNs (000000000000)
	// Concurrency is the account's concurrent-execution limit
	// (LOCALCLOUD_CONCURRENCY, 10): invocations beyond it get 429.
	Concurrency int
	// Python is the interpreter that runs the bootstrap (LOCALCLOUD_PYTHON;
	// default /usr/bin/python3 when present, else python3 on PATH).
	Python string
	// Dir holds unzipped code and per-environment /tmp dirs; default a new
	// temporary directory removed by Close.
	Dir string
	// IdleTimeout is how long a warm environment may sit unused before it is
	// stopped (5m).
	IdleTimeout time.Duration
	// TransitionDelay is how long a new function stays Pending and an updated
	// one InProgress (250ms), so SDK waiters see real transitions; negative
	// means transitions are instant.
	TransitionDelay time.Duration
	// InitTimeout bounds an environment's start until it asks for work (10s).
	InitTimeout time.Duration
	// Isolation is how environments run (LOCALCLOUD_ISOLATION): container
	// (the default) or unsafe-process.
	Isolation Isolation
	// Image is the environment image in container mode (LOCALCLOUD_IMAGE,
	// spillway-worker:latest): the worker image.
	Image string
	// Instance scopes this localcloud's environment containers: the value of
	// their spillway.localcloud label (LOCALCLOUD_INSTANCE, localcloud).
	// Leftovers carrying it are removed at New and at Close.
	Instance string
	// PidsLimit is the process limit of an environment container
	// (LOCALCLOUD_PIDS_LIMIT, 256).
	PidsLimit int64
	// CPUs is the CPU limit of an environment container (LOCALCLOUD_CPUS, 1).
	CPUs float64
	// MaxMemoryMB caps an environment container's memory limit, which is
	// otherwise the function's MemorySize (LOCALCLOUD_MAX_MEMORY, 512): a
	// 3008 MB function must not be able to take 3 GB of this host.
	MaxMemoryMB int
	// Logger receives one line per lifecycle event; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for state transitions and throttles; nil is time.Now.
	Now func() time.Time
}

var instanceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (c *Config) setDefaults() {
	if c.Isolation == "" {
		c.Isolation = IsolationContainer
	}
	if c.Image == "" {
		c.Image = DefaultImage
	}
	if c.Instance == "" {
		c.Instance = DefaultInstance
	}
	if c.PidsLimit <= 0 {
		c.PidsLimit = DefaultPidsLimit
	}
	if c.CPUs <= 0 {
		c.CPUs = DefaultCPUs
	}
	if c.MaxMemoryMB <= 0 {
		c.MaxMemoryMB = DefaultMaxMemoryMB
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.AccountID == "" {
		c.AccountID = DefaultAccountID
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Python == "" {
		c.Python = "python3"
		if _, err := os.Stat("/usr/bin/python3"); err == nil {
			c.Python = "/usr/bin/python3"
		}
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.TransitionDelay == 0 {
		c.TransitionDelay = DefaultTransitionDelay
	} else if c.TransitionDelay < 0 {
		c.TransitionDelay = 0
	}
	if c.InitTimeout <= 0 {
		c.InitTimeout = DefaultInitTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Server is the emulator: an http.Handler for the Lambda and API Gateway
// control planes, execute-api, /health and /_localcloud/stats. Close stops
// every environment it started.
type Server struct {
	cfg       Config
	docker    engine // container mode only
	log       *slog.Logger
	mux       *http.ServeMux
	dir       string
	ownDir    bool
	bootstrap string

	// bg is the owner context of background work (Event invocations, the
	// reaper); cancelled by Close, which then waits on wg.
	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// starts counts environments being started; Close waits for them (an
	// environment that finishes starting after Close stops itself) before
	// it removes leftovers and closes the Docker connection.
	starts sync.WaitGroup

	mu sync.Mutex // guards lambda state: functions, environments, counters
	lm lambdaState

	gwMu sync.Mutex // guards API Gateway state
	gw   gatewayState
}

// New prepares a Server: in container mode it connects to Docker, checks
// the environment image and removes this instance's leftover containers; in
// unsafe-process mode it checks the Python interpreter. It writes the
// bootstrap and starts the idle-environment reaper.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger}
	switch cfg.Isolation {
	case IsolationContainer:
		if !instanceRE.MatchString(cfg.Instance) {
			return nil, fmt.Errorf("LOCALCLOUD_INSTANCE=%q: want letters, digits, '_', '.', '-'", cfg.Instance)
		}
		ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
		defer cancel()
		d, err := openEngine(ctx, cfg.Image)
		if err != nil {
			return nil, err
		}
		s.docker = d
		if err := s.removeLeftovers(ctx); err != nil {
			d.Close()
			return nil, err
		}
	case IsolationUnsafeProcess:
		if _, err := exec.LookPath(cfg.Python); err != nil {
			return nil, fmt.Errorf("find python interpreter %q (LOCALCLOUD_PYTHON): %w", cfg.Python, err)
		}
		s.log.Warn("localcloud: LOCALCLOUD_ISOLATION=unsafe-process: function code runs as localcloud's user, on its network, without limits; do not run untrusted code")
	default:
		return nil, fmt.Errorf("LOCALCLOUD_ISOLATION=%q: want container or unsafe-process", cfg.Isolation)
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "localcloud-")
		if err != nil {
			return nil, s.closeEngine(fmt.Errorf("create work dir: %w", err))
		}
		s.dir, s.ownDir = d, true
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			return nil, s.closeEngine(fmt.Errorf("create work dir %s: %w", cfg.Dir, err))
		}
		s.dir = cfg.Dir
	}
	rt := filepath.Join(s.dir, "runtime")
	if err := os.MkdirAll(rt, 0o755); err != nil {
		return nil, s.closeEngine(fmt.Errorf("create runtime dir: %w", err))
	}
	s.bootstrap = filepath.Join(rt, "bootstrap.py")
	if err := os.WriteFile(s.bootstrap, bootstrapPy, 0o644); err != nil {
		return nil, s.closeEngine(fmt.Errorf("write bootstrap: %w", err))
	}
	s.lm.init()
	s.gw.init()
	s.mux = http.NewServeMux()
	s.routes()
	s.bg, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.reap()
	return s, nil
}

// closeEngine releases the Docker connection of a Server that failed to
// start and returns err.
func (s *Server) closeEngine(err error) error {
	if s.docker != nil {
		s.docker.Close()
	}
	return err
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /health", s.handleHealth)
	m.HandleFunc("GET /_localcloud/health", s.handleHealth)
	m.HandleFunc("GET /_localcloud/stats", s.handleStats)
	m.HandleFunc("GET /_localcloud/code/{file}", s.handleCode)
	s.lambdaRoutes(m)
	s.gatewayRoutes(m)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, "UnknownOperationException",
			"localcloud does not implement %s %s", r.Method, r.URL.Path))
	})
}

// ServeHTTP routes execute-api calls (by path prefix or by Host) to the
// stage they name and everything else to the control planes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if apiID, ok := executeAPIHost(r.Host); ok {
		s.serveExecuteAPI(w, r, apiID, r.URL.Path)
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, executeAPIPrefix); ok {
		apiID, path, _ := strings.Cut(rest, "/")
		s.serveExecuteAPI(w, r, apiID, "/"+path)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Close stops all environments and background work and removes the work
// dir it created. It waits for the processes to exit or ctx to end.
func (s *Server) Close(ctx context.Context) error {
	s.cancel()
	envs := s.lm.closeAll(&s.mu)
	var wg sync.WaitGroup
	for _, e := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.stop()
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		s.wg.Wait()
		s.starts.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("close localcloud: %w", ctx.Err())
	}
	if s.docker != nil {
		err := s.removeLeftovers(ctx)
		s.docker.Close()
		if err != nil {
			return fmt.Errorf("close localcloud: %w", err)
		}
	}
	if s.ownDir {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("remove work dir: %w", err)
		}
	}
	return nil
}

// Stats is what /_localcloud/stats reports.
type Stats struct {
	Functions    int                      `json:"functions"`
	Environments int                      `json:"environments"`
	Busy         int                      `json:"busy"`
	InFlight     int                      `json:"in_flight"`
	Concurrency  int                      `json:"concurrency"`
	Invocations  int64                    `json:"invocations"`
	ColdStarts   int64                    `json:"cold_starts"`
	Throttles    int64                    `json:"throttles"`
	Timeouts     int64                    `json:"timeouts"`
	Errors       int64                    `json:"errors"`
	PerFunction  map[string]FunctionStats `json:"per_function"`
	RestAPIs     int                      `json:"rest_apis"`
}

// FunctionStats are one function's counters.
type FunctionStats struct {
	Environments int   `json:"environments"`
	Idle         int   `json:"idle"`
	InFlight     int   `json:"in_flight"`
	Invocations  int64 `json:"invocations"`
	ColdStarts   int64 `json:"cold_starts"`
	Throttles    int64 `json:"throttles"`
	Timeouts     int64 `json:"timeouts"`
	Errors       int64 `json:"errors"`
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := s.lm.statsLocked()
	s.mu.Unlock()
	st.Concurrency = s.cfg.Concurrency
	s.gwMu.Lock()
	st.RestAPIs = len(s.gw.apis)
	s.gwMu.Unlock()
	return st
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	st := s.Stats()
	writeJSON(w, http.StatusOK, map[string]any{
		"status":       "ok",
		"functions":    st.Functions,
		"environments": st.Environments,
		"in_flight":    st.InFlight,
		"invocations":  st.Invocations,
		"cold_starts":  st.ColdStarts,
		"throttles":    st.Throttles,
		"timeouts":     st.Timeouts,
	})
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// reap stops environments idle for longer than IdleTimeout.
func (s *Server) reap() {
	defer s.wg.Done()
	every := s.cfg.IdleTimeout / 4
	if every < 100*time.Millisecond {
		every = 100 * time.Millisecond
	}
	if every > 30*time.Second {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.bg.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		idle := s.lm.takeIdleLocked(s.cfg.Now().Add(-s.cfg.IdleTimeout))
		s.mu.Unlock()
		for _, e := range idle {
			s.log.Debug("localcloud: reaping idle environment", "function", e.snap.name, "env", e.id)
			s.stopEnv(e)
		}
	}
}

// handleCode serves a function's current deployment package, where
// GetFunction's Code.Location points.
func (s *Server) handleCode(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("file"), ".zip")
	if !ok {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	f, exists := s.lm.functions[name]
	var path string
	if exists {
		path = f.code.dir + ".zip"
	}
	s.mu.Unlock()
	if !exists {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	http.ServeFile(w, r, path)
}
