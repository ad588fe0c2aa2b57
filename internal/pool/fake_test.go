package pool

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/workerapi"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// fakeBackend is a Backend of function fields.
type fakeBackend struct {
	StartFn  func(ctx context.Context, spec WorkerSpec) (Worker, error)
	RemoveFn func(ctx context.Context, id string) error
	ListFn   func(ctx context.Context) ([]Worker, error)
}

var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) Start(ctx context.Context, spec WorkerSpec) (Worker, error) {
	return f.StartFn(ctx, spec)
}
func (f *fakeBackend) Remove(ctx context.Context, id string) error { return f.RemoveFn(ctx, id) }
func (f *fakeBackend) List(ctx context.Context) ([]Worker, error)  { return f.ListFn(ctx) }

// fakeWorker is a real XML-RPC server on loopback that behaves like a
// worker: call_function(param) where param is "sleep:MS", "timeout",
// "raise" or anything else (echoed back with the worker's name).
type fakeWorker struct {
	name     string
	fn       spillway.Function
	srv      *httptest.Server
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	calls    atomic.Int64
	silent   atomic.Bool // health() hangs
	notReady atomic.Bool
}

func (w *fakeWorker) worker(id string) Worker {
	return Worker{ID: id, Name: w.name, Addr: w.srv.Listener.Addr().String(), Function: w.fn.Name,
		Version: w.fn.Version, SHA256: w.fn.SHA256, Style: w.fn.Style, Handler: w.fn.Handler, Running: true}
}

func newFakeWorker(name string, fn spillway.Function, capacity int) *fakeWorker {
	w := &fakeWorker{name: name, fn: fn}
	s := xmlrpc.NewServer()
	s.Register(workerapi.MethodHealth, "", func(ctx context.Context, _ []any) (any, error) {
		if w.silent.Load() {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return workerapi.Health{Ready: !w.notReady.Load(), SHA256: w.fn.SHA256, Version: w.fn.Version,
			InFlight: w.inFlight.Load(), Completed: w.calls.Load(), ColdStarts: 1}.Map(), nil
	})
	s.Register(workerapi.MethodCallFunction, "", func(ctx context.Context, params []any) (any, error) {
		n := w.inFlight.Add(1)
		defer w.inFlight.Add(-1)
		for {
			m := w.maxSeen.Load()
			if n <= m || w.maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		w.calls.Add(1)
		if n > int64(capacity) {
			return nil, fmt.Errorf("over capacity: %d calls at once", n)
		}
		param, _ := params[0].(string)
		switch {
		case strings.HasPrefix(param, "sleep:"):
			ms, _ := strconv.Atoi(strings.TrimPrefix(param, "sleep:"))
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case param == "busy":
			return nil, workerapi.BusyError(1)
		case param == "timeout":
			return nil, xmlrpc.NewFault(workerapi.FaultTimeout, "call passed LOCAL_TIMEOUT")
		case param == "raise":
			return nil, &spillway.FunctionError{Type: "ZeroDivisionError", Message: "division by zero"}
		}
		return w.name + ":" + param + ":" + w.fn.SHA256, nil
	})
	w.srv = httptest.NewServer(s)
	return w
}

// kill makes the worker vanish like a killed container: open connections
// are cut and new ones refused.
func (w *fakeWorker) kill() {
	w.srv.CloseClientConnections()
	w.srv.Listener.Close()
}

// fakeCluster starts fake workers for a fakeBackend.
type fakeCluster struct {
	t        testing.TB
	capacity int
	mu       sync.Mutex
	workers  map[string]*fakeWorker // by id
	nextID   int
	starts   atomic.Int64
	removes  atomic.Int64
	failNext atomic.Int64 // fail this many starts
	delay    time.Duration
}

func newFakeCluster(t testing.TB, capacity int) (*fakeCluster, *fakeBackend) {
	c := &fakeCluster{t: t, capacity: capacity, workers: map[string]*fakeWorker{}}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, w := range c.workers {
			w.srv.CloseClientConnections()
			w.srv.Close()
		}
	})
	b := &fakeBackend{
		StartFn: func(ctx context.Context, spec WorkerSpec) (Worker, error) {
			c.starts.Add(1)
			if c.failNext.Load() > 0 {
				c.failNext.Add(-1)
				return Worker{}, fmt.Errorf("fake start failure")
			}
			if c.delay > 0 {
				select {
				case <-time.After(c.delay):
				case <-ctx.Done():
					return Worker{}, ctx.Err()
				}
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			c.nextID++
			id := "id" + strconv.Itoa(c.nextID)
			w := newFakeWorker(fmt.Sprintf("w%d-v%d", c.nextID, spec.Function.Version), spec.Function, c.capacity)
			c.workers[id] = w
			return w.worker(id), nil
		},
		RemoveFn: func(ctx context.Context, id string) error {
			c.mu.Lock()
			w, ok := c.workers[id]
			delete(c.workers, id)
			c.mu.Unlock()
			if ok {
				c.removes.Add(1)
				w.srv.CloseClientConnections()
				w.srv.Close()
			}
			return nil
		},
		ListFn: func(ctx context.Context) ([]Worker, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			var out []Worker
			for id, w := range c.workers {
				out = append(out, w.worker(id))
			}
			return out, nil
		},
	}
	return c, b
}

func (c *fakeCluster) byName(name string) *fakeWorker {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		if w.name == name {
			return w
		}
	}
	return nil
}

func (c *fakeCluster) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.workers)
}

func fnVersion(v int64) spillway.Function {
	return spillway.Function{Name: "faas", Code: fmt.Sprintf("print(%d)", v), Style: spillway.StyleScript,
		SHA256: fmt.Sprintf("sha-%d", v), Version: v}
}

func testConfig(min, max, conc int) Config {
	return Config{Min: min, Max: max, Concurrency: conc, HealthInterval: 100 * time.Millisecond,
		HealthTimeout: 100 * time.Millisecond, HealthFailures: 2, StartTimeout: 5 * time.Second}
}

// openPool opens a pool and closes it when the test ends, checking that
// Close leaves no worker behind.
func openPool(t *testing.T, b Backend, c *fakeCluster, cfg Config, fn spillway.Function) *Pool {
	t.Helper()
	p := New(b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Open(ctx, fn); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if c != nil && c.count() != 0 {
			t.Errorf("%d workers left after Close", c.count())
		}
	})
	return p
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
