package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/docker"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/swarm"
)

// engine is the pool's container engine (POOL_BACKEND): its network, its
// image check, and one backend per function.
type engine interface {
	CheckImage(ctx context.Context) error
	Subnets(ctx context.Context) ([]netip.Prefix, error)
	RemoveNetwork(ctx context.Context) error
	Close() error
	// For is fn's backend, on the engine's one connection.
	For(fn spillway.Function) (functionBackend, error)
	// PoolFunctions are the functions with workers in the pool.
	PoolFunctions(ctx context.Context) ([]string, error)
}

// functionBackend is one function's pool.Backend; Close leaves the
// engine's connection open.
type functionBackend interface {
	pool.Backend
	Close() error
}

// openEngine opens the backend POOL_BACKEND names.
func openEngine(ctx context.Context, cfg config.Config, log *slog.Logger) (engine, error) {
	if cfg.PoolBackend != "swarm" {
		b, err := docker.Open(ctx, cfg.DockerConfig(), log)
		if err != nil {
			return nil, fmt.Errorf("connect to the Docker engine: %w", err)
		}
		return dockerEngine{b}, nil
	}
	dc := cfg.DockerConfig()
	b, err := swarm.Open(ctx, swarm.Config{Pool: dc.Pool, Image: dc.Image, NetworkName: dc.Network, ServerPort: dc.ServerPort,
		Memory: dc.Memory, NanoCPUs: dc.NanoCPUs, PidsLimit: dc.PidsLimit}, log)
	if err != nil {
		return nil, fmt.Errorf("connect to the swarm (POOL_BACKEND=swarm): %w", err)
	}
	// lb dials the tasks' addresses on the overlay network: its container
	// must be on it (a stack attaches it; otherwise it attaches itself).
	if err := b.JoinNetwork(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return swarmEngine{b}, nil
}

type dockerEngine struct{ *docker.Backend }

func (e dockerEngine) For(fn spillway.Function) (functionBackend, error) {
	return e.Backend.For(fn.Name)
}

type swarmEngine struct{ *swarm.Backend }

func (e swarmEngine) For(fn spillway.Function) (functionBackend, error) {
	return e.Backend.For(fn.Name, fn.Settings.ConstraintList())
}
