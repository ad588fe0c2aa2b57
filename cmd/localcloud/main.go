// Command localcloud is an offline, wire-compatible stand-in for the AWS
// Lambda and API Gateway REST APIs that really runs Python functions.
//
//	localcloud [--listen 127.0.0.1:4566]
//
// Environment (read by config.LoadLocalcloud): LOCALCLOUD_LISTEN, LOCALCLOUD_CONCURRENCY (10),
// LOCALCLOUD_ISOLATION (container: each environment in a hardened,
// network-less container of LOCALCLOUD_IMAGE through the Docker API;
// unsafe-process: a bare process, not for untrusted code),
// LOCALCLOUD_IMAGE (spillway-worker:latest), LOCALCLOUD_INSTANCE
// (localcloud), LOCALCLOUD_PIDS_LIMIT (256), LOCALCLOUD_CPUS (1),
// LOCALCLOUD_MAX_MEMORY (512 MB), LOCALCLOUD_PYTHON (/usr/bin/python3, the
// unsafe-process interpreter), LOCALCLOUD_IDLE_TIMEOUT (5m), LOCALCLOUD_DIR
// (a temporary directory), AWS_REGION (us-east-1), LOG_LEVEL (info).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/localcloud"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "localcloud:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	env, err := config.LoadLocalcloud(os.LookupEnv)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("localcloud", flag.ContinueOnError)
	listen := fs.String("listen", env.Listen, "address to listen on (LOCALCLOUD_LISTEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(env.LogLevel)) // checked by LoadLocalcloud
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg := env.Server
	cfg.Logger = logger
	srv, err := localcloud.New(cfg)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Close(closeCtx)
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		// Bodies are at most a 50 MB zip; an invoke answers within the
		// function's timeout, at most Lambda's 15 minutes.
		ReadTimeout:    2 * time.Minute,
		WriteTimeout:   16 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		IdleTimeout:    2 * time.Minute,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	logger.Info("localcloud: listening", "addr", ln.Addr().String())

	select {
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			logger.Error("localcloud: serve failed", "err", err)
		}
	case <-ctx.Done():
		logger.Info("localcloud: shutting down")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Stop taking requests, give in-flight ones a moment, then stop every
	// environment (which ends invocations still running).
	drainCtx, cancelDrain := context.WithTimeout(shutdownCtx, 5*time.Second)
	defer cancelDrain()
	shutErr := hs.Shutdown(drainCtx)
	if err := srv.Close(shutdownCtx); err != nil {
		return err
	}
	if shutErr != nil && !errors.Is(shutErr, context.DeadlineExceeded) {
		return fmt.Errorf("shut down http server: %w", shutErr)
	}
	return nil
}
