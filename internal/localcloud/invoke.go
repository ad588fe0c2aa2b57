package localcloud

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxTailBytes is how much of an invocation's log LogType=Tail returns.
const maxTailBytes = 4096

// invokeRequest is one synchronous invocation.
type invokeRequest struct {
	function      string // name, ARN or name:qualifier
	payload       []byte
	clientContext string // decoded JSON, may be empty
	tail          bool
}

// invokeResult is what Invoke answers.
type invokeResult struct {
	requestID string
	payload   []byte
	funcErr   string // X-Amz-Function-Error
	logs      []byte // with tail only
	coldStart bool
	timedOut  bool
}

// invoke runs one invocation: it takes a warm environment of the function or
// starts one within the concurrency limits, hands it the payload and waits
// for the result, the function's timeout or ctx.
func (s *Server) invoke(ctx context.Context, req invokeRequest) (invokeResult, error) {
	start := time.Now()
	e, f, cold, err := s.acquire(ctx, req.function)
	if err != nil {
		return invokeResult{}, err
	}
	inv := &invocation{
		id:            newRequestID(),
		payload:       req.payload,
		clientContext: req.clientContext,
		done:          make(chan invResult, 1),
	}
	handedAt := time.Now()
	res, ok := e.run(ctx, inv, s.cfg.InitTimeout)
	dur := time.Since(handedAt)
	if ctx.Err() != nil && res.payload == nil {
		s.release(f, e, false, res)
		return invokeResult{}, fmt.Errorf("invoke %s: %w", e.snap.name, ctx.Err())
	}
	out := invokeResult{requestID: inv.id, payload: res.payload, funcErr: res.funcErr, coldStart: cold, timedOut: res.timedOut}
	if req.tail {
		wait := 250 * time.Millisecond
		if !ok {
			wait = 20 * time.Millisecond
		}
		out.logs = s.tailLog(e, inv.id, e.logs.take(inv.id, wait), dur, cold, handedAt.Sub(start))
	}
	s.release(f, e, ok, res)
	return out, nil
}

// acquire reserves a concurrency slot and an environment for the function.
func (s *Server) acquire(ctx context.Context, label string) (*environment, *function, bool, error) {
	var toStop []*environment
	s.mu.Lock()
	if s.lm.closed {
		s.mu.Unlock()
		return nil, nil, false, errorf(http.StatusServiceUnavailable, "ServiceException", "localcloud is shutting down")
	}
	f, err := s.lookupLocked(label)
	if err != nil {
		s.mu.Unlock()
		return nil, nil, false, err
	}
	if f.creating && s.cfg.Now().Before(f.settleAt) {
		s.mu.Unlock()
		return nil, nil, false, errLambdaConflict("The operation cannot be performed at this time. The function is currently in the following state: Pending")
	}
	if f.reserved != nil && f.inflight >= *f.reserved {
		f.counters.throttles++
		s.mu.Unlock()
		return nil, nil, false, errLambdaThrottled("ReservedFunctionConcurrentInvocationLimitExceeded")
	}
	if s.lm.inflight >= s.cfg.Concurrency {
		f.counters.throttles++
		s.mu.Unlock()
		return nil, nil, false, errLambdaThrottled("ConcurrentInvocationLimitExceeded")
	}
	f.inflight++
	s.lm.inflight++
	f.counters.invocations++
	var e *environment
	for len(f.idle) > 0 {
		cand := f.idle[len(f.idle)-1]
		f.idle = f.idle[:len(f.idle)-1]
		if cand.hasExited() {
			cand.dead = true
			toStop = append(toStop, cand)
			continue
		}
		e = cand
		break
	}
	snap := envSnapshot{
		name:     f.name,
		arn:      f.arn,
		handler:  f.handler,
		runtime:  f.runtime,
		timeout:  time.Duration(f.timeout) * time.Second,
		memoryMB: f.memoryMB,
		vars:     f.vars,
		gen:      f.gen,
		code:     f.code,
	}
	cold := e == nil
	if cold {
		if s.lm.envCount >= s.cfg.Concurrency {
			if victim := s.lruIdleLocked(); victim != nil {
				toStop = append(toStop, victim)
			}
		}
		s.lm.envCount++
		snap.code.refs++
		s.starts.Add(1) // under mu with the closed check: Close waits for it
	} else {
		e.busy = true
	}
	s.mu.Unlock()
	for _, v := range toStop {
		s.stopEnv(v)
	}
	if !cold {
		return e, f, false, nil
	}
	defer s.starts.Done()
	e, err = s.startEnvironment(ctx, snap)
	s.mu.Lock()
	if err != nil {
		s.lm.envCount--
		snap.code.refs--
		f.inflight--
		s.lm.inflight--
		remove := snap.code.retired && snap.code.refs == 0
		s.mu.Unlock()
		if remove {
			snap.code.remove()
		}
		return nil, nil, false, err
	}
	e.fn = f
	e.busy = true
	f.envs[e] = struct{}{}
	f.counters.coldStarts++
	closed := s.lm.closed
	if closed {
		e.dead = true
		f.inflight--
		s.lm.inflight--
	}
	s.mu.Unlock()
	if closed {
		// Close ran while this environment started and could not see it.
		s.stopEnv(e)
		return nil, nil, false, errorf(http.StatusServiceUnavailable, "ServiceException", "localcloud is shutting down")
	}
	return e, f, true, nil
}

// lruIdleLocked takes the least recently used idle environment of any
// function out of service, to make room under the environment cap.
func (s *Server) lruIdleLocked() *environment {
	var best *environment
	var bestFn *function
	for _, f := range s.lm.functions {
		if len(f.idle) > 0 && (best == nil || f.idle[0].lastUsed.Before(best.lastUsed)) {
			best, bestFn = f.idle[0], f
		}
	}
	if best == nil {
		return nil
	}
	bestFn.idle = bestFn.idle[1:]
	best.dead = true
	return best
}

// release returns the environment to the warm pool, or stops it when it
// failed, belongs to an older version of the function or the server closes.
func (s *Server) release(f *function, e *environment, ok bool, res invResult) {
	s.mu.Lock()
	f.inflight--
	s.lm.inflight--
	if res.timedOut {
		f.counters.timeouts++
	}
	if res.funcErr != "" {
		f.counters.errors++
	}
	e.busy = false
	e.warmed = true
	reuse := ok && !s.lm.closed && !f.deleted && e.snap.gen == f.gen && !e.dead
	if reuse {
		e.lastUsed = s.cfg.Now()
		f.idle = append(f.idle, e)
	} else {
		e.dead = true
	}
	s.mu.Unlock()
	if !reuse {
		s.stopEnv(e)
	}
}

// stopEnv stops an environment taken out of service and settles the books
// once: the environment count, the function's set and the code reference.
func (s *Server) stopEnv(e *environment) {
	e.stop()
	s.mu.Lock()
	if e.released {
		s.mu.Unlock()
		return
	}
	e.released = true
	s.lm.envCount--
	if e.fn != nil {
		delete(e.fn.envs, e)
	}
	code := e.snap.code
	code.refs--
	remove := code.retired && code.refs == 0
	s.mu.Unlock()
	if remove {
		code.remove()
	}
}

// tailLog formats an invocation's log the way Lambda's LogType=Tail does and
// keeps the last 4 KB.
func (s *Server) tailLog(e *environment, id string, body []byte, dur time.Duration, cold bool, initDur time.Duration) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "START RequestId: %s Version: $LATEST\n", id)
	b.Write(body)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		b.WriteByte('\n')
	}
	ms := float64(dur.Microseconds()) / 1000
	fmt.Fprintf(&b, "END RequestId: %s\nREPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\tMemory Size: %d MB\tMax Memory Used: %d MB",
		id, id, ms, int(math.Ceil(ms)), e.snap.memoryMB, maxMemoryMB(e))
	if cold {
		fmt.Fprintf(&b, "\tInit Duration: %.2f ms", float64(initDur.Microseconds())/1000)
	}
	b.WriteString("\t\n")
	out := b.Bytes()
	if len(out) > maxTailBytes {
		out = out[len(out)-maxTailBytes:]
	}
	return out
}

// maxMemoryMB reads the environment process's peak resident set (VmHWM).
func maxMemoryMB(e *environment) int {
	if e.cmd == nil || e.cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(e.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return (kb + 1023) / 1024
		}
	}
	return 0
}

// invokeHandler is Lambda's Invoke: POST /2015-03-31/functions/{name}/invocations.
func (s *Server) invokeHandler(w http.ResponseWriter, r *http.Request) {
	label := r.PathValue("name")
	if q := r.URL.Query().Get("Qualifier"); q != "" {
		name, _ := resolveFunctionName(label)
		label = name + ":" + q
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		writeError(w, errLambdaInvalid("read request payload: %v", err))
		return
	}
	if len(payload) > maxPayload {
		writeError(w, errorf(http.StatusRequestEntityTooLarge, "RequestTooLargeException",
			"Request must be smaller than %d bytes for the InvokeFunction operation", maxPayload))
		return
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = []byte("{}")
	}
	if !json.Valid(payload) {
		writeError(w, errorf(http.StatusBadRequest, "InvalidRequestContentException",
			"Could not parse request body into json: Unexpected character in the payload"))
		return
	}
	var clientContext string
	if cc := r.Header.Get("X-Amz-Client-Context"); cc != "" {
		if b, err := base64.StdEncoding.DecodeString(cc); err == nil {
			clientContext = string(b)
		}
	}
	req := invokeRequest{function: label, payload: payload, clientContext: clientContext,
		tail: r.Header.Get("X-Amz-Log-Type") == "Tail"}

	switch typ := r.Header.Get("X-Amz-Invocation-Type"); typ {
	case "", "RequestResponse":
	case "DryRun":
		s.mu.Lock()
		_, err := s.lookupLocked(label)
		s.mu.Unlock()
		if err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	case "Event":
		s.mu.Lock()
		_, err := s.lookupLocked(label)
		s.mu.Unlock()
		if err != nil {
			writeError(w, err)
			return
		}
		req.tail = false
		s.mu.Lock()
		closed := s.lm.closed
		if !closed {
			s.wg.Add(1) // under mu, so Close (which sets closed under mu) waits for it
		}
		s.mu.Unlock()
		if closed {
			writeError(w, errorf(http.StatusServiceUnavailable, "ServiceException", "localcloud is shutting down"))
			return
		}
		go func() {
			defer s.wg.Done()
			if _, err := s.invoke(s.bg, req); err != nil {
				s.log.Warn("localcloud: asynchronous invocation failed", "function", label, "err", err)
			}
		}()
		w.Header().Set("X-Amzn-RequestId", newRequestID())
		w.WriteHeader(http.StatusAccepted)
		return
	default:
		writeError(w, errLambdaInvalid("Value '%s' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]", typ))
		return
	}

	res, err := s.invoke(r.Context(), req)
	if err != nil {
		if r.Context().Err() != nil {
			return // the caller is gone
		}
		writeError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-RequestId", res.requestID)
	h.Set("X-Amz-Executed-Version", "$LATEST")
	if res.funcErr != "" {
		h.Set("X-Amz-Function-Error", res.funcErr)
	}
	if req.tail {
		h.Set("X-Amz-Log-Result", base64.StdEncoding.EncodeToString(res.logs))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.payload)
}
