// Package config is the one place that names an environment variable,
// gives its default and validates it. Each binary loads its configuration
// once, in cmd/, and passes it down:
//
//	lb          Load → Config (and .env beneath the environment: Dotenv)
//	worker      LoadWorker → workerapi.Env
//	localcloud  LoadLocalcloud → Localcloud
//	addfaas     LoadAddfaas → Addfaas
//	client      LoadClient → Client
//
// A variable more than one binary reads (WORKER_CONCURRENCY, LOCAL_TIMEOUT,
// MAX_RESULT_BYTES, SERVER_PORT, LOG_LEVEL, ...) has one default and one
// check here, shared by the loaders.
//
// The arrows point from config to the packages: Config builds their
// configurations (PoolConfig, DockerConfig, CloudConfig, OffloadConfig,
// ScaleConfig, and per function PoolConfigFor, DockerConfigFor,
// CloudConfigFor, ScaleConfigFor; LoadWorker fills workerapi.Env,
// LoadLocalcloud fills localcloud.Config). Those packages carry values and check only their own
// invariants; they know no variable and have no default for a value a
// variable sets (knobs no variable sets, like the pool's probe interval,
// keep theirs). Nothing below cmd/ imports config except for a binary's own
// wiring, so no package needs the environment to be built or tested.
//
// TestEveryReadIsDeclaredAndDocumented reads the code: no other package
// reads the environment, and every variable read here is documented in
// .env.example.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Lookup reads one variable; os.LookupEnv fits.
type Lookup func(key string) (string, bool)

// Config is everything lb reads from the environment. DESIGN.md §4 names the
// variables; .env.example documents each one.
type Config struct {
	NumberOfServers   int           // NUMBER_OF_SERVERS: base pool size N
	MaxServers        int           // MAX_SERVERS: pool ceiling, default 2N (2 when N is 0)
	WorkerConcurrency int           // WORKER_CONCURRENCY: calls one worker runs at once
	LoadBalancerPort  int           // LOAD_BALANCER_PORT
	ListenHost        string        // LB_LISTEN_HOST: interface lb binds
	LocalTimeout      time.Duration // LOCAL_TIMEOUT: local deadline before the cloud takes over
	ElasticitySleep   time.Duration // ELASTICITY_SLEEP: autoscaler tick
	ScaleDownDelay    time.Duration // SCALE_DOWN_DELAY
	// ScaleToZeroAfter (SCALE_TO_ZERO_AFTER): a function whose min is 0
	// loses its last worker after this long without calls.
	ScaleToZeroAfter time.Duration
	// WorkerSpare (WORKER_SPARE): a function whose min is 0 keeps one
	// frozen spare worker, which its next start thaws (pool.Config.Spare).
	WorkerSpare bool
	// CloudKeepWarm (CLOUD_KEEP_WARM): keep one cloud environment warm for
	// each function at zero workers, with a ping the shim answers without
	// running the function.
	CloudKeepWarm bool
	// CloudKeepWarmEvery (CLOUD_KEEP_WARM_EVERY): how often each function
	// at zero workers is pinged; below the ~5 minutes Lambda is commonly
	// seen to keep an idle environment, so a ping finds the one the last
	// kept.
	CloudKeepWarmEvery time.Duration
	// PoolBackend (POOL_BACKEND): docker (one engine) or swarm (a service
	// per function on the current swarm).
	PoolBackend       string
	Scheduler         string        // SCHEDULER: round-robin | least-connections
	OffloadPolicy     string        // OFFLOAD_POLICY
	Autoscaler        string        // AUTOSCALER: predictive | reference
	QueueTimeout      time.Duration // QUEUE_TIMEOUT: longest local wait before offloading (0: policy default)
	CloudMaxRPS       float64       // CLOUD_MAX_RPS: offload budget, 0 = unbounded
	CloudMaxCostHour  float64       // CLOUD_MAX_COST_PER_HOUR: USD, 0 = unbounded
	CloudBudgetBurst  time.Duration // CLOUD_BUDGET_BURST: how much of a budget may be spent at once
	OffloadWaitWeight float64       // OFFLOAD_WAIT_WEIGHT: latency-aware's weight of queue wait
	ScaleTargetUtil   float64       // SCALE_TARGET_UTILIZATION: predictive autoscaler headroom
	MaxRequestBytes   int64         // LB_MAX_REQUEST_BYTES
	MaxResultBytes    int64         // MAX_RESULT_BYTES: largest function result, enforced where it is produced
	MaxQueued         int           // MAX_QUEUED: calls that may wait for a local worker at once
	DrainTimeout      time.Duration // DRAIN_TIMEOUT: how long SIGTERM waits for in-flight calls
	FunctionName      string        // FAAS_FUNCTION_NAME: call_faas's function, and invoke's without a "function" option
	// Functions (FUNCTIONS) are the functions lb serves; nil means every
	// function in the registry ("*", the default), published later too.
	Functions []string
	// MaxTotalWorkers (MAX_TOTAL_WORKERS) caps the workers of all
	// functions together.
	MaxTotalWorkers int
	RedisAddr       string  // REDIS_ADDR
	PoolName        string  // POOL_NAME
	LBID            string  // LB_ID: this replica among the pool's lbs
	WorkerImage     string  // WORKER_IMAGE
	DockerNetwork   string  // DOCKER_NETWORK
	WorkerMemory    int64   // WORKER_MEMORY, bytes (accepts 256m, 1g)
	WorkerCPUs      float64 // WORKER_CPUS
	WorkerPids      int64   // WORKER_PIDS_LIMIT
	WorkerAddress   string  // WORKER_ADDRESS: auto | ip | name
	WorkerPort      int     // SERVER_PORT inside workers
	AuthToken       string  // LB_AUTH_TOKEN (never logged)
	AllowAnonymous  bool    // LB_ALLOW_ANONYMOUS: listen beyond loopback without LB_AUTH_TOKEN
	RedisPassword   string  // REDIS_PASSWORD (never logged)
	LogLevel        string  // LOG_LEVEL: debug | info | warn | error
	LogFormat       string  // LOG_FORMAT: text | json
	Pprof           bool    // LB_PPROF: serve /debug/pprof/ (behind LB_AUTH_TOKEN when set)
	Cloud           Cloud
}

// Cloud is the Lambda + API Gateway part.
type Cloud struct {
	Mode          string        // CLOUD: aws | local | off
	Region        string        // AWS_REGION
	Role          string        // AWS_ROLE: execution role ARN
	Endpoint      string        // AWS_ENDPOINT_URL (localcloud in local mode)
	LambdaName    string        // LAMBDA_NAME
	LambdaMemory  int32         // LAMBDA_MEMORY, MB
	LambdaTimeout time.Duration // LAMBDA_TIMEOUT
	APIName       string        // API_NAME
	APIStage      string        // API_STAGE
	OffloadVia    string        // OFFLOAD_VIA: apigateway | invoke
	ThrottleRPS   float64       // CLOUD_THROTTLE_RPS: usage plan rate
	ThrottleBurst int32         // CLOUD_THROTTLE_BURST: usage plan burst
}

// Enabled reports whether offloading is possible at all.
func (c Cloud) Enabled() bool { return c.Mode != "off" }

// DefaultMaxResultBytes is MAX_RESULT_BYTES's default: Lambda's limit for a
// synchronous response, 6 MiB.
const DefaultMaxResultBytes = 6 << 20

// Defaults of the variables several binaries read.
const (
	defaultConcurrency  = 1               // WORKER_CONCURRENCY
	defaultLocalTimeout = 5 * time.Second // LOCAL_TIMEOUT
	defaultServerPort   = 8001            // SERVER_PORT
	defaultLBPort       = 8000            // LOAD_BALANCER_PORT
	defaultLogLevel     = "info"          // LOG_LEVEL
	defaultFunctionName = "faas"          // FAAS_FUNCTION_NAME
	// defaultMaxTotalWorkers (MAX_TOTAL_WORKERS) fits a 2-core machine:
	// two functions at their default ceiling (2 x NUMBER_OF_SERVERS each).
	defaultMaxTotalWorkers = 8
	defaultRedisAddr       = "127.0.0.1:6379" // REDIS_ADDR
	defaultRegion          = "us-east-1"      // AWS_REGION
	defaultMaxRequest      = 1 << 20          // LB_MAX_REQUEST_BYTES, WORKER_MAX_REQUEST_BYTES
	maxConcurrency         = 256              // WORKER_CONCURRENCY's ceiling
	minResultBytes         = 1 << 10          // MAX_RESULT_BYTES's floor
	maxResultBytes         = 1 << 30          // MAX_RESULT_BYTES's ceiling
	lambdaMemoryMin        = 128              // LAMBDA_MEMORY, MB: Lambda's range
	lambdaMemoryMax        = 10240            //
	lambdaTimeoutMax       = 15 * time.Minute // LAMBDA_TIMEOUT: Lambda's limit
	defaultLocalRole       = "arn:aws:iam::000000000000:role/spillway-lambda"
	defaultLocalcloud      = "http://127.0.0.1:4566" // AWS_ENDPOINT_URL with CLOUD=local
)

// Choices for the enumerated variables.
var (
	Schedulers      = []string{"round-robin", "least-connections"}
	OffloadPolicies = []string{"overflow", "never", "always", "latency-aware"}
	Autoscalers     = []string{"predictive", "reference"}
	PoolBackends    = []string{"docker", "swarm"}
	CloudModes      = []string{"local", "aws", "off"}
	OffloadVias     = []string{"apigateway", "invoke"}
	WorkerAddresses = []string{"auto", "ip", "name"}
	LogLevels       = []string{"debug", "info", "warn", "error"}
	LogFormats      = []string{"text", "json"}
)

// Load parses and validates. Every error names the variable and the bad value;
// all problems are reported at once.
func Load(lookup Lookup) (Config, error) {
	p := parser{lookup: lookup}
	c := Config{
		NumberOfServers:    p.int("NUMBER_OF_SERVERS", 2),
		WorkerConcurrency:  p.int("WORKER_CONCURRENCY", defaultConcurrency),
		LoadBalancerPort:   p.int("LOAD_BALANCER_PORT", defaultLBPort),
		ListenHost:         p.str("LB_LISTEN_HOST", "127.0.0.1"),
		LocalTimeout:       p.duration("LOCAL_TIMEOUT", defaultLocalTimeout),
		ElasticitySleep:    p.duration("ELASTICITY_SLEEP", time.Second),
		ScaleDownDelay:     p.duration("SCALE_DOWN_DELAY", 30*time.Second),
		ScaleToZeroAfter:   p.duration("SCALE_TO_ZERO_AFTER", 5*time.Minute),
		WorkerSpare:        p.bool("WORKER_SPARE", true),
		CloudKeepWarm:      p.bool("CLOUD_KEEP_WARM", false),
		CloudKeepWarmEvery: p.duration("CLOUD_KEEP_WARM_EVERY", 4*time.Minute),
		PoolBackend:        p.choice("POOL_BACKEND", "docker", PoolBackends),
		Scheduler:          p.choice("SCHEDULER", "round-robin", Schedulers),
		OffloadPolicy:      p.choice("OFFLOAD_POLICY", "overflow", OffloadPolicies),
		Autoscaler:         p.choice("AUTOSCALER", "predictive", Autoscalers),
		QueueTimeout:       p.duration("QUEUE_TIMEOUT", 0),
		CloudMaxRPS:        p.float("CLOUD_MAX_RPS", 0),
		CloudMaxCostHour:   p.float("CLOUD_MAX_COST_PER_HOUR", 0),
		CloudBudgetBurst:   p.duration("CLOUD_BUDGET_BURST", time.Second),
		OffloadWaitWeight:  p.float("OFFLOAD_WAIT_WEIGHT", 4),
		ScaleTargetUtil:    p.float("SCALE_TARGET_UTILIZATION", 0.8),
		MaxRequestBytes:    p.bytes("LB_MAX_REQUEST_BYTES", defaultMaxRequest),
		MaxResultBytes:     p.bytes("MAX_RESULT_BYTES", DefaultMaxResultBytes),
		MaxQueued:          p.int("MAX_QUEUED", 1000),
		DrainTimeout:       p.duration("DRAIN_TIMEOUT", 30*time.Second),
		FunctionName:       p.str("FAAS_FUNCTION_NAME", defaultFunctionName),
		RedisAddr:          p.str("REDIS_ADDR", defaultRedisAddr),
		PoolName:           p.str("POOL_NAME", "spillway"),
		LBID:               p.str("LB_ID", defaultLBID()),
		WorkerImage:        p.str("WORKER_IMAGE", p.workerImage()),
		WorkerMemory:       p.bytes("WORKER_MEMORY", 256<<20),
		WorkerCPUs:         p.float("WORKER_CPUS", 1),
		WorkerPids:         int64(p.int("WORKER_PIDS_LIMIT", 128)),
		WorkerAddress:      p.choice("WORKER_ADDRESS", "auto", WorkerAddresses),
		WorkerPort:         p.int("SERVER_PORT", defaultServerPort),
		AuthToken:          p.str("LB_AUTH_TOKEN", ""),
		AllowAnonymous:     p.bool("LB_ALLOW_ANONYMOUS", false),
		RedisPassword:      p.str("REDIS_PASSWORD", ""),
		LogLevel:           p.choice("LOG_LEVEL", defaultLogLevel, LogLevels),
		LogFormat:          p.choice("LOG_FORMAT", "text", LogFormats),
		Pprof:              p.bool("LB_PPROF", false),
	}
	// With NUMBER_OF_SERVERS=0 (scale to zero) the default ceiling is 2.
	c.MaxServers = p.int("MAX_SERVERS", max(2*c.NumberOfServers, 2))
	c.MaxTotalWorkers = p.int("MAX_TOTAL_WORKERS", defaultMaxTotalWorkers)
	if list := strings.TrimSpace(p.str("FUNCTIONS", "*")); list != "*" {
		for _, name := range strings.Split(list, ",") {
			name = strings.TrimSpace(name)
			if !validName(name) {
				p.fail("FUNCTIONS", list, fmt.Sprintf("%q is not a function name: give * or a comma list of names (1-48 letters, digits, '-' or '_')", name))
				continue
			}
			if !slices.Contains(c.Functions, name) {
				c.Functions = append(c.Functions, name)
			}
		}
	}
	c.DockerNetwork = p.str("DOCKER_NETWORK", c.PoolName+"-workers")
	c.Cloud = Cloud{
		Mode:          p.choice("CLOUD", "local", CloudModes),
		Region:        p.str("AWS_REGION", defaultRegion),
		Role:          p.str("AWS_ROLE", ""),
		Endpoint:      p.str("AWS_ENDPOINT_URL", ""),
		LambdaName:    p.str("LAMBDA_NAME", CloudName(c.FunctionName)),
		LambdaMemory:  int32(p.int("LAMBDA_MEMORY", 3008)),
		LambdaTimeout: p.duration("LAMBDA_TIMEOUT", 30*time.Second),
		APIName:       p.str("API_NAME", CloudName(c.FunctionName)),
		APIStage:      p.str("API_STAGE", "dev"),
		OffloadVia:    p.choice("OFFLOAD_VIA", "apigateway", OffloadVias),
		ThrottleRPS:   p.float("CLOUD_THROTTLE_RPS", 100),
		ThrottleBurst: int32(p.int("CLOUD_THROTTLE_BURST", 200)),
	}
	if c.Cloud.Mode == "local" && c.Cloud.Endpoint == "" {
		c.Cloud.Endpoint = defaultLocalcloud
	}
	if c.Cloud.Mode == "local" && c.Cloud.Role == "" {
		c.Cloud.Role = defaultLocalRole
	}
	if len(p.errs) > 0 {
		return Config{}, errors.Join(p.errs...)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Defaults is the configuration of an empty environment: every variable at
// its default.
func Defaults() Config {
	c, err := Load(func(string) (string, bool) { return "", false })
	if err != nil {
		panic("config: the defaults do not validate: " + err.Error()) // TestLoadDefaults keeps them valid
	}
	return c
}

// Validate checks the ranges and relations between variables.
func (c Config) Validate() error {
	var v validator
	bad := v.bad
	if c.NumberOfServers < 0 {
		bad("NUMBER_OF_SERVERS", c.NumberOfServers, "must not be negative (0 scales every function to zero when idle)")
	}
	if c.MaxServers < 1 {
		bad("MAX_SERVERS", c.MaxServers, "must be at least 1")
	}
	if c.MaxServers < c.NumberOfServers {
		bad("MAX_SERVERS", c.MaxServers, fmt.Sprintf("must be at least NUMBER_OF_SERVERS (%d)", c.NumberOfServers))
	}
	if c.MaxServers > 1000 {
		bad("MAX_SERVERS", c.MaxServers, "must be at most 1000")
	}
	v.concurrency(c.WorkerConcurrency)
	v.port("LOAD_BALANCER_PORT", c.LoadBalancerPort)
	v.port("SERVER_PORT", c.WorkerPort)
	v.localTimeout(c.LocalTimeout)
	v.maxResultBytes(c.MaxResultBytes)
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"ELASTICITY_SLEEP", c.ElasticitySleep},
		{"DRAIN_TIMEOUT", c.DrainTimeout},
		{"LAMBDA_TIMEOUT", c.Cloud.LambdaTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			bad(p.name, p.d, "must be positive")
		}
	}
	if c.MaxQueued < 1 {
		bad("MAX_QUEUED", c.MaxQueued, "must be at least 1")
	}
	if c.ScaleToZeroAfter <= 0 {
		bad("SCALE_TO_ZERO_AFTER", c.ScaleToZeroAfter, "must be positive")
	}
	if c.CloudKeepWarmEvery < time.Second {
		bad("CLOUD_KEEP_WARM_EVERY", c.CloudKeepWarmEvery, "must be at least 1s")
	}
	if c.ScaleDownDelay < 0 {
		bad("SCALE_DOWN_DELAY", c.ScaleDownDelay, "must not be negative")
	}
	if c.QueueTimeout < 0 {
		bad("QUEUE_TIMEOUT", c.QueueTimeout, "must not be negative")
	}
	if c.Cloud.LambdaTimeout > lambdaTimeoutMax {
		bad("LAMBDA_TIMEOUT", c.Cloud.LambdaTimeout, "Lambda allows at most 15m")
	}
	if c.Cloud.LambdaMemory < lambdaMemoryMin || c.Cloud.LambdaMemory > lambdaMemoryMax {
		bad("LAMBDA_MEMORY", c.Cloud.LambdaMemory, "Lambda allows 128 to 10240 MB")
	}
	if c.CloudMaxRPS < 0 {
		bad("CLOUD_MAX_RPS", c.CloudMaxRPS, "must not be negative")
	}
	if c.CloudMaxCostHour < 0 {
		bad("CLOUD_MAX_COST_PER_HOUR", c.CloudMaxCostHour, "must not be negative")
	}
	if c.CloudBudgetBurst <= 0 {
		bad("CLOUD_BUDGET_BURST", c.CloudBudgetBurst, "must be positive")
	}
	if c.OffloadWaitWeight <= 0 {
		bad("OFFLOAD_WAIT_WEIGHT", c.OffloadWaitWeight, "must be positive")
	}
	if c.ScaleTargetUtil <= 0 || c.ScaleTargetUtil > 1 {
		bad("SCALE_TARGET_UTILIZATION", c.ScaleTargetUtil, "must be in (0, 1]")
	}
	if c.MaxRequestBytes < 1024 {
		bad("LB_MAX_REQUEST_BYTES", c.MaxRequestBytes, "must be at least 1024")
	}
	if c.WorkerMemory != 0 && c.WorkerMemory < 32<<20 {
		bad("WORKER_MEMORY", c.WorkerMemory, "must be at least 32m (0 for no limit)")
	}
	if c.WorkerCPUs < 0 {
		bad("WORKER_CPUS", c.WorkerCPUs, "must not be negative (0 for no limit)")
	}
	if c.WorkerPids < 0 {
		bad("WORKER_PIDS_LIMIT", c.WorkerPids, "must not be negative (0 for no limit)")
	}
	if c.MaxTotalWorkers < c.NumberOfServers {
		bad("MAX_TOTAL_WORKERS", c.MaxTotalWorkers, fmt.Sprintf("must be at least NUMBER_OF_SERVERS (%d)", c.NumberOfServers))
	}
	for name, val := range map[string]string{"FAAS_FUNCTION_NAME": c.FunctionName, "POOL_NAME": c.PoolName} {
		if !validName(val) {
			bad(name, quote(val), "must be 1-48 letters, digits, '-' or '_', starting with a letter or digit")
		}
	}
	if c.AuthToken == "" && !c.AllowAnonymous && !IsLoopback(c.ListenHost) {
		bad("LB_LISTEN_HOST", quote(c.ListenHost),
			"lb listens beyond loopback without a token: set LB_AUTH_TOKEN, or LB_ALLOW_ANONYMOUS=true to accept anonymous callers")
	}
	if !lbIDRE.MatchString(c.LBID) {
		bad("LB_ID", quote(c.LBID), "must be 1-64 letters, digits, '.', '-' or '_', starting with a letter or digit")
	}
	if c.RedisAddr == "" {
		bad("REDIS_ADDR", `""`, "must be host:port")
	}
	if c.WorkerImage == "" {
		bad("WORKER_IMAGE", `""`, "must name an image")
	}
	if c.Cloud.Mode == "local" {
		if u, err := url.Parse(c.Cloud.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("AWS_ENDPOINT_URL", quote(c.Cloud.Endpoint), "must be an http(s) URL of localcloud")
		}
	}
	if c.Cloud.Mode == "aws" && c.Cloud.Role == "" {
		bad("AWS_ROLE", `""`, "CLOUD=aws needs the Lambda execution role ARN")
	}
	if c.Cloud.Enabled() && c.Cloud.APIStage == "" {
		bad("API_STAGE", `""`, "must not be empty")
	}
	if c.Cloud.ThrottleRPS <= 0 {
		bad("CLOUD_THROTTLE_RPS", c.Cloud.ThrottleRPS, "must be positive")
	}
	if c.Cloud.ThrottleBurst <= 0 {
		bad("CLOUD_THROTTLE_BURST", c.Cloud.ThrottleBurst, "must be positive")
	}
	return v.err()
}

// validator collects range errors, each naming the variable and its value.
// Its methods are the one check of a variable several binaries read.
type validator struct{ errs []error }

func (v *validator) bad(name string, value any, why string) {
	v.errs = append(v.errs, fmt.Errorf("%s=%v: %s", name, value, why))
}

func (v *validator) err() error { return errors.Join(v.errs...) }

// concurrency checks WORKER_CONCURRENCY (lb and worker).
func (v *validator) concurrency(n int) {
	if n < 1 || n > maxConcurrency {
		v.bad("WORKER_CONCURRENCY", n, fmt.Sprintf("must be between 1 and %d", maxConcurrency))
	}
}

// localTimeout checks LOCAL_TIMEOUT (lb and worker).
func (v *validator) localTimeout(d time.Duration) {
	if d <= 0 {
		v.bad("LOCAL_TIMEOUT", d, "must be positive")
	}
}

// maxResultBytes checks MAX_RESULT_BYTES (lb and worker).
func (v *validator) maxResultBytes(n int64) {
	if n < minResultBytes || n > maxResultBytes {
		v.bad("MAX_RESULT_BYTES", n, "must be between 1k and 1g")
	}
}

// port checks a TCP port variable.
func (v *validator) port(name string, n int) {
	if n < 1 || n > 65535 {
		v.bad(name, n, "must be a TCP port between 1 and 65535")
	}
}

// LocalSlots is MAX_SERVERS × WORKER_CONCURRENCY, the reference overflow bound.
func (c Config) LocalSlots() int { return c.MaxServers * c.WorkerConcurrency }

// ListenAddr is host:port for lb's server.
func (c Config) ListenAddr() string {
	return c.ListenHost + ":" + strconv.Itoa(c.LoadBalancerPort)
}

// IsLoopback reports whether host (an LB_LISTEN_HOST value) binds loopback
// only: "localhost", or an IP address in 127.0.0.0/8 or ::1. An empty host
// or an unspecified address (0.0.0.0, ::) binds every interface.
func IsLoopback(host string) bool {
	h := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(host), "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 48 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case (r == '-' || r == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

func quote(s string) string { return strconv.Quote(s) }
