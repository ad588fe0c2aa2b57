package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

// workerConfig is what the worker reads from its environment: the
// environment lb sets on each worker container (workerapi.Env).
type workerConfig = workerapi.Env

// loadConfig parses the environment; every error names the variable and value.
func loadConfig(lookup config.Lookup) (workerConfig, error) {
	var errs []error
	get := func(name, def string) string {
		if v, ok := lookup(name); ok && v != "" {
			return v
		}
		return def
	}
	integer := func(name string, def int64) int64 {
		v := get(name, "")
		if v == "" {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not an integer", name, v))
			return def
		}
		return n
	}
	c := workerConfig{
		Port:            int(integer("SERVER_PORT", 8001)),
		ListenHost:      get("WORKER_LISTEN_HOST", ""),
		FunctionPath:    get("FUNCTION_PATH", workerapi.FunctionPath),
		Handler:         get("FUNCTION_HANDLER", spillway.DefaultHandler),
		Version:         integer("FUNCTION_VERSION", 0),
		FunctionName:    get("FUNCTION_NAME", "faas"),
		Concurrency:     int(integer("WORKER_CONCURRENCY", 1)),
		Python:          get("PYTHON", "/usr/bin/python3"),
		MaxRequestBytes: integer("WORKER_MAX_REQUEST_BYTES", 1<<20),
		MaxResultBytes:  integer("MAX_RESULT_BYTES", config.DefaultMaxResultBytes),
		LogLevel:        get("LOG_LEVEL", "info"),
	}
	styleText := get("FUNCTION_STYLE", string(spillway.StyleScript))
	style, err := spillway.ParseStyle(styleText)
	if err != nil {
		errs = append(errs, fmt.Errorf("FUNCTION_STYLE=%q: want script or handler", styleText))
	}
	c.Style = style
	switch v := get(workerapi.VarReuseProcess, "0"); v {
	case "1", "true":
		c.ReuseProcess = true
	case "0", "false":
	default:
		errs = append(errs, fmt.Errorf("%s=%q: want 1 or 0", workerapi.VarReuseProcess, v))
	}
	timeoutText := get("LOCAL_TIMEOUT", "5s")
	c.LocalTimeout, err = config.ParseDuration(timeoutText)
	if err != nil {
		errs = append(errs, fmt.Errorf("LOCAL_TIMEOUT=%q: %v", timeoutText, err))
	}
	if len(errs) > 0 {
		return workerConfig{}, errors.Join(errs...)
	}
	return c, validate(c)
}

// validate checks ranges.
func validate(c workerConfig) error {
	var errs []error
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("SERVER_PORT=%d: want 1..65535", c.Port))
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		errs = append(errs, fmt.Errorf("WORKER_CONCURRENCY=%d: want 1..256", c.Concurrency))
	}
	if c.LocalTimeout <= 0 {
		errs = append(errs, fmt.Errorf("LOCAL_TIMEOUT=%s: must be positive", c.LocalTimeout))
	}
	if c.Version < 0 {
		errs = append(errs, fmt.Errorf("FUNCTION_VERSION=%d: must not be negative", c.Version))
	}
	if c.MaxResultBytes < 1024 {
		errs = append(errs, fmt.Errorf("MAX_RESULT_BYTES=%d: want at least 1024", c.MaxResultBytes))
	}
	if c.MaxRequestBytes < 1024 {
		errs = append(errs, fmt.Errorf("WORKER_MAX_REQUEST_BYTES=%d: want at least 1024", c.MaxRequestBytes))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL=%q: %v", c.LogLevel, err))
	}
	if !validIdentifier(c.Handler) {
		errs = append(errs, fmt.Errorf("FUNCTION_HANDLER=%q: not a Python identifier", c.Handler))
	}
	return errors.Join(errs...)
}

func validIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return true
}
