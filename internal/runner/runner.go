// Package runner keeps a set of warm Python processes (Runners) that run one function
// through the lambdawrap shim in worker mode, one call at a time each.
//
// Handler-style functions are imported once per runner and stay warm.
// Script-style functions run as a spawned `python3 function.py ARG` would, in
// a fresh process per call: each runner is then a small zygote
// (lambdawrap.Zygote) that compiled the function once and keeps prepared
// children forked ahead of the calls; a child takes a request, runs the
// script and answers itself, and the zygote forks the next. With
// Config.ReuseProcess a script runs instead in the warm runner itself, with a
// fresh __main__ per call but the process kept. A call past its deadline has its runner's process
// group killed, is answered with spillway.ErrTimeout at once, and the runner is
// replaced in the background; a runner that dies mid-call (os._exit, a crash,
// sys.exit in a handler) gives spillway.ErrRunnerCrashed and is replaced too.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
)

// Config describes the function and the pool. Zero values take the defaults
// noted on each field.
type Config struct {
	Python   string // interpreter (PYTHON); required
	ShimPath string // handler.py on disk (lambdawrap.WriteShim); required
	// ZygotePath is zygote.py on disk, which runs script-style functions;
	// default lambdawrap.ZygoteFile beside ShimPath (WriteShim writes both).
	ZygotePath string
	// ReuseProcess runs a script-style function in the warm runner itself,
	// as handler-style functions run: each call gets a fresh __main__, its
	// own sys.argv and captured stdout, but module state, threads and the
	// like persist between calls (the shim restores the cwd, os.environ and
	// sys.path). Much faster; not the semantics of a spawned process.
	ReuseProcess bool
	// Spares is how many prepared children each script-style runner keeps
	// forked ahead of the calls; default 2, so that back-to-back calls do not
	// wait for a fork.
	Spares       int
	FunctionPath string         // the user's function.py; required
	Style        spillway.Style // script or handler; required
	Handler      string         // handler-style entry point; default "handler"
	Name         string         // reported to handlers as context.function_name
	Version      string         // reported to handlers as context.function_version
	Concurrency  int            // runners, i.e. calls at once (WORKER_CONCURRENCY); >= 1
	Timeout      time.Duration  // per call, from Call until the answer (LOCAL_TIMEOUT); > 0
	// MaxResultBytes (MAX_RESULT_BYTES) is the largest result (its JSON) a
	// call may return; the shim refuses a larger one and the call fails with
	// spillway.ErrPayloadTooLarge, the runner kept. > 0.
	MaxResultBytes int64
	StartTimeout   time.Duration // for a runner to import the function; default 30s
	Env            []string      // runners' environment; default MinimalEnv()
	Dir            string        // runners' working directory; default the function's
	Output         io.Writer     // runners' stdout and stderr; default os.Stderr
	Logger         *slog.Logger  // default slog.Default()
}

// MinimalEnv is the environment runners get by default: enough for Python,
// nothing of the worker's own (no secrets).
func MinimalEnv() []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=C.UTF-8",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONIOENCODING=utf-8",
	}
}

// setDefaults fills the knobs no variable sets. The worker's variables
// (PYTHON, WORKER_CONCURRENCY, LOCAL_TIMEOUT, MAX_RESULT_BYTES) have their
// defaults in internal/config.
func (c *Config) setDefaults() {
	if c.Handler == "" {
		c.Handler = spillway.DefaultHandler
	}
	if c.ZygotePath == "" && c.ShimPath != "" {
		c.ZygotePath = filepath.Join(filepath.Dir(c.ShimPath), lambdawrap.ZygoteFile)
	}
	if c.Spares == 0 {
		c.Spares = 2
	}
	if c.Dir == "" && c.FunctionPath != "" {
		c.Dir = filepath.Dir(c.FunctionPath)
	}
	if c.Name == "" {
		c.Name = "function"
	}
	if c.Version == "" {
		c.Version = "0"
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.Env == nil {
		c.Env = MinimalEnv()
	}
	if c.Output == nil {
		c.Output = os.Stderr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// zygote reports whether the runners are script zygotes: script style, not
// reusing the process.
func (c *Config) zygote() bool {
	return c.Style == spillway.StyleScript && !c.ReuseProcess
}

// Validate reports the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Python == "":
		return errors.New("runner config: Python is required")
	case c.ShimPath == "":
		return errors.New("runner config: ShimPath is required")
	case c.FunctionPath == "":
		return errors.New("runner config: FunctionPath is required")
	case c.Concurrency < 1:
		return fmt.Errorf("runner config: Concurrency %d, want at least 1", c.Concurrency)
	case c.Timeout <= 0:
		return fmt.Errorf("runner config: Timeout %s, want a positive deadline", c.Timeout)
	case c.MaxResultBytes <= 0:
		return fmt.Errorf("runner config: MaxResultBytes %d, want a positive limit", c.MaxResultBytes)
	case c.Spares < 0 || c.Spares > 64:
		return fmt.Errorf("runner config: Spares %d, want 1..64", c.Spares)
	}
	if _, err := spillway.ParseStyle(string(c.Style)); err != nil {
		return fmt.Errorf("runner config: %w", err)
	}
	return nil
}

// Result is one call's outcome.
type Result struct {
	// Value is the script's stdout (string) or the handler's return value,
	// decoded from JSON with integers as int64 and other numbers as float64.
	Value     any
	ColdStart bool // the runner served its first call
	Duration  time.Duration
}

// Stats is a snapshot for health().
type Stats struct {
	InFlight   int64 // calls in Call, waiting for a runner or running
	Completed  int64 // calls answered with a result or a function error
	ColdStarts int64 // calls served by a fresh runner
	Failed     int64 // calls that timed out or crashed their runner
	Runners    int   // runners alive and warm
	Ready      bool  // open and not closing
}

// Runners is a fixed-size set of warm runners: one call at a time each.
type Runners struct {
	cfg Config
	log *slog.Logger

	idle chan *proc // warm runners not serving a call

	// bg is the owner's background context: runner replacement stops with it.
	bg       context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup // replacement and reaper goroutines

	mu       sync.Mutex // guards procs, stopping, and wg.Add outside owned goroutines
	procs    map[*proc]struct{}
	stopping bool // Close is waiting for wg: no new background work

	nextID    atomic.Int64
	procID    atomic.Int64
	opened    atomic.Bool
	closed    atomic.Bool
	inFlight  atomic.Int64
	completed atomic.Int64
	cold      atomic.Int64
	failed    atomic.Int64
	runners   atomic.Int64
	initErr   atomic.Pointer[pyError]
}

// New checks cfg and returns the runners that Open starts.
func New(cfg Config) (*Runners, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	return &Runners{
		cfg:      cfg,
		log:      cfg.Logger,
		idle:     make(chan *proc, cfg.Concurrency),
		bg:       bg,
		bgCancel: cancel,
		procs:    make(map[*proc]struct{}),
	}, nil
}

// Open starts all runners and waits until each has loaded the function.
func (p *Runners) Open(ctx context.Context) error {
	type started struct {
		pr  *proc
		err error
	}
	ch := make(chan started, p.cfg.Concurrency)
	for range p.cfg.Concurrency {
		go func() {
			pr, err := p.start(ctx)
			ch <- started{pr, err}
		}()
	}
	var errs []error
	var ok []*proc
	for range p.cfg.Concurrency {
		s := <-ch
		if s.err != nil {
			errs = append(errs, s.err)
			continue
		}
		ok = append(ok, s.pr)
	}
	if len(errs) > 0 {
		for _, pr := range ok {
			p.retire(pr)
		}
		return fmt.Errorf("open runner pool: %w", errors.Join(errs...))
	}
	for _, pr := range ok {
		p.idle <- pr
	}
	if e := p.initErr.Load(); e != nil {
		p.log.Warn("function failed to load; every call will report it",
			"type", e.Type, "message", e.Message)
	}
	p.opened.Store(true)
	p.log.Info("runner pool open", "runners", p.cfg.Concurrency, "style", p.cfg.Style,
		"function", p.cfg.FunctionPath)
	return nil
}

// start starts one runner and registers it.
func (p *Runners) start(ctx context.Context) (*proc, error) {
	id := int(p.procID.Add(1))
	pr, rdy, err := startProc(ctx, &p.cfg, id, &p.wg)
	if err != nil {
		return nil, err
	}
	if rdy.InitError != nil {
		p.initErr.Store(rdy.InitError)
	}
	p.mu.Lock()
	p.procs[pr] = struct{}{}
	p.mu.Unlock()
	p.runners.Add(1)
	return pr, nil
}

// retire kills a runner, reaps it and forgets it.
func (p *Runners) retire(pr *proc) {
	p.mu.Lock()
	_, known := p.procs[pr]
	delete(p.procs, pr)
	p.mu.Unlock()
	if known {
		p.runners.Add(-1)
	}
	pr.release()
}

// replace retires a broken runner and starts another in the background.
func (p *Runners) replace(old *proc) {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		p.retire(old)
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		p.retire(old)
		backoff := 50 * time.Millisecond
		for p.bg.Err() == nil {
			pr, err := p.start(p.bg)
			if err == nil {
				if p.bg.Err() != nil { // closed meanwhile
					p.retire(pr)
					return
				}
				p.idle <- pr
				return
			}
			p.log.Error("replace runner", "err", err)
			select {
			case <-p.bg.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}()
}

// Call runs the function once with param. The pool's Timeout covers waiting
// for a free runner and running. Errors: spillway.ErrTimeout (deadline),
// *spillway.FunctionError (the function raised or exited with an error),
// spillway.ErrRunnerCrashed (the runner or the script's child died),
// spillway.ErrUnavailable (closed), spillway.ErrInvalidParams (param not JSON),
// or ctx's cancellation.
func (p *Runners) Call(ctx context.Context, param any) (Result, error) {
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	if p.closed.Load() || !p.opened.Load() {
		return Result{}, fmt.Errorf("call function: runner pool not open: %w", spillway.ErrUnavailable)
	}
	raw, err := json.Marshal(param)
	if err != nil {
		return Result{}, fmt.Errorf("call function: encode parameter: %v: %w", err, spillway.ErrInvalidParams)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	begin := time.Now()

	var pr *proc
	select {
	case pr = <-p.idle:
	case <-ctx.Done():
		p.failed.Add(1)
		return Result{}, fmt.Errorf("call function: waiting for a runner: %w", deadlineErr(ctx))
	}

	req := request{ID: p.nextID.Add(1), Param: raw}
	if d, ok := ctx.Deadline(); ok {
		req.DeadlineMs = d.UnixMilli()
	}
	cold := pr.fresh
	pr.fresh = false
	resp, err := pr.call(ctx, req)
	if pr.broken {
		p.replace(pr)
	} else {
		p.idle <- pr
	}
	res := Result{ColdStart: cold, Duration: time.Since(begin)}
	if cold {
		p.cold.Add(1)
	}
	if err != nil {
		p.failed.Add(1)
		return res, fmt.Errorf("call function: %w", err)
	}
	if !resp.OK {
		e := resp.Error
		if e == nil {
			e = &pyError{Type: "Error"}
		}
		if resp.Crash {
			p.failed.Add(1)
			return res, fmt.Errorf("%s: %w", e.Message, spillway.ErrRunnerCrashed)
		}
		if resp.TooLarge {
			p.completed.Add(1)
			return res, fmt.Errorf("%s: %w", e.Message, spillway.ErrPayloadTooLarge)
		}
		p.completed.Add(1)
		return res, &spillway.FunctionError{Type: e.Type, Message: e.Message, Traceback: e.Traceback}
	}
	if resp.text != nil {
		res.Value = *resp.text
		p.completed.Add(1)
		return res, nil
	}
	v, err := lambdawrap.DecodeResult(resp.Result)
	if err != nil {
		p.failed.Add(1)
		return res, fmt.Errorf("call function: %w", err)
	}
	res.Value = v
	p.completed.Add(1)
	return res, nil
}

// Stats returns the current counters.
func (p *Runners) Stats() Stats {
	return Stats{
		InFlight:   p.inFlight.Load(),
		Completed:  p.completed.Load(),
		ColdStarts: p.cold.Load(),
		Failed:     p.failed.Load(),
		Runners:    int(p.runners.Load()),
		Ready:      p.opened.Load() && !p.closed.Load(),
	}
}

// InitError is the function's import or compile error as the runners
// reported it, or nil.
func (p *Runners) InitError() *spillway.FunctionError {
	e := p.initErr.Load()
	if e == nil {
		return nil
	}
	return &spillway.FunctionError{Type: e.Type, Message: e.Message, Traceback: e.Traceback}
}

// Close stops taking calls, lets the calls in flight finish until ctx ends,
// then kills every runner and waits for them. It returns ctx's error when
// calls were still running at the deadline.
func (p *Runners) Close(ctx context.Context) error {
	if p.closed.Swap(true) {
		return nil
	}
	var waitErr error
	tick := time.NewTicker(5 * time.Millisecond)
	for p.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			waitErr = fmt.Errorf("close runner pool with %d calls in flight: %w", p.inFlight.Load(), ctx.Err())
		case <-tick.C:
			continue
		}
		break
	}
	tick.Stop()
	p.bgCancel()
	p.mu.Lock()
	p.stopping = true
	all := make([]*proc, 0, len(p.procs))
	for pr := range p.procs {
		all = append(all, pr)
	}
	p.mu.Unlock()
	for _, pr := range all {
		pr.kill()
	}
	p.wg.Wait()
	for _, pr := range all {
		p.retire(pr)
	}
	return waitErr
}
