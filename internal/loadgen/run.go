package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// Outcome is what a Caller learnt from one call.
type Outcome struct {
	Route     string
	Reason    string
	Worker    string
	ColdStart bool
	Err       error
}

// Caller makes one call. It must honour ctx.
type Caller interface {
	Call(ctx context.Context) Outcome
}

// CallerFunc adapts a function to Caller.
type CallerFunc func(ctx context.Context) Outcome

func (f CallerFunc) Call(ctx context.Context) Outcome { return f(ctx) }

// PoolSizer reads the target's pool size; ok=false when it reports none.
type PoolSizer func(ctx context.Context) (size int, ok bool, err error)

// Config describes one bounded run. Requests and Duration bound the measured
// part; warm-up calls come before it and are not in the figures.
type Config struct {
	// Concurrency is the number of callers in the closed model, and the
	// most calls in flight in the open model (0: DefaultMaxInFlight).
	Concurrency int
	// Rate > 0 selects the open model: calls are due every 1/Rate seconds.
	Rate float64
	// Requests is the number of measured calls (0: bounded by Duration).
	Requests int64
	// Duration bounds the measured part (0: bounded by Requests).
	Duration time.Duration
	// WarmupRequests and WarmupDuration make the first calls warm-up.
	WarmupRequests int64
	WarmupDuration time.Duration
	// Timeout bounds each call (0: DefaultTimeout).
	Timeout time.Duration
	// PollEvery is the pool-size polling period (0: 250 ms).
	PollEvery time.Duration
}

const (
	// DefaultMaxInFlight bounds the open model's calls in flight.
	DefaultMaxInFlight = 1024
	// DefaultTimeout bounds one call.
	DefaultTimeout = 60 * time.Second
	// MaxRequests and MaxDuration keep a run bounded whatever the flags say.
	MaxRequests = 10_000_000
	MaxDuration = 24 * time.Hour
)

// Validate checks that the run is bounded and sane.
func (c Config) Validate() error {
	switch {
	case c.Requests < 0 || c.Requests > MaxRequests:
		return fmt.Errorf("count %d out of range 1..%d", c.Requests, MaxRequests)
	case c.Duration < 0 || c.Duration > MaxDuration:
		return fmt.Errorf("duration %v out of range (at most %v)", c.Duration, MaxDuration)
	case c.Concurrency < 0 || c.Concurrency > 100_000:
		return fmt.Errorf("concurrency %d out of range 1..100000", c.Concurrency)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate > 1e6:
		return fmt.Errorf("rate %v out of range (0 < rate <= 1e6)", c.Rate)
	case c.WarmupRequests < 0 || c.WarmupRequests > MaxRequests:
		return fmt.Errorf("warm-up count %d out of range", c.WarmupRequests)
	case c.WarmupDuration < 0 || c.WarmupDuration > MaxDuration:
		return fmt.Errorf("warm-up duration %v out of range", c.WarmupDuration)
	case c.Timeout < 0:
		return fmt.Errorf("timeout %v is negative", c.Timeout)
	case c.Requests == 0 && c.Duration == 0:
		return errors.New("give a count (-n) or a duration (-d): a run must be bounded")
	}
	return nil
}

// Result is a run's report plus what the chart needs.
type Result struct {
	Report  Report
	Points  []Point
	Pool    []PoolSample
	Elapsed time.Duration // wall time of the whole run, warm-up included
}

// Runner runs load against a Caller. PoolSize and Completed are optional.
type Runner struct {
	Caller Caller
	// PoolSize, when set, is polled every Config.PollEvery during the run.
	PoolSize PoolSizer
	// Completed, when set, counts finished calls (warm-up included) as they
	// end, for a progress display.
	Completed *atomic.Int64
}

// Run drives the load until the count or duration is reached or ctx ends,
// and returns the figures of what was measured. It returns an error only
// for a bad Config; call failures are counted in the report.
func (r *Runner) Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = 250 * time.Millisecond
	}
	start := time.Now()

	pollCtx, stopPoll := context.WithCancel(ctx)
	var pool []PoolSample
	var pollWG sync.WaitGroup
	if r.PoolSize != nil {
		pollWG.Add(1)
		go func() {
			defer pollWG.Done()
			pool = r.pollPool(pollCtx, start, cfg.PollEvery)
		}()
	}

	var (
		rec    *Recorder
		unsent int64
		warm   int64
	)
	if cfg.Rate > 0 {
		rec, warm, unsent = r.runOpen(ctx, cfg, start)
	} else {
		rec, warm = r.runClosed(ctx, cfg, start)
	}
	stopPoll()
	pollWG.Wait()

	rep := rec.Report()
	rep.Warmup = warm
	rep.Unsent = unsent
	if cfg.Rate > 0 {
		rep.Model = "open"
		rep.Rate = cfg.Rate
	} else {
		rep.Model = "closed"
	}
	rep.Concurrency = max(cfg.Concurrency, 1)
	if cfg.Rate > 0 && cfg.Concurrency == 0 {
		rep.Concurrency = DefaultMaxInFlight
	}
	rep.Pool = PoolRangeOf(pool)
	return &Result{Report: rep, Points: rec.Points(), Pool: pool, Elapsed: time.Since(start)}, nil
}

// bounds says whether call i, due at t, is warm-up, and whether it is past
// the end of the run.
type bounds struct {
	cfg          Config
	measureStart time.Time // end of the warm-up by time
	end          time.Time // zero: no time bound
}

func newBounds(cfg Config, start time.Time) bounds {
	b := bounds{cfg: cfg, measureStart: start.Add(cfg.WarmupDuration)}
	if cfg.Duration > 0 {
		b.end = b.measureStart.Add(cfg.Duration)
	}
	return b
}

func (b bounds) warmup(i int64, t time.Time) bool {
	return i < b.cfg.WarmupRequests || t.Before(b.measureStart)
}

// done reports whether call i (counted from 0, warm-up included), due at t,
// should not be sent. warmSoFar is the warm-up calls before it.
func (b bounds) done(i, warmSoFar int64, t time.Time) bool {
	if !b.end.IsZero() && !t.Before(b.end) {
		return true
	}
	return b.cfg.Requests > 0 && i-warmSoFar >= b.cfg.Requests
}

func (r *Runner) one(ctx context.Context, timeout time.Duration, scheduled time.Time) Sample {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	o := r.Caller.Call(cctx)
	end := time.Now()
	if r.Completed != nil {
		r.Completed.Add(1)
	}
	return Sample{Scheduled: scheduled, End: end, Route: o.Route, Reason: o.Reason,
		Worker: o.Worker, ColdStart: o.ColdStart, Err: o.Err}
}

// runClosed: Concurrency callers, each calling again as soon as it has its
// answer. Tickets are handed out in order so warm-up is the first calls.
func (r *Runner) runClosed(ctx context.Context, cfg Config, start time.Time) (*Recorder, int64) {
	b := newBounds(cfg, start)
	n := max(cfg.Concurrency, 1)
	var (
		mu     sync.Mutex // guards next and warm
		next   int64
		warm   int64
		wg     sync.WaitGroup
		recs   = make([]*Recorder, n)
		ticket = func(now time.Time) (isWarm, ok bool) {
			mu.Lock()
			defer mu.Unlock()
			isWarm = b.warmup(next, now)
			if !isWarm && b.done(next, warm, now) {
				return false, false
			}
			next++
			if isWarm {
				warm++
			}
			return isWarm, true
		}
	)
	for c := range n {
		recs[c] = NewRecorder(start)
		wg.Add(1)
		go func(rec *Recorder) {
			defer wg.Done()
			for ctx.Err() == nil {
				now := time.Now()
				isWarm, ok := ticket(now)
				if !ok {
					return
				}
				s := r.one(ctx, cfg.Timeout, now)
				if isWarm || cutShort(ctx, s.Err) {
					continue
				}
				rec.Add(s)
			}
		}(recs[c])
	}
	wg.Wait()
	for _, o := range recs[1:] {
		recs[0].Merge(o)
	}
	return recs[0], warm
}

// runOpen: call i is due at start + i/Rate whether or not earlier calls
// have answered; at most Concurrency are in flight, and a call that waits
// for a slot has that wait in its latency.
func (r *Runner) runOpen(ctx context.Context, cfg Config, start time.Time) (*Recorder, int64, int64) {
	b := newBounds(cfg, start)
	inflight := cfg.Concurrency
	if inflight <= 0 {
		inflight = DefaultMaxInFlight
	}
	const shards = 8
	type shard struct {
		mu  sync.Mutex // guards rec
		rec *Recorder
	}
	var sh [shards]shard
	for i := range sh {
		sh[i].rec = NewRecorder(start)
	}
	slots := make(chan struct{}, inflight)
	var (
		wg     sync.WaitGroup
		warm   int64
		unsent int64
		timer  = time.NewTimer(0)
	)
	defer timer.Stop()
	<-timer.C
	for i := int64(0); ; i++ {
		due := Schedule(start, cfg.Rate, i)
		isWarm := b.warmup(i, due)
		if !isWarm && b.done(i, warm, due) {
			break
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() == nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			if !isWarm {
				unsent++
			}
			break
		}
		if isWarm {
			warm++
		}
		wg.Add(1)
		go func(i int64, due time.Time, isWarm bool) {
			defer wg.Done()
			s := r.one(ctx, cfg.Timeout, due)
			<-slots
			if isWarm || cutShort(ctx, s.Err) {
				return
			}
			x := &sh[i%shards]
			x.mu.Lock()
			x.rec.Add(s)
			x.mu.Unlock()
		}(i, due, isWarm)
	}
	wg.Wait()
	for i := 1; i < shards; i++ {
		sh[0].rec.Merge(sh[i].rec)
	}
	return sh[0].rec, warm, unsent
}

// cutShort reports whether a call failed because the run itself was
// stopped; such calls are not in the figures.
func cutShort(runCtx context.Context, err error) bool {
	return err != nil && runCtx.Err() != nil &&
		(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

func (r *Runner) pollPool(ctx context.Context, start time.Time, every time.Duration) []PoolSample {
	var out []PoolSample
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 4*every)
		size, ok, err := r.PoolSize(pctx)
		cancel()
		if err == nil && ok {
			out = append(out, PoolSample{T: time.Since(start).Seconds(), Size: size})
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}

// RouteUnknown is the route of a call made through call_faas, which does
// not say where the call ran.
const RouteUnknown = "unknown"

// ErrNoInvoke is wrapped by an InvokeCaller's error when the target has no
// invoke method (an XML-RPC FaaS gateway other than Spillway's lb).
var ErrNoInvoke = errors.New("the target has no invoke method")

// InvokeCaller calls the lb's invoke(param[, options]).
type InvokeCaller struct {
	Client  *xmlrpc.Client
	Param   any
	Options map[string]any // nil: no options (the configured policy decides)
	// Function, when set, names the function called: the option
	// "function" is added to Options, and the fallback calls
	// call(Function, param). "" calls the lb's default function. See
	// ResolveFunction.
	Function string
	// Fallback: when the target has no invoke (see MethodMissing), call
	// call_faas(param) (or call(Function, param)) instead, then and on
	// every later call, and report the route as RouteUnknown. Without it
	// such a call fails with an error wrapping ErrNoInvoke.
	Fallback bool

	noInvoke atomic.Bool
}

var _ Caller = (*InvokeCaller)(nil)

// InvokeMissing reports whether the target answered that it has no invoke.
func (c *InvokeCaller) InvokeMissing() bool { return c.noInvoke.Load() }

// Call makes one invoke call (or a call_faas or call call once invoke
// proved missing and Fallback is set).
func (c *InvokeCaller) Call(ctx context.Context) Outcome {
	if c.Fallback && c.noInvoke.Load() {
		return callUnrouted(ctx, c.Client, c.Function, c.Param)
	}
	args := []any{c.Param}
	if opts := withFunction(c.Options, c.Function); opts != nil {
		args = append(args, opts)
	}
	var reply any
	if err := c.Client.Call(ctx, "invoke", args, &reply); err != nil {
		if !MethodMissing(err) {
			return Outcome{Err: err}
		}
		c.noInvoke.Store(true)
		if !c.Fallback {
			return Outcome{Err: fmt.Errorf("%w: %w", ErrNoInvoke, err)}
		}
		// The call did not run: make it through call_faas or call.
		return callUnrouted(ctx, c.Client, c.Function, c.Param)
	}
	inv, err := ParseInvocation(reply)
	if err != nil {
		return Outcome{Err: err}
	}
	return Outcome{Route: string(inv.Route), Reason: string(inv.Reason), Worker: inv.Worker, ColdStart: inv.ColdStart}
}

// CallFaasCaller calls call_faas(param), the reference interface that every
// XML-RPC FaaS gateway of this kind offers, or call(Function, param) for a
// named function; neither tells the route.
type CallFaasCaller struct {
	Client *xmlrpc.Client
	Param  any
	// Function, when set, names the function: call(Function, param) is
	// called instead of call_faas(param). See ResolveFunction.
	Function string
}

var _ Caller = (*CallFaasCaller)(nil)

// Call makes one call_faas (or call) call.
func (c *CallFaasCaller) Call(ctx context.Context) Outcome {
	return callUnrouted(ctx, c.Client, c.Function, c.Param)
}

// callUnrouted makes a call that does not say where it ran.
func callUnrouted(ctx context.Context, cl *xmlrpc.Client, fn string, param any) Outcome {
	if _, err := Call(ctx, cl, fn, param); err != nil {
		return Outcome{Err: err}
	}
	return Outcome{Route: RouteUnknown}
}

// MethodMissing reports whether err is a server's answer that the method
// called does not exist: the standard fault -32601 (Spillway's lb and most
// servers), any fault that says the method is not found or not supported,
// or fault 1, which is how Python's SimpleXMLRPCServer (the reference
// gateway) reports an unknown method ('method "invoke" is not supported').
// Spillway's own faults (the function raised, or a gateway error) never
// say so, whatever their text.
func MethodMissing(err error) bool {
	var f *xmlrpc.Fault
	if !errors.As(err, &f) {
		return false
	}
	if f.Code == spillway.FaultMethodNotFound || f.Code == 1 {
		return true
	}
	if f.Code == spillway.FaultApplication || (f.Code <= -32000 && f.Code >= -32099) {
		return false
	}
	s := strings.ToLower(f.String)
	return strings.Contains(s, "method") && (strings.Contains(s, "not found") || strings.Contains(s, "not supported"))
}

// ParseInvocation reads invoke's struct {result, route, worker, reason,
// duration_ms, cold_start}. Only route is required.
func ParseInvocation(v any) (spillway.Invocation, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return spillway.Invocation{}, fmt.Errorf("invoke answered %s, want struct", xmlrpc.TypeName(v))
	}
	var inv spillway.Invocation
	inv.Result = m["result"]
	route, ok := m["route"].(string)
	if !ok {
		return spillway.Invocation{}, errors.New("invoke answer has no route string")
	}
	inv.Route = spillway.Route(route)
	inv.Worker, _ = m["worker"].(string)
	reason, _ := m["reason"].(string)
	inv.Reason = spillway.Reason(reason)
	switch d := m["duration_ms"].(type) {
	case float64:
		inv.Duration = time.Duration(d * float64(time.Millisecond))
	case int64:
		inv.Duration = time.Duration(d) * time.Millisecond
	}
	inv.ColdStart, _ = m["cold_start"].(bool)
	return inv, nil
}
