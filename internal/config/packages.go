package config

import (
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/docker"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/pool"
)

// The configurations of lb's packages, built from c. Each package checks
// only its own invariants; the variables behind the values were checked by
// Load.

// PoolConfig is the worker pool's: its sizes and what its workers are told.
// The probe and start timings keep the pool's own defaults (no variable
// sets them).
func (c Config) PoolConfig() pool.Config {
	return pool.Config{
		Min:            c.NumberOfServers,
		Max:            c.MaxServers,
		Concurrency:    c.WorkerConcurrency,
		LocalTimeout:   c.LocalTimeout,
		MaxResultBytes: c.MaxResultBytes,
	}
}

// DockerConfig is the worker containers': pool label, image, network,
// address mode, port and limits. WORKER_PIDS_LIMIT=0 and WORKER_CPUS=0 mean
// no limit, as they do in Docker.
func (c Config) DockerConfig() docker.Config {
	return docker.Config{
		Pool:       c.PoolName,
		Image:      c.WorkerImage,
		Network:    c.DockerNetwork,
		Address:    docker.AddressMode(c.WorkerAddress),
		ServerPort: c.WorkerPort,
		Memory:     c.WorkerMemory,
		NanoCPUs:   int64(c.WorkerCPUs * 1e9),
		PidsLimit:  c.WorkerPids,
	}
}

// CloudConfig is the Lambda + API Gateway deployer's and offloader's. The
// retry, breaker and wait knobs keep the cloud package's defaults.
func (c Config) CloudConfig() cloud.Config {
	return cloud.Config{
		Mode:          cloud.Mode(c.Cloud.Mode),
		Region:        c.Cloud.Region,
		Role:          c.Cloud.Role,
		Endpoint:      c.Cloud.Endpoint,
		LambdaName:    c.Cloud.LambdaName,
		MemoryMB:      c.Cloud.LambdaMemory,
		Timeout:       c.Cloud.LambdaTimeout,
		APIName:       c.Cloud.APIName,
		Stage:         c.Cloud.APIStage,
		ThrottleRPS:   c.Cloud.ThrottleRPS,
		ThrottleBurst: c.Cloud.ThrottleBurst,
		OffloadVia:    cloud.Via(c.Cloud.OffloadVia),
	}
}

// OffloadConfig is the offload policy's and the cloud budget's (the Lambda
// prices keep policy's list prices). Budget is left for the caller to set.
func (c Config) OffloadConfig() policy.OffloadConfig {
	return policy.OffloadConfig{
		QueueTimeout:        c.QueueTimeout,
		CloudMaxRPS:         c.CloudMaxRPS,
		CloudMaxCostPerHour: c.CloudMaxCostHour,
		BudgetBurst:         c.CloudBudgetBurst,
		WaitWeight:          c.OffloadWaitWeight,
		LambdaMemoryMB:      int(c.Cloud.LambdaMemory),
	}
}

// ScaleConfig is the autoscaler's.
func (c Config) ScaleConfig() policy.ScaleConfig {
	return policy.ScaleConfig{
		N:                 c.NumberOfServers,
		Max:               c.MaxServers,
		Concurrency:       c.WorkerConcurrency,
		ScaleDownDelay:    c.ScaleDownDelay,
		Tick:              c.ElasticitySleep,
		TargetUtilization: c.ScaleTargetUtil,
	}
}
