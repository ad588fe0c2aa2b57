package xmlrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/spillway-faas/spillway"
)

// DefaultMaxBodyBytes is the request body limit when Server.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 1 << 20

// Handler runs one method. params are decoded values (see the package doc);
// wrap them in Params for checked access. The result must be encodable. An
// error that is or wraps *Fault is sent as that fault; any other goes through
// Server.MapError.
type Handler func(ctx context.Context, params []any) (any, error)

// Server serves XML-RPC calls over HTTP POST. Register methods before the
// first call or concurrently with calls; both are safe.
type Server struct {
	// MaxBodyBytes limits a request body; 0 means DefaultMaxBodyBytes. A
	// larger body gets fault spillway.FaultPayloadTooLarge.
	MaxBodyBytes int64
	// MapError maps a handler error that is not a *Fault; nil means
	// DefaultMapError (spillway.FaultCode / spillway.FaultString).
	MapError func(error) Fault
	// Logger gets handler panics and internal faults; nil means slog.Default().
	Logger *slog.Logger

	// methods holds an immutable map replaced on each Register, so calls
	// read it without a lock.
	methods atomic.Pointer[map[string]method]
	// regMu serialises Register's copy-on-write.
	regMu sync.Mutex
}

type method struct {
	help string
	h    Handler
}

// NewServer returns a server with only the system.* methods.
func NewServer() *Server {
	s := &Server{}
	m := map[string]method{}
	s.methods.Store(&m)
	return s
}

// Register adds or replaces a method.
func (s *Server) Register(name, help string, h Handler) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	next := map[string]method{}
	if cur := s.methods.Load(); cur != nil {
		for k, v := range *cur {
			next[k] = v
		}
	}
	next[name] = method{help: help, h: h}
	s.methods.Store(&next)
}

func (s *Server) lookup(name string) (method, bool) {
	cur := s.methods.Load()
	if cur == nil {
		return method{}, false
	}
	m, ok := (*cur)[name]
	return m, ok
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // let outsized buffers go
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// ServeHTTP answers POST with a methodResponse; any other method gets 405.
// Faults are sent with HTTP 200.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "XML-RPC takes POST", http.StatusMethodNotAllowed)
		return
	}
	in := getBuf()
	defer putBuf(in)
	out := getBuf()
	defer putBuf(out)

	body, err := s.readBody(r, *in)
	*in = body[:0]
	var result any
	if err == nil {
		result, err = s.dispatch(r.Context(), body)
	}
	if err == nil {
		var encErr error
		*out, encErr = AppendResponse((*out)[:0], result)
		if encErr != nil {
			s.logger().Error("xmlrpc encode result", "err", encErr)
			err = NewFault(spillway.FaultInternal, "%v", encErr)
		}
	}
	if err != nil {
		*out = AppendFault((*out)[:0], s.toFault(err))
	}
	h := w.Header()
	h.Set("Content-Type", "text/xml")
	h.Set("Content-Length", strconv.Itoa(len(*out)))
	_, _ = w.Write(*out) // a client gone away is not ours to report
}

// preallocMax bounds the buffer sized from a request's Content-Length.
const preallocMax = 64 << 10

// readBody reads the whole body into buf, up to the limit, growing it as
// bytes arrive.
func (s *Server) readBody(r *http.Request, buf []byte) ([]byte, error) {
	limit := s.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	tooLarge := NewFault(spillway.FaultPayloadTooLarge, "request body over %d bytes", limit)
	if r.ContentLength > limit {
		return buf, tooLarge
	}
	// The declared length only sizes a first buffer, never beyond
	// preallocMax: a client that declares a large body and sends a small one
	// (or none) costs what it sends, not what it declares.
	if r.ContentLength > 0 && int64(cap(buf)) < r.ContentLength+1 {
		buf = make([]byte, 0, min(r.ContentLength+1, preallocMax))
	}
	lr := io.LimitReader(r.Body, limit+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, tooLarge
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, NewFault(spillway.FaultParse, "read request body: %v", err)
		}
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// toFault turns any error into the fault sent for it.
func (s *Server) toFault(err error) Fault {
	var f *Fault
	if errors.As(err, &f) {
		return *f
	}
	if s.MapError != nil {
		return s.MapError(err)
	}
	return DefaultMapError(err)
}

func (s *Server) dispatch(ctx context.Context, body []byte) (any, error) {
	name, params, err := DecodeCall(body)
	if err != nil {
		return nil, err
	}
	return s.call(ctx, name, params, false)
}

// call runs one method; inMulticall forbids nesting system.multicall.
func (s *Server) call(ctx context.Context, name string, params []any, inMulticall bool) (result any, err error) {
	switch name {
	case "system.listMethods":
		return s.listMethods(), nil
	case "system.methodHelp":
		return s.methodHelp(params)
	case "system.methodSignature":
		return "signatures not supported", nil
	case "system.multicall":
		if inMulticall {
			return nil, NewFault(spillway.FaultInvalidRequest, "system.multicall cannot be nested")
		}
		return s.multicall(ctx, params)
	}
	m, ok := s.lookup(name)
	if !ok {
		return nil, NewFault(spillway.FaultMethodNotFound, "method %q not found", name)
	}
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("xmlrpc handler panic", "method", name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, err = nil, NewFault(spillway.FaultInternal, "internal error in %s", name)
		}
	}()
	return m.h(ctx, params)
}

var systemMethods = []string{"system.listMethods", "system.methodHelp", "system.methodSignature", "system.multicall"}

func (s *Server) listMethods() []string {
	var names []string
	if cur := s.methods.Load(); cur != nil {
		for k := range *cur {
			names = append(names, k)
		}
	}
	names = append(names, systemMethods...)
	sort.Strings(names)
	return names
}

var systemHelp = map[string]string{
	"system.listMethods":     "system.listMethods() => [names]: the methods this server offers.",
	"system.methodHelp":      "system.methodHelp(name) => string: help text of a method.",
	"system.methodSignature": "system.methodSignature(name): not supported.",
	"system.multicall":       "system.multicall([{methodName, params}, ...]) => [[result] or {faultCode, faultString}, ...]: several calls in one request, run in order.",
}

func (s *Server) methodHelp(params []any) (any, error) {
	p := Params(params)
	if err := p.Count(1, 1); err != nil {
		return nil, err
	}
	name, err := p.String(0)
	if err != nil {
		return nil, err
	}
	if h, ok := systemHelp[name]; ok {
		return h, nil
	}
	m, ok := s.lookup(name)
	if !ok {
		return nil, NewFault(spillway.FaultMethodNotFound, "method %q not found", name)
	}
	return m.help, nil
}

// multicall runs the calls in order. Each result is a one-element array, each
// failure a {faultCode, faultString} struct, as the multicall convention says.
func (s *Server) multicall(ctx context.Context, params []any) (any, error) {
	p := Params(params)
	if err := p.Count(1, 1); err != nil {
		return nil, err
	}
	calls, err := p.Array(0)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(calls))
	for i, c := range calls {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("system.multicall call %d: %w", i+1, err)
		}
		res, err := s.multicallOne(ctx, c)
		if err != nil {
			f := s.toFault(err)
			out = append(out, &f)
			continue
		}
		out = append(out, []any{res})
	}
	return out, nil
}

func (s *Server) multicallOne(ctx context.Context, c any) (any, error) {
	m, ok := c.(map[string]any)
	if !ok {
		return nil, NewFault(spillway.FaultInvalidParams, "multicall entry is %s, want struct", TypeName(c))
	}
	name, ok := m["methodName"].(string)
	if !ok {
		return nil, NewFault(spillway.FaultInvalidParams, "multicall entry without a methodName string")
	}
	var params []any
	switch ps := m["params"].(type) {
	case nil:
	case []any:
		params = ps
	default:
		return nil, NewFault(spillway.FaultInvalidParams, "multicall params are %s, want array", TypeName(ps))
	}
	return s.call(ctx, name, params, true)
}
