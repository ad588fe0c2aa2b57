// Command lb is the Spillway daemon: it reads the function from Redis, deploys
// it to Lambda + API Gateway (or localcloud), runs the worker pool through the
// Docker Engine API, and serves call_faas/invoke over XML-RPC, offloading what
// the pool cannot take.
//
//	lb                  run the daemon (configuration from .env and the environment)
//	lb --check-config   validate the configuration and exit
//	lb sim [flags]      replay a load trace against the policies (see lb sim -h)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/policy/sim"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "sim" {
		return sim.Main(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("lb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	checkOnly := fs.Bool("check-config", false, "validate the configuration, print it and exit")
	envFile := fs.String("env-file", ".env", "dotenv file read under the environment (missing is fine)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: lb [--check-config] [--env-file FILE]\n       lb sim [flags]   (lb sim -h)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	lookup, err := config.Dotenv(*envFile, os.LookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "lb: %v\n", err)
		return 2
	}
	cfg, err := config.Load(lookup)
	if err != nil {
		fmt.Fprintf(stderr, "lb: invalid configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}
	if *checkOnly {
		printConfig(stdout, cfg)
		return 0
	}
	log := newLogger(stderr, cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("lb stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func printConfig(w io.Writer, c config.Config) {
	token := "(none)"
	if c.AuthToken != "" {
		token = "(set)"
	}
	fmt.Fprintf(w, "configuration is valid\n")
	fmt.Fprintf(w, "  pool        N=%d max=%d concurrency=%d image=%s network=%s address=%s\n",
		c.NumberOfServers, c.MaxServers, c.WorkerConcurrency, c.WorkerImage, c.DockerNetwork, c.WorkerAddress)
	fmt.Fprintf(w, "  policies    scheduler=%s offload=%s autoscaler=%s queue_timeout=%v\n",
		c.Scheduler, c.OffloadPolicy, c.Autoscaler, c.QueueTimeout)
	fmt.Fprintf(w, "  timing      local_timeout=%v elasticity=%v scale_down_delay=%v\n",
		c.LocalTimeout, c.ElasticitySleep, c.ScaleDownDelay)
	redisAuth := "no password"
	if c.RedisPassword != "" {
		redisAuth = "password set"
	}
	fmt.Fprintf(w, "  function    %s from redis %s (%s)\n", c.FunctionName, c.RedisAddr, redisAuth)
	fmt.Fprintf(w, "  cloud       %s endpoint=%s lambda=%s api=%s/%s via=%s\n",
		c.Cloud.Mode, c.Cloud.Endpoint, c.Cloud.LambdaName, c.Cloud.APIName, c.Cloud.APIStage, c.Cloud.OffloadVia)
	fmt.Fprintf(w, "  listen      %s auth_token=%s allow_anonymous=%v lb_id=%s\n", c.ListenAddr(), token, c.AllowAnonymous, c.LBID)
}
