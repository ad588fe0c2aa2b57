// Command worker serves one Python function over XML-RPC from a set of warm
// Python runners. It is the process inside each worker container.
//
//	call_function(param)  the function's result, or a fault; beyond
//	                      WORKER_CONCURRENCY calls at once, the busy fault
//	                      (-32009) at once, so an lb replica that does not
//	                      know the others' calls places it elsewhere
//	health()              {in_flight, completed, cold_starts, failed, sha256,
//	                       version, style, ready, runners, concurrency, busy}
//	GET /healthz          200 when the runners are warm, else 503
//
// The methods, the health struct, the busy fault and the environment are the
// lb↔worker contract in internal/workerapi. Configuration comes from the
// environment (config.LoadWorker). SIGTERM or SIGINT
// stops taking connections, lets calls in flight finish (bounded by
// LOCAL_TIMEOUT plus a grace period), kills the runners and exits 0.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/leanhttp"
	"github.com/spillway-faas/spillway/internal/runner"
	"github.com/spillway-faas/spillway/internal/workerapi"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// shutdownGrace is added to LOCAL_TIMEOUT when draining calls at stop.
const shutdownGrace = 2 * time.Second

func main() {
	if os.Getpid() == 1 {
		// As PID 1 in a container the worker would inherit every orphaned
		// script child; a minimal init reaps them and runs the worker below it.
		os.Exit(runInit(os.Args))
	}
	os.Exit(run(os.LookupEnv, os.Stderr))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, errors.New("want debug, info, warn or error")
	}
	return l, nil
}

// run is the worker: it returns the process exit code.
func run(lookup func(string) (string, bool), stderr io.Writer) int {
	cfg, err := config.LoadWorker(lookup)
	if err != nil {
		fmt.Fprintf(stderr, "worker: invalid configuration:\n%v\n", err)
		return 2
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log, stderr); err != nil {
		log.Error("worker stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the worker until ctx ends, then stops gracefully.
func serve(ctx context.Context, cfg workerapi.Env, log *slog.Logger, output io.Writer) error {
	code, err := os.ReadFile(cfg.FunctionPath)
	if err != nil {
		return fmt.Errorf("FUNCTION_PATH=%q: read function: %w", cfg.FunctionPath, err)
	}
	sum := sha256.Sum256(code)
	shimDir, err := os.MkdirTemp("", "spillway-shim-")
	if err != nil {
		return fmt.Errorf("make shim folder: %w", err)
	}
	defer os.RemoveAll(shimDir)
	shim, err := lambdawrap.WriteShim(shimDir)
	if err != nil {
		return err
	}

	runners, err := runner.New(runner.Config{
		Python:       cfg.Python,
		ShimPath:     shim,
		FunctionPath: cfg.FunctionPath,
		Style:        cfg.Style,
		Handler:      cfg.Handler,
		ReuseProcess: cfg.ReuseProcess,
		Name:         cfg.FunctionName,
		Version:      strconv.FormatInt(cfg.Version, 10),
		Concurrency:  cfg.Concurrency,
		Timeout:      cfg.LocalTimeout,

		MaxResultBytes: cfg.MaxResultBytes,
		Output:         output,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	openBegan := time.Now()
	openCtx, cancelOpen := context.WithTimeout(ctx, time.Minute)
	err = runners.Open(openCtx)
	opened := time.Since(openBegan)
	cancelOpen()
	if err != nil {
		return fmt.Errorf("PYTHON=%q FUNCTION_PATH=%q: %w", cfg.Python, cfg.FunctionPath, err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := runners.Close(closeCtx); err != nil {
			log.Warn("close runners", "err", err)
		}
	}()

	svc := &service{runners: runners, cfg: cfg, sha256: hex.EncodeToString(sum[:]), slots: make(chan struct{}, cfg.Concurrency)}
	srv := &leanhttp.Server{
		Handler:           svc.handler(log),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// The longest call plus the time to send its (MAX_RESULT_BYTES) answer.
		WriteTimeout:   cfg.LocalTimeout + 30*time.Second,
		MaxHeaderBytes: 64 << 10,
		IdleTimeout:    2 * time.Minute,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	runtime.GOMAXPROCS(goProcs(cfg, runtime.GOMAXPROCS(0)))
	addr := net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("SERVER_PORT=%d: listen: %w", cfg.Port, err)
	}
	log.Info("worker listening", "addr", ln.Addr().String(), "style", cfg.Style,
		"version", cfg.Version, "sha256", svc.sha256, "runners", cfg.Concurrency,
		"timeout", cfg.LocalTimeout, "runners_open", opened.Round(time.Millisecond))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if cfg.StopDelay > 0 {
		// lb stops sending calls once it sees this worker's task stopping;
		// until then calls keep coming and are served.
		log.Info("worker stopping after a delay", "delay", cfg.StopDelay, "in_flight", runners.Stats().InFlight)
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-time.After(cfg.StopDelay):
		}
	}
	log.Info("worker stopping", "in_flight", runners.Stats().InFlight)
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.LocalTimeout+shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		log.Warn("calls still running at the stop deadline", "err", err)
		_ = srv.Close()
	}
	<-served
	log.Info("worker stopped", "completed", runners.Stats().Completed)
	return nil
}

// goProcs is how many Ps (GOMAXPROCS) the worker's Go side runs on, from
// the runtime's default n. A script-style worker that forks a process per
// call runs on one: its Go side does little per call (an XML-RPC request,
// a pipe write and a read) beside the fork and the child, whose CPU
// bounds its calls per second many times over; a second P only adds the
// wake-ups of a thread that looks for work while a call waits for its child
// (about a fifth of the Go side's CPU per call). A handler-style or
// --reuse-process worker keeps them all: its calls are short, and its Go
// side's decoding and encoding can be what bounds them.
func goProcs(cfg workerapi.Env, n int) int {
	if cfg.Style == spillway.StyleScript && !cfg.ReuseProcess {
		return 1
	}
	return n
}

// service is the worker's XML-RPC and HTTP surface.
type service struct {
	runners *runner.Runners
	cfg     workerapi.Env
	sha256  string
	// slots holds one token per call_function running: the worker takes at
	// most WORKER_CONCURRENCY calls at once and answers busy beyond.
	slots chan struct{}
	busy  atomic.Int64 // calls answered busy
}

func (s *service) handler(log *slog.Logger) http.Handler {
	rpc := xmlrpc.NewServer()
	rpc.MaxBodyBytes = s.cfg.MaxRequestBytes
	rpc.Logger = log
	rpc.Register(workerapi.MethodCallFunction, "call_function(param): run the function once with param; "+
		"returns its result (script: stdout as a string; handler: its return value).", s.callFunction)
	rpc.Register(workerapi.MethodHealth, "health(): struct of in_flight, completed, cold_starts, failed, "+
		"sha256, version, style, ready, runners, concurrency, busy.", s.health)

	mux := http.NewServeMux()
	mux.Handle("/", rpc)
	mux.Handle("/RPC2", rpc)
	mux.HandleFunc("GET "+workerapi.HealthzPath, s.healthz)
	return mux
}

func (s *service) callFunction(ctx context.Context, params []any) (any, error) {
	p := xmlrpc.Params(params)
	if err := p.Count(0, 1); err != nil {
		return nil, err
	}
	var param any
	if p.Has(0) {
		param = params[0]
	}
	select {
	case s.slots <- struct{}{}:
	default:
		s.busy.Add(1)
		return nil, workerapi.BusyError(cap(s.slots))
	}
	defer func() { <-s.slots }()
	res, err := s.runners.Call(ctx, param)
	if err != nil {
		return nil, err
	}
	return res.Value, nil
}

func (s *service) health(ctx context.Context, params []any) (any, error) {
	st := s.runners.Stats()
	return workerapi.Health{
		InFlight:    st.InFlight,
		Completed:   st.Completed,
		ColdStarts:  st.ColdStarts,
		Failed:      st.Failed,
		SHA256:      s.sha256,
		Version:     s.cfg.Version,
		Style:       s.cfg.Style,
		Ready:       st.Ready,
		Runners:     int64(st.Runners),
		Concurrency: int64(s.cfg.Concurrency),
		Busy:        s.busy.Load(),
	}.Map(), nil
}

func (s *service) healthz(w http.ResponseWriter, r *http.Request) {
	st := s.runners.Stats()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !st.Ready || st.Runners == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %d runners\n", st.Runners)
		return
	}
	fmt.Fprintf(w, "ok: %d runners, %d in flight\n", st.Runners, st.InFlight)
}
