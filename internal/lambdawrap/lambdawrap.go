// Package lambdawrap holds Spillway's Python shims, handler.py and zygote.py, and builds
// the deterministic Lambda deployment zip around a function.
//
// The same shim runs a function in three places: inside AWS Lambda, inside
// localcloud's execution environments (both call handler.handler), and in the
// worker's warm runners (worker mode, see internal/runner). So the event
// envelope, the result and the error shapes are the same wherever a call runs.
package lambdawrap

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/spillway-faas/spillway"
)

// Shim is the source of handler.py.
//
//go:embed handler.py
var Shim []byte

// Zygote is the source of zygote.py, which runs script-style functions in
// the worker: one child forked per call from a small warm process.
//
//go:embed zygote.py
var Zygote []byte

// File names inside the zip and the Lambda handler string.
const (
	FunctionFile = "function.py"
	ShimFile     = "handler.py"
	ZygoteFile   = "zygote.py"
	ConfigFile   = "spillway.json"
	// LambdaHandler is the Lambda Handler setting for a zip from BuildZip.
	LambdaHandler = "handler.handler"
	// ReuseProcessEnv set to "1" in the function's environment makes the
	// shim run a script-style function in its warm process (the record's
	// reuse_process; the worker passes --reuse-process instead).
	ReuseProcessEnv = "SPILLWAY_REUSE_PROCESS"
	// PingKey marks lb's keep-warm ping (CLOUD_KEEP_WARM): the event, or a
	// proxy event's body, {"spillway_ping": true} with no "parameter" key,
	// which the shim in Lambda answers {"statusCode": 200, "ping": true,
	// "coldStart": b} without running the function. lb sends every call's
	// value under "parameter", so no call is ever taken for a ping.
	PingKey = "spillway_ping"
)

// PingEvent is the keep-warm ping's event (see PingKey).
func PingEvent() []byte { return []byte(`{"` + PingKey + `":true}`) }

// zipTime is the modification time of every zip entry, so that the same
// function always gives the same bytes (and the same CodeSha256).
var zipTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Config is the content of spillway.json, which tells the shim in Lambda mode
// how to run function.py.
type Config struct {
	Style   spillway.Style `json:"style"`
	Handler string         `json:"handler"`
	// MaxResultBytes is MAX_RESULT_BYTES for the shim in Lambda; absent (0)
	// means DefaultMaxResultBytes, Lambda's own limit.
	MaxResultBytes int64 `json:"maxResultBytes,omitempty"`
}

// DefaultMaxResultBytes is the shim's cap on a result's JSON when none is
// given: Lambda's limit for a synchronous answer.
const DefaultMaxResultBytes = 6 << 20

// ConfigFor returns the shim config of fn, validated. An empty style means
// script (the reference's plain source).
func ConfigFor(fn spillway.Function) (Config, error) {
	style := fn.Style
	if style == "" {
		style = spillway.StyleScript
	}
	if _, err := spillway.ParseStyle(string(style)); err != nil {
		return Config{}, fmt.Errorf("function %q: %w", fn.Name, err)
	}
	h := fn.HandlerName()
	if !identifier.MatchString(h) {
		return Config{}, fmt.Errorf("function %q: handler name %q is not a Python identifier", fn.Name, h)
	}
	return Config{Style: style, Handler: h}, nil
}

// BuildZip returns the Lambda deployment package of fn: function.py (the
// user's code), handler.py (the shim) and spillway.json, in that order, with
// fixed timestamps and modes. The same function gives the same bytes.
func BuildZip(fn spillway.Function) ([]byte, error) {
	return BuildZipCapped(fn, 0)
}

// BuildZipCapped is BuildZip with the shim's result cap (MAX_RESULT_BYTES)
// written into spillway.json; 0 or the default leaves the package exactly
// BuildZip's, so the default never changes a deployed CodeSha256.
func BuildZipCapped(fn spillway.Function, maxResultBytes int64) ([]byte, error) {
	if fn.Code == "" {
		return nil, fmt.Errorf("build zip of function %q: empty code", fn.Name)
	}
	conf, err := ConfigFor(fn)
	if err != nil {
		return nil, fmt.Errorf("build zip: %w", err)
	}
	if maxResultBytes > 0 && maxResultBytes != DefaultMaxResultBytes {
		conf.MaxResultBytes = maxResultBytes
	}
	confJSON, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("build zip of function %q: encode config: %w", fn.Name, err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	entries := []struct {
		name string
		data []byte
	}{
		{FunctionFile, []byte(fn.Code)},
		{ShimFile, Shim},
		{ConfigFile, confJSON},
	}
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: zipTime}
		h.SetMode(0o644)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, fmt.Errorf("build zip of function %q: add %s: %w", fn.Name, e.name, err)
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, fmt.Errorf("build zip of function %q: write %s: %w", fn.Name, e.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("build zip of function %q: %w", fn.Name, err)
	}
	return buf.Bytes(), nil
}

// CodeSHA256 is what Lambda reports as CodeSha256 for a zip: the base64 of
// its sha256.
func CodeSHA256(zip []byte) string {
	sum := sha256.Sum256(zip)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// WriteShim writes handler.py, and zygote.py beside it, into dir (created if
// missing) and returns the path of handler.py.
func WriteShim(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("write shim: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ZygoteFile), Zygote, 0o644); err != nil {
		return "", fmt.Errorf("write shim: %w", err)
	}
	p := filepath.Join(dir, ShimFile)
	if err := os.WriteFile(p, Shim, 0o644); err != nil {
		return "", fmt.Errorf("write shim: %w", err)
	}
	return p, nil
}
