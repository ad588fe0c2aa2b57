// Package pysource validates a function's Python source before it is
// published and detects its style, using Python's own parser (the ast module,
// in a short python3 subprocess) so that what passes here also compiles in
// the worker and in Lambda.
package pysource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spillway-faas/spillway"
)

// MaxSize is the default limit on a function's source, 256 KiB.
//
// Lambda takes a 50 MB zip by direct upload and shows code of at most 3 MB in
// its console editor; a Spillway function is one hand-written module stored
// as a Redis value, copied into every worker and zipped with the shim on every
// deploy. 256 KiB is several times the largest single-module function one
// writes by hand, keeps the zip far inside Lambda's limits and the record
// cheap to copy around; code with real dependencies belongs in a layer or an
// image, not in a function record.
const MaxSize = 256 << 10

// ErrInvalid is wrapped by every error that is the source's fault (empty,
// oversize, not UTF-8, does not compile, no handler where one was asked for),
// as opposed to a failure to run the checker itself.
var ErrInvalid = errors.New("invalid function source")

// Checker runs the checks. The zero value uses python3 from PATH, MaxSize and
// a 10 s timeout.
type Checker struct {
	Python   string        // interpreter; empty means python3 from PATH
	MaxBytes int           // size limit; 0 means MaxSize
	Timeout  time.Duration // bound on the Python subprocess; 0 means 10s
}

// Analysis is what Check learned about a source.
type Analysis struct {
	// Handler is the name that was looked for (spillway.DefaultHandler when
	// none was given).
	Handler string
	// HasHandler says the module defines Handler at top level with def.
	HasHandler bool
	// HandlerArgs is the number of positional parameters Handler takes.
	HandlerArgs int
	// Detected is the style auto-detection picks: handler when HasHandler,
	// else script.
	Detected spillway.Style
}

// Check validates src (non-empty, at most MaxBytes, valid UTF-8, compiles
// under Python) and looks for a top-level `def <handler>`. Errors that are the
// source's fault wrap ErrInvalid and fit on one line, with line and column for
// syntax errors.
func (c Checker) Check(ctx context.Context, src []byte, handler string) (Analysis, error) {
	if handler == "" {
		handler = spillway.DefaultHandler
	}
	if !isIdentifier(handler) {
		return Analysis{}, fmt.Errorf("%w: handler name %q is not a Python identifier", ErrInvalid, handler)
	}
	limit := c.MaxBytes
	if limit <= 0 {
		limit = MaxSize
	}
	switch {
	case len(bytes.TrimSpace(src)) == 0:
		return Analysis{}, fmt.Errorf("%w: source is empty", ErrInvalid)
	case len(src) > limit:
		return Analysis{}, fmt.Errorf("%w: source is %d bytes, over the %d-byte limit", ErrInvalid, len(src), limit)
	case !utf8.Valid(src):
		return Analysis{}, fmt.Errorf("%w: source is not valid UTF-8 (first bad byte at offset %d)", ErrInvalid, firstInvalid(src))
	case bytes.IndexByte(src, 0) >= 0:
		return Analysis{}, fmt.Errorf("%w: source contains a NUL byte at offset %d", ErrInvalid, bytes.IndexByte(src, 0))
	}

	rep, err := c.runPython(ctx, src, handler)
	if err != nil {
		return Analysis{}, err
	}
	if rep.Error != nil {
		return Analysis{}, fmt.Errorf("%w: %s", ErrInvalid, rep.Error.describe())
	}
	a := Analysis{Handler: handler, HasHandler: rep.HasHandler, HandlerArgs: rep.HandlerArgs, Detected: spillway.StyleScript}
	if a.HasHandler {
		a.Detected = spillway.StyleHandler
	}
	return a, nil
}

// Resolve picks the style to publish: requested is "auto" (or empty) for the
// detected style, or "script" / "handler" to override it. Asking for handler
// style when the source defines no such function is an ErrInvalid error.
func Resolve(a Analysis, requested string) (spillway.Style, error) {
	if requested == "" || requested == "auto" {
		return a.Detected, nil
	}
	style, err := spillway.ParseStyle(requested)
	if err != nil {
		return "", fmt.Errorf("%w: style %q (want auto, script or handler)", ErrInvalid, requested)
	}
	if style == spillway.StyleHandler && !a.HasHandler {
		return "", fmt.Errorf("%w: handler style asked for, but the source has no top-level `def %s(event, context)`", ErrInvalid, a.Handler)
	}
	return style, nil
}

// checkScript reads the source on stdin and prints one JSON line. It stays
// small and uses only the standard library: it runs under -I -S.
const checkScript = `
import ast, json, sys
name = sys.argv[1]
src = sys.stdin.buffer.read()
out = {"has_handler": False, "handler_args": 0}
try:
    tree = compile(src, "function.py", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    compile(tree, "function.py", "exec", dont_inherit=True)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            out["has_handler"] = True
            a = node.args
            out["handler_args"] = len(a.posonlyargs) + len(a.args)
except SyntaxError as e:
    out["error"] = {"kind": type(e).__name__, "msg": str(e.msg), "line": e.lineno or 0, "col": e.offset or 0}
except (ValueError, RecursionError, MemoryError) as e:
    out["error"] = {"kind": type(e).__name__, "msg": str(e), "line": 0, "col": 0}
sys.stdout.write(json.dumps(out))
`

type pyReport struct {
	HasHandler  bool     `json:"has_handler"`
	HandlerArgs int      `json:"handler_args"`
	Error       *pyError `json:"error"`
}

type pyError struct {
	Kind string `json:"kind"`
	Msg  string `json:"msg"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
}

func (e *pyError) describe() string {
	msg := oneLine(e.Msg)
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("%s at line %d, column %d: %s", e.Kind, e.Line, e.Col, msg)
	case e.Line > 0:
		return fmt.Sprintf("%s at line %d: %s", e.Kind, e.Line, msg)
	}
	return fmt.Sprintf("%s: %s", e.Kind, msg)
}

func (c Checker) runPython(ctx context.Context, src []byte, handler string) (pyReport, error) {
	python := c.Python
	if python == "" {
		p, err := exec.LookPath("python3")
		if err != nil {
			return pyReport{}, fmt.Errorf("check function source: python3 not found on PATH (needed to validate the code): %w", err)
		}
		python = p
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, python, "-I", "-S", "-c", checkScript, handler)
	cmd.Stdin = bytes.NewReader(src)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return pyReport{}, fmt.Errorf("check function source with %s: gave up after %s: %w", python, timeout, ctx.Err())
		}
		return pyReport{}, fmt.Errorf("check function source with %s: %w: %s", python, err, oneLine(stderr.String()))
	}
	var rep pyReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return pyReport{}, fmt.Errorf("check function source with %s: unreadable report %q: %w", python, oneLine(stdout.String()), err)
	}
	return rep, nil
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || (i > 0 && '0' <= r && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// oneLine collapses whitespace so an error stays on one line and is bounded.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
