package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/joho/godotenv"

	"github.com/spillway-faas/spillway/internal/localcloud"
)

// Dotenv returns a lookup of env (os.LookupEnv in a binary) over the dotenv
// file at path: a variable env has (even empty) wins, otherwise the file's.
// A missing file is fine.
func Dotenv(path string, env Lookup) (Lookup, error) {
	file, err := godotenv.Read(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return func(key string) (string, bool) {
		if v, ok := env(key); ok {
			return v, true
		}
		v, ok := file[key]
		return v, ok
	}, nil
}

// NonEmpty is env with empty variables unset, so that Dotenv falls
// through to the file for them.
func NonEmpty(env Lookup) Lookup {
	return func(key string) (string, bool) {
		v, ok := env(key)
		return v, ok && v != ""
	}
}

// Addfaas is what addfaas reads from the environment: the defaults of its
// --name, --redis and --redis-password flags.
type Addfaas struct {
	FunctionName  string // FAAS_FUNCTION_NAME
	RedisAddr     string // REDIS_ADDR
	RedisPassword string // REDIS_PASSWORD (never printed)
}

// LoadAddfaas reads addfaas's variables. They are flag defaults: addfaas
// checks the values it ends up with (a name, a non-empty address).
func LoadAddfaas(lookup Lookup) (Addfaas, error) {
	p := parser{lookup: lookup}
	return Addfaas{
		FunctionName:  p.str("FAAS_FUNCTION_NAME", defaultFunctionName),
		RedisAddr:     p.str("REDIS_ADDR", defaultRedisAddr),
		RedisPassword: p.str("REDIS_PASSWORD", ""),
	}, nil
}

// Client is what bin/client reads from the environment.
type Client struct {
	// LBURL is LB_URL: lb's URL, or a comma-separated list of replicas.
	// Empty means http://127.0.0.1:<LOAD_BALANCER_PORT>/ (see URL).
	LBURL     string
	LBPort    int    // LOAD_BALANCER_PORT
	AuthToken string // LB_AUTH_TOKEN: sent as a bearer token when set
	// FunctionName is FAAS_FUNCTION_NAME: the function an lb that serves
	// one function only (no call or functions methods) is taken to serve,
	// so that --fn with this name still reaches it through call_faas.
	// Without --fn the client calls call_faas and never names a function.
	FunctionName string
}

// URL is where the client calls when --lb is not given: LB_URL, else lb's
// port on loopback.
func (c Client) URL() string {
	if c.LBURL != "" {
		return c.LBURL
	}
	return "http://127.0.0.1:" + strconv.Itoa(c.LBPort) + "/"
}

// LoadClient reads the client's variables.
func LoadClient(lookup Lookup) (Client, error) {
	p := parser{lookup: lookup}
	c := Client{
		LBURL:     p.str("LB_URL", ""),
		LBPort:    p.int("LOAD_BALANCER_PORT", defaultLBPort),
		AuthToken: p.str("LB_AUTH_TOKEN", ""),

		FunctionName: p.str("FAAS_FUNCTION_NAME", defaultFunctionName),
	}
	if len(p.errs) > 0 {
		return Client{}, errors.Join(p.errs...)
	}
	var v validator
	v.port("LOAD_BALANCER_PORT", c.LBPort)
	return c, v.err()
}

// Localcloud is what cmd/localcloud reads from the environment.
type Localcloud struct {
	Listen   string            // LOCALCLOUD_LISTEN: host:port, the default of --listen
	LogLevel string            // LOG_LEVEL
	Server   localcloud.Config // the emulator's settings (LOCALCLOUD_*, AWS_REGION)
}

// LoadLocalcloud reads localcloud's variables. LOCALCLOUD_PYTHON and
// LOCALCLOUD_DIR left empty keep localcloud's choice (the interpreter found
// on the machine; a temporary directory).
func LoadLocalcloud(lookup Lookup) (Localcloud, error) {
	p := parser{lookup: lookup}
	c := Localcloud{
		Listen:   p.str("LOCALCLOUD_LISTEN", localcloud.DefaultListen),
		LogLevel: p.choice("LOG_LEVEL", defaultLogLevel, LogLevels),
		Server: localcloud.Config{
			Isolation:   localcloud.Isolation(p.choice("LOCALCLOUD_ISOLATION", string(localcloud.IsolationContainer), Isolations)),
			Image:       p.str("LOCALCLOUD_IMAGE", p.workerImage()),
			Instance:    p.str("LOCALCLOUD_INSTANCE", localcloud.DefaultInstance),
			PidsLimit:   p.int64("LOCALCLOUD_PIDS_LIMIT", localcloud.DefaultPidsLimit),
			MaxMemoryMB: p.int("LOCALCLOUD_MAX_MEMORY", localcloud.DefaultMaxMemoryMB),
			CPUs:        p.float("LOCALCLOUD_CPUS", localcloud.DefaultCPUs),
			Concurrency: p.int("LOCALCLOUD_CONCURRENCY", localcloud.DefaultConcurrency),
			Python:      p.str("LOCALCLOUD_PYTHON", ""),
			IdleTimeout: p.duration("LOCALCLOUD_IDLE_TIMEOUT", localcloud.DefaultIdleTimeout),
			Dir:         p.str("LOCALCLOUD_DIR", ""),
			Region:      p.str("AWS_REGION", defaultRegion),
		},
	}
	if len(p.errs) > 0 {
		return Localcloud{}, errors.Join(p.errs...)
	}
	var v validator
	s := c.Server
	if !instanceRE.MatchString(s.Instance) {
		v.bad("LOCALCLOUD_INSTANCE", quote(s.Instance), "want letters, digits, '_', '.', '-'")
	}
	if s.PidsLimit < 16 {
		v.bad("LOCALCLOUD_PIDS_LIMIT", s.PidsLimit, "want an integer ≥ 16")
	}
	if s.MaxMemoryMB < 32 {
		v.bad("LOCALCLOUD_MAX_MEMORY", s.MaxMemoryMB, "want megabytes ≥ 32")
	}
	if s.CPUs <= 0 || s.CPUs > 64 {
		v.bad("LOCALCLOUD_CPUS", s.CPUs, "want a number of CPUs > 0, like 1 or 0.5")
	}
	if s.Concurrency < 1 {
		v.bad("LOCALCLOUD_CONCURRENCY", s.Concurrency, "want an integer ≥ 1")
	}
	if s.IdleTimeout <= 0 {
		v.bad("LOCALCLOUD_IDLE_TIMEOUT", s.IdleTimeout, "want a positive duration (300 or 5m)")
	}
	return c, v.err()
}

// Isolations are LOCALCLOUD_ISOLATION's choices.
var Isolations = []string{string(localcloud.IsolationContainer), string(localcloud.IsolationUnsafeProcess)}
