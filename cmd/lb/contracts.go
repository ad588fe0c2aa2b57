package main

import (
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/cluster"
	"github.com/spillway-faas/spillway/internal/control"
	"github.com/spillway-faas/spillway/internal/gateway"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/ui"
)

// The parts lb wires implement the small interfaces their consumers
// declare; gateway and control import none of them.
var (
	_ gateway.Pool     = (*pool.Pool)(nil)
	_ gateway.Cloud    = (*cloud.Offloader)(nil)
	_ gateway.Reporter = (*control.Board)(nil)

	_ control.ScaledPool     = (*pool.Pool)(nil)
	_ control.RolledPool     = (*pool.Pool)(nil)
	_ control.ReportedPool   = (*pool.Pool)(nil)
	_ control.LoadSource     = (*gateway.Gateway)(nil)
	_ control.CallSource     = (*gateway.Gateway)(nil)
	_ control.Estimator      = (*policy.Estimator)(nil)
	_ control.Peers          = (*cluster.Replica)(nil)
	_ control.Replicas       = (*cluster.Replica)(nil)
	_ control.DeployReplica  = (*cluster.FunctionReplica)(nil)
	_ control.Deployer       = (*cloud.Deployer)(nil)
	_ control.EndpointSetter = (*cloud.Offloader)(nil)
	_ control.ReportedCloud  = (*cloud.Offloader)(nil)

	_ ui.Source = pageSource{}
)
