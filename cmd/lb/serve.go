package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/control"
	"github.com/spillway-faas/spillway/internal/leanhttp"
	"github.com/spillway-faas/spillway/internal/netguard"
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
	srv := &leanhttp.Server{
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

	page.Events().Event(spillway.EventStart, fmt.Sprintf("lb starting: serving %s, default function %s", functionsText(cfg), cfg.FunctionName))
	d, err := start(ctx, cfg, log, guard, page.Events())
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while starting")
			return nil
		}
		return err
	}
	h := d.router.Handler(d.board, d.board.Functions)
	handler.Store(&h)
	page.SetSource(pageSource{d.board, d.metrics})
	d.router.SetReady(true)
	d.tellReady()
	log.Info("lb serving", "functions", strings.Join(d.router.Names(), ","), "default", cfg.FunctionName)

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
	d.router.Close()
	for name, gw := range d.router.Gateways() {
		if err := gw.Drain(dctx); err != nil {
			log.Warn("drain incomplete", "function", name, "err", err)
		}
	}
	return d.close(dctx)
}

// pageSource is what the operator page reads: the status and the metrics.
type pageSource struct {
	*control.Board
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

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
