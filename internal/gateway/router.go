package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-faas/spillway"
)

// RouterConfig is what lb's port needs of lb's configuration.
type RouterConfig struct {
	// DefaultFunction (FAAS_FUNCTION_NAME) is call_faas's function, and
	// invoke's without a "function" option.
	DefaultFunction string
	MaxRequestBytes int64  // LB_MAX_REQUEST_BYTES
	AuthToken       string // LB_AUTH_TOKEN: required of every caller but /healthz when set
	Pprof           bool   // LB_PPROF: serve /debug/pprof/
}

// Router is lb's one port for many functions: it sends each call to the
// gateway of the function it names. The fleet tells it which functions
// are starting, served, or gone.
type Router struct {
	cfg     RouterConfig
	metrics prometheus.Gatherer
	log     *slog.Logger
	ready   atomic.Bool
	closing atomic.Bool
	readyFn func() bool // an extra readiness check (Gateway.Handler's gateway); nil for none

	mu    sync.RWMutex // guards funcs
	funcs map[string]*Gateway
}

// NewRouter builds a router; metrics is what GET /metrics serves.
func NewRouter(cfg RouterConfig, metrics prometheus.Gatherer, log *slog.Logger) *Router {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{cfg: cfg, metrics: metrics, log: log, funcs: map[string]*Gateway{}}
}

// Starting announces a function whose workers are starting: its calls get
// "starting" (fault -32008, HTTP 503) until Serve.
func (r *Router) Starting(name string) {
	r.mu.Lock()
	if _, ok := r.funcs[name]; !ok {
		r.funcs[name] = nil
	}
	r.mu.Unlock()
}

// Serve routes name's calls to g from now on.
func (r *Router) Serve(name string, g *Gateway) {
	r.mu.Lock()
	r.funcs[name] = g
	r.mu.Unlock()
}

// Remove stops routing name: its calls get "no such function". Calls
// already on its gateway finish there.
func (r *Router) Remove(name string) {
	r.mu.Lock()
	delete(r.funcs, name)
	r.mu.Unlock()
}

// Names are the functions known now, sorted.
func (r *Router) Names() []string {
	r.mu.RLock()
	names := make([]string, 0, len(r.funcs))
	for n := range r.funcs {
		names = append(names, n)
	}
	r.mu.RUnlock()
	sort.Strings(names)
	return names
}

// Gateways are the served functions' gateways, by name.
func (r *Router) Gateways() map[string]*Gateway {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string]*Gateway, len(r.funcs))
	for n, g := range r.funcs {
		if g != nil {
			out[n] = g
		}
	}
	return out
}

// SetReadyCheck adds a condition to readiness (lb's: every function
// published when it started has served or failed once).
func (r *Router) SetReadyCheck(check func() bool) { r.readyFn = check }

// SetReady marks lb ready (or not) for /healthz.
func (r *Router) SetReady(ok bool) { r.ready.Store(ok) }

// Ready reports whether lb serves calls: it is set ready, not closing, and
// the default function, when it is known, is served (as a one-function lb
// was ready once its pool was).
func (r *Router) Ready() bool {
	if !r.ready.Load() || r.closing.Load() {
		return false
	}
	if r.readyFn != nil && !r.readyFn() {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	g, known := r.funcs[r.cfg.DefaultFunction]
	return !known || g != nil
}

// Close refuses new calls from now on (lb is leaving).
func (r *Router) Close() { r.closing.Store(true) }

// gateway finds the gateway of name ("" is the default function).
func (r *Router) gateway(name string) (*Gateway, error) {
	if r.closing.Load() {
		return nil, fmt.Errorf("lb is shutting down: %w", spillway.ErrUnavailable)
	}
	if name == "" {
		name = r.cfg.DefaultFunction
	}
	r.mu.RLock()
	g, known := r.funcs[name]
	r.mu.RUnlock()
	switch {
	case !known:
		return nil, fmt.Errorf("%w: %s", spillway.ErrNoSuchFunction, name)
	case g == nil:
		return nil, fmt.Errorf("function %s is starting: its workers are not ready yet: %w", name, spillway.ErrUnavailable)
	}
	return g, nil
}

// Invoke runs one call of the named function ("" is the default).
func (r *Router) Invoke(ctx context.Context, function string, param any, opts InvokeOptions) (spillway.Invocation, error) {
	g, err := r.gateway(function)
	if err != nil {
		return spillway.Invocation{}, err
	}
	return g.Invoke(ctx, param, opts)
}
