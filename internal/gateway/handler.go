package gateway

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// Reporter assembles the status that status() and GET /status render
// (internal/control.Report).
type Reporter interface {
	Status() spillway.Status
}

// Catalog lists the served functions and their effective settings, what
// functions() returns (lb reads them from its pools); nil lists the
// router's functions with their names only.
type Catalog func() []spillway.FunctionInfo

// Handler serves this one gateway as the only function, as lb did before it
// served many: what tests of the request path use.
func (g *Gateway) Handler(rep Reporter) http.Handler {
	r := NewRouter(RouterConfig{DefaultFunction: g.cfg.FunctionName, MaxRequestBytes: g.cfg.MaxRequestBytes,
		AuthToken: g.cfg.AuthToken, Pprof: g.cfg.Pprof}, g.metrics.registry, g.log)
	r.Serve(g.cfg.FunctionName, g)
	r.ready.Store(true)
	r.readyFn = g.Ready
	return r.Handler(rep, nil)
}

// Handler is lb's one port: XML-RPC at / and /RPC2, POST /function/<name>,
// plus /healthz, /metrics and /status as plain HTTP. status() and /status
// render rep's Status; functions() lists cat's.
func (r *Router) Handler(rep Reporter, cat Catalog) http.Handler {
	rpc := xmlrpc.NewServer()
	rpc.MaxBodyBytes = r.cfg.MaxRequestBytes
	rpc.Logger = r.log
	rpc.MapError = PublicFault
	rpc.Register("call_faas",
		"call_faas(param) -> the default function's result (a script's stdout, a handler's return value).",
		r.rpcCallFaas)
	rpc.Register("call",
		"call(name, param) -> the result of function name.",
		r.rpcCall)
	rpc.Register("invoke",
		`invoke(param[, options]) -> {result, function, route, worker, reason, duration_ms, cold_start}. options {"function": name, "route": "local"|"cloud"}: the function (default FAAS_FUNCTION_NAME) and a forced placement.`,
		r.rpcInvoke)
	rpc.Register("functions", "functions() -> [{name, version, style, min, max, concurrency, timeout, workers, ready}]: the served functions.",
		func(ctx context.Context, params []any) (any, error) {
			if len(params) != 0 {
				return nil, fmt.Errorf("functions takes no parameters, got %d: %w", len(params), spillway.ErrInvalidParams)
			}
			return r.functionsRPC(cat), nil
		})
	rpc.Register("status", "status() -> pool members, in-flight calls and counters, and one section per function.",
		func(ctx context.Context, params []any) (any, error) {
			if len(params) != 0 {
				return nil, fmt.Errorf("status takes no parameters, got %d: %w", len(params), spillway.ErrInvalidParams)
			}
			return statusRPC(rep.Status()), nil
		})

	auth := func(h http.Handler) http.Handler { return Authorize(r.cfg.AuthToken, h) }
	mux := http.NewServeMux()
	mux.Handle("/", auth(rpcOnly(rpc)))
	mux.Handle("/RPC2", auth(rpcOnly(rpc)))
	mux.Handle("/function/{name}", auth(http.HandlerFunc(r.serveFunction)))
	mux.HandleFunc("GET /healthz", r.serveHealth)
	mux.Handle("GET /metrics", auth(promhttp.HandlerFor(r.metrics, promhttp.HandlerOpts{})))
	mux.Handle("GET /status", auth(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep.Status())
	})))
	if r.cfg.Pprof {
		mux.Handle("GET /debug/pprof/", auth(http.HandlerFunc(pprof.Index)))
		mux.Handle("GET /debug/pprof/profile", auth(http.HandlerFunc(pprof.Profile)))
	}
	return mux
}

// PublicFault is the fault a caller gets for err. The function's own errors
// and the caller's mistakes are told as they are; the gateway's failures get
// a fixed text and the call id, because their details name workers,
// addresses and invoke URLs that stay in lb's log (under the same call id).
func PublicFault(err error) xmlrpc.Fault {
	code := spillway.FaultCode(err)
	var ce *CallError
	if !errors.As(err, &ce) {
		return xmlrpc.Fault{Code: code, String: spillway.FaultString(err)}
	}
	var text string
	switch code {
	case spillway.FaultTimeout:
		text = "call timed out: it passed LOCAL_TIMEOUT and nothing could take it over"
	case spillway.FaultCloudUnavailable:
		text = "cloud unavailable: the call needed the cloud, which is off, failing, not yet deployed or running an older version"
	case spillway.FaultPayloadTooLarge:
		text = "payload too large: the parameter or the result is over its limit (LB_MAX_REQUEST_BYTES, MAX_RESULT_BYTES)"
	case spillway.FaultBudgetExhausted:
		text = "cloud budget exhausted: the call needed the cloud past CLOUD_MAX_RPS or CLOUD_MAX_COST_PER_HOUR"
	case spillway.FaultRunnerCrashed:
		text = "the function crashed its runner (it was replaced)"
	case spillway.FaultWorkerFailed:
		text = "worker failed: no worker could run the call"
	case spillway.FaultUnavailable:
		text = "lb cannot take the call now: it is starting or stopping, or MAX_QUEUED calls already wait"
	case spillway.FaultInternal:
		text = "internal error"
	default:
		// Function errors and the caller's own mistakes carry no addresses.
		return xmlrpc.Fault{Code: code, String: spillway.FaultString(ce.Err)}
	}
	return xmlrpc.Fault{Code: code, String: text + " (call id " + ce.ID + ")"}
}

// rpcOnly keeps the XML-RPC endpoint from answering other paths under "/".
func rpcOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/RPC2" {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (r *Router) serveHealth(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	ready := r.Ready()
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready})
}

// Authorize wraps next with the LB_AUTH_TOKEN check that every lb endpoint
// but /healthz shares: HTTP basic (any user, the token as password — what
// `http://user:TOKEN@host/` gives Python's xmlrpc.client) or a bearer token.
// XML-RPC callers get a fault, as their clients expect; plain HTTP callers,
// POST /function/<name> included, get 401. An empty token lets every
// request through.
func Authorize(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var got string
		if _, pass, ok := r.BasicAuth(); ok {
			got = pass
		} else if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = strings.TrimSpace(token)
		}
		if subtle.ConstantTimeCompare([]byte(got), want) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodPost && !strings.HasPrefix(r.URL.Path, "/function/") {
			w.Header().Set("Content-Type", "text/xml")
			_, _ = w.Write(xmlrpc.AppendFault(nil, xmlrpc.Fault{Code: spillway.FaultUnauthorized, String: "unauthorized: send LB_AUTH_TOKEN as a bearer token or basic-auth password"}))
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="spillway"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})
}

// statusRPC renders the status as an XML-RPC struct: the JSON field names,
// with JSON numbers as ints or doubles.
func statusRPC(s spillway.Status) map[string]any {
	b, err := json.Marshal(s)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return map[string]any{"error": err.Error()}
	}
	return out
}

func (r *Router) rpcCallFaas(ctx context.Context, params []any) (any, error) {
	if len(params) != 1 {
		return nil, fmt.Errorf("call_faas takes one parameter, got %d: %w", len(params), spillway.ErrInvalidParams)
	}
	inv, err := r.Invoke(ctx, "", params[0], InvokeOptions{})
	if err != nil {
		return nil, err
	}
	return inv.Result, nil
}

func (r *Router) rpcCall(ctx context.Context, params []any) (any, error) {
	if len(params) != 2 {
		return nil, fmt.Errorf("call takes a function name and a parameter, got %d parameters: %w", len(params), spillway.ErrInvalidParams)
	}
	name, ok := params[0].(string)
	if !ok || name == "" {
		return nil, fmt.Errorf("call's first parameter is the function name, got %T: %w", params[0], spillway.ErrInvalidParams)
	}
	inv, err := r.Invoke(ctx, name, params[1], InvokeOptions{})
	if err != nil {
		return nil, err
	}
	return inv.Result, nil
}

func (r *Router) rpcInvoke(ctx context.Context, params []any) (any, error) {
	if len(params) < 1 || len(params) > 2 {
		return nil, fmt.Errorf("invoke takes a parameter and an optional options struct, got %d parameters: %w", len(params), spillway.ErrInvalidParams)
	}
	var opts InvokeOptions
	if len(params) == 2 && params[1] != nil {
		o, ok := params[1].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("invoke options must be a struct, got %T: %w", params[1], spillway.ErrInvalidParams)
		}
		var err error
		if opts, err = parseInvokeOptions(o); err != nil {
			return nil, err
		}
	}
	name := opts.Function
	if name == "" {
		name = r.cfg.DefaultFunction
	}
	inv, err := r.Invoke(ctx, name, params[0], opts)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"result":      inv.Result,
		"function":    name,
		"route":       string(inv.Route),
		"worker":      inv.Worker,
		"reason":      string(inv.Reason),
		"duration_ms": float64(inv.Duration.Microseconds()) / 1000,
		"cold_start":  inv.ColdStart,
	}, nil
}

// functionsRPC renders functions() as XML-RPC structs with the JSON names.
func (r *Router) functionsRPC(cat Catalog) []any {
	var infos []spillway.FunctionInfo
	if cat != nil {
		infos = cat()
	} else {
		for _, n := range r.Names() {
			infos = append(infos, spillway.FunctionInfo{Name: n})
		}
	}
	out := make([]any, 0, len(infos))
	for _, fi := range infos {
		out = append(out, map[string]any{
			"name": fi.Name, "version": fi.Version, "style": fi.Style,
			"min": fi.Min, "max": fi.Max, "concurrency": fi.Concurrency,
			"timeout": fi.TimeoutSeconds, "workers": fi.Workers, "ready": fi.Ready,
		})
	}
	return out
}

// InvokeOptions are the optional second argument of invoke.
type InvokeOptions struct {
	Route    spillway.Route // "" lets the policy decide
	Function string         // the function to call; "" is FAAS_FUNCTION_NAME
}

func parseInvokeOptions(o map[string]any) (InvokeOptions, error) {
	var opts InvokeOptions
	for k, v := range o {
		switch k {
		case "route":
			s, _ := v.(string)
			switch spillway.Route(s) {
			case spillway.RouteLocal, spillway.RouteCloud:
				opts.Route = spillway.Route(s)
			case "", "auto":
			default:
				return opts, fmt.Errorf(`invoke option route=%v: want "local", "cloud" or "auto": %w`, v, spillway.ErrInvalidParams)
			}
		case "function":
			name, ok := v.(string)
			if !ok {
				return opts, fmt.Errorf("invoke option function=%v: want a function name: %w", v, spillway.ErrInvalidParams)
			}
			opts.Function = name
		default:
			return opts, fmt.Errorf("unknown invoke option %q (known: function, route): %w", k, spillway.ErrInvalidParams)
		}
	}
	return opts, nil
}
