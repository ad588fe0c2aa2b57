package localcloud

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxPayload is Lambda's synchronous request and response payload limit.
const maxPayload = 6 << 20

// logMarker is the line prefix bootstrap.py writes after each invocation.
const logMarker = "\x1eLOCALCLOUD_END "

// envSnapshot is the configuration an environment was started with; an
// update to the function retires environments rather than changing them.
type envSnapshot struct {
	name     string
	arn      string
	handler  string
	runtime  string
	timeout  time.Duration
	memoryMB int
	vars     map[string]string
	gen      int
	code     *codeVersion
}

// invocation is one request handed to an environment.
type invocation struct {
	id            string
	payload       []byte
	clientContext string
	done          chan invResult // buffered 1; the first result wins
	once          sync.Once
}

func (inv *invocation) finish(r invResult) {
	inv.once.Do(func() { inv.done <- r })
}

// invResult is what an invocation produced: the payload and, for errors the
// runtime reported, Lambda's X-Amz-Function-Error value.
type invResult struct {
	payload  []byte
	funcErr  string // "" or "Unhandled"
	timedOut bool
}

// environment is one execution environment: a bootstrap in a container
// whose stdio carries the Runtime API, or (unsafe-process) a bootstrap
// process and the loopback Runtime API endpoint it polls.
type environment struct {
	id   string
	snap envSnapshot
	log  *slog.Logger

	cmd    *exec.Cmd // unsafe-process mode
	box    *boxed    // container mode
	ln     net.Listener
	srv    *http.Server
	tmpDir string
	logs   *logSink

	invCh    chan *invocation // the /next handler receives from it
	stopping chan struct{}    // closed by stop
	exited   chan struct{}    // closed when the process or container has exited
	served   chan struct{}    // closed when the Runtime API server has returned
	stopOnce sync.Once
	exitErr  error // set before exited is closed

	mu      sync.Mutex  // guards current and initErr
	current *invocation // the invocation in flight, if any
	initErr []byte      // body of /runtime/init/error

	startedAt time.Time
	// Fields below are guarded by Server.mu.
	busy     bool
	lastUsed time.Time
	fn       *function
	dead     bool // taken out of service; stop pending or done
	warmed   bool // has served an invocation
	released bool // stopEnv has settled the books
}

// startEnvironment starts a bootstrap for snap, in a container or as a
// process, and serves its Runtime API.
func (s *Server) startEnvironment(ctx context.Context, snap envSnapshot) (*environment, error) {
	e := &environment{
		id:        newRequestID()[:8],
		snap:      snap,
		invCh:     make(chan *invocation),
		stopping:  make(chan struct{}),
		exited:    make(chan struct{}),
		served:    make(chan struct{}),
		startedAt: time.Now(),
	}
	e.log = s.log.With("function", snap.name, "env", e.id)
	e.logs = newLogSink(e.log)
	if s.cfg.Isolation == IsolationContainer {
		ctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
		defer cancel()
		conn, err := s.startContainer(ctx, e, s.containerEnv(snap))
		if err != nil {
			return nil, err
		}
		e.ln = newOneConnListener(conn)
		e.serveRuntimeAPI()
		e.log.Debug("localcloud: environment started", "container", e.box.id[:12])
		return e, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the runtime API of %s: %w", snap.name, err)
	}
	e.ln = ln
	tmp, err := os.MkdirTemp(s.dir, "env-"+e.id+"-")
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("create /tmp of an environment of %s: %w", snap.name, err)
	}
	e.tmpDir = tmp
	e.serveRuntimeAPI()

	cmd := exec.Command(s.cfg.Python, "-u", s.bootstrap)
	cmd.Dir = snap.code.dir
	cmd.Env = s.processEnv(snap, ln.Addr().String(), tmp)
	cmd.Stdout = e.logs
	cmd.Stderr = e.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.srv.Close()
		<-e.served
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("start %s for %s: %w", s.cfg.Python, snap.name, err)
	}
	e.cmd = cmd
	go func() {
		err := cmd.Wait()
		e.exitErr = err
		close(e.exited)
	}()
	e.log.Debug("localcloud: environment started", "pid", cmd.Process.Pid)
	return e, nil
}

// serveRuntimeAPI serves the Runtime API on e.ln until stop.
func (e *environment) serveRuntimeAPI() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", e.handleNext)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", e.handleResponse)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", e.handleError)
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", e.handleInitError)
	// No idle or read timeout: over stdio the bootstrap has one connection
	// for the environment's life, and long-polls /next on it. Headers are
	// bounded like every other server's.
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	ln := e.ln
	go func() {
		defer close(e.served)
		_ = e.srv.Serve(ln)
	}()
}

// processPath is PATH in a bootstrap process: the system's directories, as
// in a Lambda environment, whatever localcloud's own PATH is.
const processPath = "/usr/local/bin:/usr/bin:/bin"

// processEnv is the environment of a bootstrap process: Lambda's reserved
// variables plus the function's own. Nothing of localcloud's own environment
// (credentials and PATH included) leaks in.
func (s *Server) processEnv(snap envSnapshot, api, tmp string) []string {
	return s.lambdaEnv(snap, map[string]string{
		"PATH":                   processPath,
		"HOME":                   tmp,
		"TMPDIR":                 tmp,
		"PYTHONPATH":             snap.code.dir,
		"LAMBDA_TASK_ROOT":       snap.code.dir,
		"LAMBDA_RUNTIME_DIR":     filepath.Dir(s.bootstrap),
		"AWS_LAMBDA_RUNTIME_API": api,
	})
}

// lambdaEnv is Lambda's reserved variables, with the paths of where the
// bootstrap runs, over the function's own variables.
func (s *Server) lambdaEnv(snap envSnapshot, paths map[string]string) []string {
	vars := map[string]string{}
	for k, v := range snap.vars {
		vars[k] = v
	}
	reserved := map[string]string{
		"LANG":                            "C.UTF-8",
		"TZ":                              ":UTC",
		"PYTHONDONTWRITEBYTECODE":         "1",
		"_HANDLER":                        snap.handler,
		"AWS_REGION":                      s.cfg.Region,
		"AWS_DEFAULT_REGION":              s.cfg.Region,
		"AWS_EXECUTION_ENV":               "AWS_Lambda_" + snap.runtime,
		"AWS_LAMBDA_FUNCTION_NAME":        snap.name,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(snap.memoryMB),
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_TIMEOUT":     strconv.Itoa(int(snap.timeout / time.Second)),
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/" + snap.name,
		"AWS_LAMBDA_LOG_STREAM_NAME":      time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + snap.code.id,
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"LOCALCLOUD":                      "1",
	}
	for k, v := range reserved {
		vars[k] = v
	}
	for k, v := range paths {
		vars[k] = v
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// stop removes the container or kills the process group, closes the
// Runtime API and waits for both.
func (e *environment) stop() {
	e.stopOnce.Do(func() {
		close(e.stopping)
		if e.box != nil {
			e.box.remove(e)
		}
		if e.cmd != nil && e.cmd.Process != nil {
			_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		}
		_ = e.srv.Close()
		<-e.served
		<-e.exited
		_ = os.RemoveAll(e.tmpDir)
		e.log.Debug("localcloud: environment stopped")
	})
}

func (e *environment) hasExited() bool {
	select {
	case <-e.exited:
		return true
	default:
		return false
	}
}

// run hands inv to the environment and waits for its result, the function's
// timeout, the process's exit or ctx. On anything but a result the
// environment is unusable: ok reports whether it may serve again.
func (e *environment) run(ctx context.Context, inv *invocation, initTimeout time.Duration) (res invResult, ok bool) {
	initTimer := time.NewTimer(initTimeout)
	defer initTimer.Stop()
	select {
	case e.invCh <- inv:
	case <-e.exited:
		return e.exitResult(inv), false
	case <-e.stopping:
		return errorPayload(inv.id, "Runtime.ExitError", "RequestId: %s Error: execution environment was stopped", inv.id), false
	case <-initTimer.C:
		return errorPayload(inv.id, "Runtime.InitTimeout", "RequestId: %s Error: runtime did not ask for work within %s", inv.id, initTimeout), false
	case <-ctx.Done():
		return invResult{}, false
	}
	timer := time.NewTimer(e.snap.timeout)
	defer timer.Stop()
	select {
	case r := <-inv.done:
		return r, !r.timedOut
	case <-timer.C:
		msg := fmt.Sprintf("%s %s Task timed out after %.2f seconds",
			time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), inv.id, e.snap.timeout.Seconds())
		b, _ := json.Marshal(map[string]string{"errorMessage": msg, "errorType": "Sandbox.Timedout"})
		e.logs.appendLine(msg)
		return invResult{payload: b, funcErr: "Unhandled", timedOut: true}, false
	case <-e.exited:
		// A result posted just before the exit still counts.
		select {
		case r := <-inv.done:
			return r, false
		default:
		}
		return e.exitResult(inv), false
	case <-ctx.Done():
		return invResult{}, false
	}
}

// exitResult is the payload for a process that exited before answering.
func (e *environment) exitResult(inv *invocation) invResult {
	e.mu.Lock()
	initErr := e.initErr
	e.mu.Unlock()
	if len(initErr) > 0 {
		return invResult{payload: initErr, funcErr: "Unhandled"}
	}
	status := "exit status unknown"
	if e.exitErr != nil {
		status = e.exitErr.Error()
	} else {
		status = "exit status 0"
	}
	return errorPayload(inv.id, "Runtime.ExitError", "RequestId: %s Error: Runtime exited with error: %s", inv.id, status)
}

func errorPayload(reqID, typ, format string, args ...any) invResult {
	b, _ := json.Marshal(map[string]string{"errorType": typ, "errorMessage": fmt.Sprintf(format, args...)})
	return invResult{payload: b, funcErr: "Unhandled"}
}

func (e *environment) handleNext(w http.ResponseWriter, r *http.Request) {
	var inv *invocation
	select {
	case inv = <-e.invCh:
	case <-e.stopping:
		http.Error(w, "environment stopping", http.StatusGone)
		return
	case <-r.Context().Done():
		return
	}
	e.mu.Lock()
	e.current = inv
	e.mu.Unlock()
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(e.snap.timeout).UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", e.snap.arn)
	h.Set("Lambda-Runtime-Trace-Id", "Root=1-"+inv.id[:8]+"-"+strings.ReplaceAll(inv.id, "-", "")[:24])
	if inv.clientContext != "" {
		h.Set("Lambda-Runtime-Client-Context", inv.clientContext)
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.payload)
}

// takeCurrent returns the invocation id names, clearing it.
func (e *environment) takeCurrent(id string) *invocation {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.current == nil || e.current.id != id {
		return nil
	}
	inv := e.current
	e.current = nil
	return inv
}

func runtimeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errorType": typ, "errorMessage": msg})
}

func (e *environment) handleResponse(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		runtimeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	inv := e.takeCurrent(r.PathValue("id"))
	if inv == nil {
		runtimeError(w, http.StatusBadRequest, "InvalidRequestID", "unknown or finished request id")
		return
	}
	if len(body) > maxPayload {
		inv.finish(errorPayload(inv.id, "Function.ResponseSizeTooLarge",
			"Response payload size exceeded maximum allowed payload size (%d bytes).", maxPayload))
		runtimeError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "response too large")
		return
	}
	inv.finish(invResult{payload: body})
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
}

func (e *environment) handleError(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload))
	if err != nil {
		runtimeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	inv := e.takeCurrent(r.PathValue("id"))
	if inv == nil {
		runtimeError(w, http.StatusBadRequest, "InvalidRequestID", "unknown or finished request id")
		return
	}
	if !json.Valid(body) {
		typ := r.Header.Get("Lambda-Runtime-Function-Error-Type")
		if typ == "" {
			typ = "Runtime.Unknown"
		}
		body, _ = json.Marshal(map[string]string{"errorType": typ, "errorMessage": string(body)})
	}
	inv.finish(invResult{payload: body, funcErr: "Unhandled"})
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
}

func (e *environment) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil || !json.Valid(body) {
		body, _ = json.Marshal(map[string]string{"errorType": "Runtime.Unknown", "errorMessage": "init failed"})
	}
	e.mu.Lock()
	e.initErr = body
	e.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
}

// logSink collects an environment's stdout and stderr and cuts it into the
// logs of each invocation at the marker bootstrap.py writes.
type logSink struct {
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	partial []byte
	cur     bytes.Buffer      // logs since the last cut
	done    map[string][]byte // finished invocations' logs, by request id
	order   []string
	wake    chan struct{} // closed and replaced at every cut
}

const maxLogKeep = 64 << 10

func newLogSink(log *slog.Logger) *logSink {
	return &logSink{log: log, done: map[string][]byte{}, wake: make(chan struct{})}
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	data := append(l.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := data[:i+1]
		data = data[i+1:]
		if id, ok := bytes.CutPrefix(line, []byte(logMarker)); ok {
			l.cutLocked(string(bytes.TrimSpace(id)))
			continue
		}
		l.appendLocked(line)
	}
	l.partial = append([]byte(nil), data...)
	if len(l.partial) > maxLogKeep {
		l.appendLocked(l.partial)
		l.partial = nil
	}
	return len(p), nil
}

func (l *logSink) appendLocked(line []byte) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("localcloud: function output", "line", strings.TrimRight(string(line), "\n"))
	}
	l.cur.Write(line)
	if l.cur.Len() > 2*maxLogKeep {
		keep := append([]byte(nil), l.cur.Bytes()[l.cur.Len()-maxLogKeep:]...)
		l.cur.Reset()
		l.cur.Write(keep)
	}
}

func (l *logSink) appendLine(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.appendLocked([]byte(s + "\n"))
}

func (l *logSink) cutLocked(id string) {
	l.done[id] = append([]byte(nil), l.cur.Bytes()...)
	l.order = append(l.order, id)
	for len(l.order) > 4 {
		delete(l.done, l.order[0])
		l.order = l.order[1:]
	}
	l.cur.Reset()
	close(l.wake)
	l.wake = make(chan struct{})
}

// take returns the logs of invocation id, waiting up to wait for the marker
// that ends them; without it, whatever was written since the last cut.
func (l *logSink) take(id string, wait time.Duration) []byte {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		if b, ok := l.done[id]; ok {
			l.mu.Unlock()
			return b
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			l.mu.Lock()
			b := append([]byte(nil), l.cur.Bytes()...)
			l.mu.Unlock()
			return b
		}
	}
}
