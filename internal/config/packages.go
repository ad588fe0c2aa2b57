package config

import (
	"fmt"
	"time"

	"github.com/spillway-faas/spillway"
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
		Spare:          c.WorkerSpare && c.NumberOfServers == 0,
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
		ZeroAfter:         c.ScaleToZeroAfter,
	}
}

// Settings are one function's pool settings with nothing unset: the
// record's own (addfaas --min, --max, --concurrency, --timeout) where it
// has them, lb's .env values for the rest.
type Settings struct {
	Min         int           // workers kept; 0 scales to zero
	Max         int           // workers at most, >= Min
	Concurrency int           // calls one worker runs at once
	Timeout     time.Duration // a local call's deadline
}

// SettingsFor resolves fn.Settings against NUMBER_OF_SERVERS, MAX_SERVERS,
// WORKER_CONCURRENCY and LOCAL_TIMEOUT. What the record sets wins over
// the .env value it would clash with: a --min above MAX_SERVERS raises the
// ceiling to it, a --max below NUMBER_OF_SERVERS lowers the floor to it.
// Were both set with min above max, min wins (addfaas refuses that).
func (c Config) SettingsFor(fn spillway.Function) Settings {
	s := Settings{Min: c.NumberOfServers, Max: c.MaxServers, Concurrency: c.WorkerConcurrency, Timeout: c.LocalTimeout}
	fs := fn.Settings
	if fs.Max != nil {
		s.Max = *fs.Max
		s.Min = min(s.Min, s.Max)
	}
	if fs.Min != nil {
		s.Min = *fs.Min
		s.Max = max(s.Max, s.Min)
	}
	if fs.Concurrency != nil {
		s.Concurrency = *fs.Concurrency
	}
	if fs.Timeout > 0 {
		s.Timeout = fs.Timeout
	}
	return s
}

// PoolConfigFor is fn's worker pool's: PoolConfig with fn's own settings
// (SettingsFor).
func (c Config) PoolConfigFor(fn spillway.Function) pool.Config {
	s := c.SettingsFor(fn)
	pc := c.PoolConfig()
	pc.Min, pc.Max, pc.Concurrency, pc.LocalTimeout = s.Min, s.Max, s.Concurrency, s.Timeout
	pc.Spare = c.WorkerSpare && s.Min == 0
	return pc
}

// ScaleConfigFor is fn's autoscaler's: ScaleConfig with fn's own settings
// (SettingsFor).
func (c Config) ScaleConfigFor(fn spillway.Function) policy.ScaleConfig {
	s := c.SettingsFor(fn)
	sc := c.ScaleConfig()
	sc.N, sc.Max, sc.Concurrency = s.Min, s.Max, s.Concurrency
	return sc
}

// DockerConfigFor is the worker containers' of function: DockerConfig
// with the function, which names and labels its containers. Every
// function's backend shares the pool's network.
func (c Config) DockerConfigFor(function string) docker.Config {
	dc := c.DockerConfig()
	dc.Function = function
	return dc
}

// CloudConfigFor is function's deployer's and offloader's: its own Lambda
// and REST API (and so its own usage plan and key). LAMBDA_NAME and
// API_NAME name those of FAAS_FUNCTION_NAME (default
// spillway-<FAAS_FUNCTION_NAME>); every other function's are
// spillway-<function>. When another function's name is one LAMBDA_NAME or
// API_NAME already gives the default function, the two would deploy over
// each other: that is an error, which names the variable.
func (c Config) CloudConfigFor(function string) (cloud.Config, error) {
	cc := c.CloudConfig()
	if function == c.FunctionName {
		return cc, nil
	}
	name := CloudName(function)
	for _, v := range []struct{ name, value string }{{"LAMBDA_NAME", cc.LambdaName}, {"API_NAME", cc.APIName}} {
		if v.value == name {
			return cloud.Config{}, fmt.Errorf("%s=%s names the cloud resources of %s, the default function, and %s is function %s's own name: the two would deploy over each other; set %s to another name",
				v.name, v.value, c.FunctionName, name, function, v.name)
		}
	}
	cc.LambdaName, cc.APIName = name, name
	return cc, nil
}

// CloudName is the default name of a function's Lambda and REST API.
func CloudName(function string) string { return "spillway-" + function }
