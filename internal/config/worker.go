package config

import (
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

// Defaults of the worker's own variables (those lb sets and the worker's
// image sets are above and in workerapi).
const (
	defaultPython       = "/usr/bin/python3" // PYTHON: the worker image's interpreter
	defaultWorkerFnName = "faas"             // FUNCTION_NAME: handlers' context.function_name
)

// LoadWorker reads a worker's environment: what lb sets in each worker
// container (workerapi.Env names the variables), with the defaults a worker
// run by hand takes. Every error names the variable and its value; all are
// reported at once.
func LoadWorker(lookup Lookup) (workerapi.Env, error) {
	p := parser{lookup: lookup}
	e := workerapi.Env{
		Port:            p.int(workerapi.VarPort, defaultServerPort),
		ListenHost:      p.str(workerapi.VarListenHost, ""),
		FunctionPath:    p.str(workerapi.VarFunctionPath, workerapi.FunctionPath),
		Handler:         p.str(workerapi.VarHandler, spillway.DefaultHandler),
		Version:         p.int64(workerapi.VarVersion, 0),
		FunctionName:    p.str(workerapi.VarFunctionName, defaultWorkerFnName),
		Concurrency:     p.int(workerapi.VarConcurrency, defaultConcurrency),
		LocalTimeout:    p.duration(workerapi.VarLocalTimeout, defaultLocalTimeout),
		Python:          p.str(workerapi.VarPython, defaultPython),
		MaxRequestBytes: p.bytes(workerapi.VarMaxRequestBytes, defaultMaxRequest),
		MaxResultBytes:  p.bytes(workerapi.VarMaxResultBytes, DefaultMaxResultBytes),
		LogLevel:        p.choice(workerapi.VarLogLevel, defaultLogLevel, LogLevels),
		StopDelay:       p.duration(workerapi.VarStopDelay, 0),
	}
	switch v := p.str(workerapi.VarReuseProcess, "0"); v {
	case "1", "true":
		e.ReuseProcess = true
	case "0", "false":
	default:
		p.fail(workerapi.VarReuseProcess, v, "want 1 or 0")
	}
	style := p.str(workerapi.VarStyle, string(spillway.StyleScript))
	if s, err := spillway.ParseStyle(style); err != nil {
		p.fail(workerapi.VarStyle, style, "want script or handler")
	} else {
		e.Style = s
	}
	if len(p.errs) > 0 {
		return workerapi.Env{}, joinErrs(p.errs)
	}
	return e, ValidateWorker(e)
}

// ValidateWorker checks a worker's environment: the ranges lb's
// configuration checks for the same variables, and the worker's own.
func ValidateWorker(e workerapi.Env) error {
	var v validator
	v.port(workerapi.VarPort, e.Port)
	v.concurrency(e.Concurrency)
	v.localTimeout(e.LocalTimeout)
	v.maxResultBytes(e.MaxResultBytes)
	if e.StopDelay < 0 || e.StopDelay > time.Minute {
		v.bad(workerapi.VarStopDelay, e.StopDelay, "want 0 to 1m")
	}
	if e.Version < 0 {
		v.bad(workerapi.VarVersion, e.Version, "must not be negative")
	}
	if e.MaxRequestBytes < 1024 {
		v.bad(workerapi.VarMaxRequestBytes, e.MaxRequestBytes, "must be at least 1024")
	}
	if !validIdentifier(e.Handler) {
		v.bad(workerapi.VarHandler, quote(e.Handler), "not a Python identifier")
	}
	return v.err()
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
