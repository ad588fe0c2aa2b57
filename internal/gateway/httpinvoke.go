package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"

	"github.com/spillway-faas/spillway"
)

// serveFunction is POST /function/<name>: the body is the parameter (raw
// text, or a JSON value with Content-Type: application/json); the answer is
// the result (a string as text/plain, any other value as JSON) with where
// and how the call ran in X-Spillway-* headers. A failure is a JSON object
// {"type", "message", "fault"} with the status code of its kind.
func (r *Router) serveFunction(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeHTTPError(w, http.StatusMethodNotAllowed, "MethodNotAllowed",
			fmt.Sprintf("%s /function/NAME: call a function with POST", req.Method), 0)
		return
	}
	name := req.PathValue("name")
	param, err := r.readParam(w, req)
	if err != nil {
		r.writeCallError(w, err)
		return
	}
	inv, err := r.Invoke(req.Context(), name, param, InvokeOptions{})
	h := w.Header()
	if inv.Route != "" {
		h.Set("X-Spillway-Route", string(inv.Route))
		h.Set("X-Spillway-Reason", string(inv.Reason))
		h.Set("X-Spillway-Worker", inv.Worker)
		h.Set("X-Spillway-Duration-Ms", strconv.FormatFloat(float64(inv.Duration.Microseconds())/1000, 'f', 3, 64))
	}
	if err != nil {
		r.writeCallError(w, err)
		return
	}
	if s, ok := inv.Result.(string); ok {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, s)
		return
	}
	body, err := json.Marshal(jsonValue(inv.Result))
	if err != nil {
		r.writeCallError(w, fmt.Errorf("encode the result as JSON: %w", err))
		return
	}
	h.Set("Content-Type", "application/json")
	_, _ = w.Write(append(body, '\n'))
}

// readParam reads the body within LB_MAX_REQUEST_BYTES: text as it is, or
// one JSON value when the caller says it is JSON.
func (r *Router) readParam(w http.ResponseWriter, req *http.Request) (any, error) {
	limit := r.cfg.MaxRequestBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("request body over %d bytes (LB_MAX_REQUEST_BYTES): %w", limit, spillway.ErrPayloadTooLarge)
		}
		return nil, fmt.Errorf("read the request body: %w: %w", err, spillway.ErrInvalidParams)
	}
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt != "application/json" {
		return string(body), nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("the body is not a JSON value (Content-Type: application/json): %v: %w", err, spillway.ErrInvalidParams)
	}
	if dec.More() {
		return nil, fmt.Errorf("the body holds more than one JSON value: %w", spillway.ErrInvalidParams)
	}
	return fromJSON(v), nil
}

// fromJSON turns decoded JSON into the values XML-RPC carries: integral
// numbers that fit in 32 bits become int (XML-RPC's int), others float64.
func fromJSON(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil && i >= math.MinInt32 && i <= math.MaxInt32 {
			return int(i)
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = fromJSON(v[i])
		}
		return v
	case map[string]any:
		for k := range v {
			v[k] = fromJSON(v[k])
		}
		return v
	}
	return v
}

// jsonValue makes an XML-RPC value encodable as JSON ([]byte, base64 in
// XML-RPC, becomes a string).
func jsonValue(v any) any {
	switch v := v.(type) {
	case []byte:
		return string(v)
	case []any:
		out := make([]any, len(v))
		for i := range v {
			out[i] = jsonValue(v[i])
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = jsonValue(e)
		}
		return out
	}
	return v
}

// HTTPStatus is the status code of a failed call's kind.
func HTTPStatus(code int) int {
	switch code {
	case spillway.FaultNoSuchFunction:
		return http.StatusNotFound
	case spillway.FaultInvalidParams, spillway.FaultParse, spillway.FaultInvalidRequest:
		return http.StatusBadRequest
	case spillway.FaultUnauthorized:
		return http.StatusUnauthorized
	case spillway.FaultPayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case spillway.FaultBudgetExhausted:
		return http.StatusTooManyRequests
	case spillway.FaultApplication, spillway.FaultRunnerCrashed, spillway.FaultWorkerFailed:
		return http.StatusBadGateway
	case spillway.FaultUnavailable, spillway.FaultCloudUnavailable, spillway.FaultFunctionNotFound:
		return http.StatusServiceUnavailable
	case spillway.FaultTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// writeCallError answers a failed call with the same fault text XML-RPC
// callers get, as JSON; a function's exception keeps its Python type.
func (r *Router) writeCallError(w http.ResponseWriter, err error) {
	f := PublicFault(err)
	typ := faultType(f.Code)
	var fe *spillway.FunctionError
	if errors.As(err, &fe) {
		typ = fe.Type
		f.String = fe.Message
	}
	status := HTTPStatus(f.Code)
	if errors.Is(err, ErrQueueFull) {
		// MAX_QUEUED calls already wait: the caller should slow down.
		status, typ = http.StatusTooManyRequests, "Throttled"
	}
	writeHTTPError(w, status, typ, f.String, f.Code)
}

func writeHTTPError(w http.ResponseWriter, status int, typ, message string, fault int) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	body := map[string]any{"type": typ, "message": message}
	if fault != 0 {
		body["fault"] = fault
	}
	_ = json.NewEncoder(w).Encode(body)
}

// faultType names a fault for HTTP callers.
func faultType(code int) string {
	switch code {
	case spillway.FaultNoSuchFunction:
		return "NoSuchFunction"
	case spillway.FaultInvalidParams, spillway.FaultParse, spillway.FaultInvalidRequest:
		return "BadRequest"
	case spillway.FaultUnauthorized:
		return "Unauthorized"
	case spillway.FaultPayloadTooLarge:
		return "PayloadTooLarge"
	case spillway.FaultBudgetExhausted:
		return "CloudBudgetExhausted"
	case spillway.FaultRunnerCrashed:
		return "RunnerCrashed"
	case spillway.FaultWorkerFailed:
		return "WorkerFailed"
	case spillway.FaultUnavailable:
		return "Unavailable"
	case spillway.FaultCloudUnavailable:
		return "CloudUnavailable"
	case spillway.FaultFunctionNotFound:
		return "FunctionNotPublished"
	case spillway.FaultTimeout:
		return "Timeout"
	}
	return "InternalError"
}
