package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeService is a ServiceBackend whose "engine" acts at once on Apply, as
// Swarm does: it starts replicas of the spec, rolls start first (the new
// replicas start, then the old ones stop), and on a scale-down picks the
// oldest replicas to stop, busy or not. A stopped replica keeps serving for
// stopDelay (WORKER_STOP_DELAY), then finishes its calls and exits.
// Remove kills a replica and the engine starts another in its slot.
type fakeService struct {
	t         testing.TB
	capacity  int
	stopDelay time.Duration

	mu       sync.Mutex
	replicas []*svcReplica
	nextID   int
	applies  []string // "<sha256> x<n>" per Apply
	removed  []string // ids passed to Remove
	gone     bool     // RemoveService ran
	wg       sync.WaitGroup
}

type svcReplica struct {
	id       string
	key      string
	w        *fakeWorker
	stopping bool
	created  time.Time
}

var _ ServiceBackend = (*fakeService)(nil)

func newFakeService(t *testing.T, capacity int) *fakeService {
	s := &fakeService{t: t, capacity: capacity, stopDelay: 150 * time.Millisecond}
	t.Cleanup(func() {
		s.wg.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, r := range s.replicas {
			r.w.kill()
			r.w.srv.Close()
		}
	})
	return s
}

func (s *fakeService) Start(context.Context, WorkerSpec) (Worker, error) {
	return Worker{}, errors.New("a service's replicas are set with Apply")
}

func (s *fakeService) startLocked(spec WorkerSpec) {
	s.nextID++
	id := fmt.Sprintf("task%d", s.nextID)
	s.replicas = append(s.replicas, &svcReplica{id: id, key: Key(spec.Function), created: time.Now(),
		w: newFakeWorker(fmt.Sprintf("faas.%d-v%d", s.nextID, spec.Function.Version), spec.Function, s.capacity)})
}

// stopLocked is the engine's stop: the worker serves for stopDelay, drains
// its calls, then exits and leaves the list.
func (s *fakeService) stopLocked(r *svcReplica) {
	r.stopping = true
	s.wg.Go(func() {
		time.Sleep(s.stopDelay)
		for deadline := time.Now().Add(10 * time.Second); r.w.inFlight.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		s.mu.Lock()
		s.replicas = slices.DeleteFunc(s.replicas, func(x *svcReplica) bool { return x == r })
		s.mu.Unlock()
		r.w.kill()
		r.w.srv.Close()
	})
}

func (s *fakeService) Apply(_ context.Context, spec WorkerSpec, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applies = append(s.applies, fmt.Sprintf("%s x%d", spec.Function.SHA256, n))
	key := Key(spec.Function)
	var current []*svcReplica
	for _, r := range s.replicas {
		if !r.stopping && r.key == key {
			current = append(current, r)
		}
	}
	for range n - len(current) {
		s.startLocked(spec)
	}
	for i := 0; i < len(current)-n; i++ {
		s.stopLocked(current[i])
	}
	for _, r := range s.replicas {
		if !r.stopping && r.key != key {
			s.stopLocked(r)
		}
	}
	return nil
}

func (s *fakeService) Remove(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = append(s.removed, id)
	i := slices.IndexFunc(s.replicas, func(r *svcReplica) bool { return r.id == id })
	if i < 0 {
		return nil
	}
	r := s.replicas[i]
	s.replicas = slices.Delete(s.replicas, i, i+1)
	r.w.kill()
	r.w.srv.Close()
	if !r.stopping {
		s.startLocked(WorkerSpec{Function: r.w.fn}) // the engine restarts the slot
	}
	return nil
}

func (s *fakeService) RemoveService(context.Context) error {
	s.mu.Lock()
	s.gone = true
	for _, r := range s.replicas {
		if !r.stopping {
			s.stopLocked(r)
		}
	}
	s.mu.Unlock()
	return nil
}

func (s *fakeService) List(context.Context) ([]Worker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Worker
	for _, r := range s.replicas {
		w := r.w.worker(r.id)
		w.Stopping = r.stopping
		w.Created = r.created
		out = append(out, w)
	}
	return out, nil
}

func (s *fakeService) lastApply() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.applies) == 0 {
		return ""
	}
	return s.applies[len(s.applies)-1]
}

func (s *fakeService) running(sha string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.replicas {
		if !r.stopping && r.w.fn.SHA256 == sha {
			n++
		}
	}
	return n
}

func serviceConfig(min, max, conc int) Config {
	c := testConfig(min, max, conc)
	c.FollowInterval = 30 * time.Millisecond
	return c
}

func openServicePool(t *testing.T, s *fakeService, cfg Config, controller bool) *Pool {
	t.Helper()
	p := New(s, cfg)
	p.SetController(controller)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = p.Leave(context.Background()) })
	return p
}

// load runs callers until stop is closed and counts calls and failures.
type load struct {
	stop            chan struct{}
	wg              sync.WaitGroup
	calls, failures atomic.Int64
}

func startLoad(t *testing.T, p *Pool, callers int, param string) *load {
	l := &load{stop: make(chan struct{})}
	for range callers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if _, _, err := call(t, p, param); err != nil {
					t.Errorf("call: %v", err)
					l.failures.Add(1)
				}
				l.calls.Add(1)
			}
		})
	}
	return l
}

func (l *load) end(t *testing.T, what string) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.failures.Load() != 0 || l.calls.Load() < 10 {
		t.Fatalf("%s: %d of %d calls failed", what, l.failures.Load(), l.calls.Load())
	}
}

// On a service the pool scales by the replica count, and a scale-down
// whose stopped replica is busy costs no call: the pool takes it out of
// rotation when the list shows it stopping, and it finishes its calls.
func TestServicePoolScalesByReplicas(t *testing.T) {
	s := newFakeService(t, 2)
	p := openServicePool(t, s, serviceConfig(2, 4, 2), true)
	if got := s.lastApply(); got != "sha-1 x2" {
		t.Fatalf("Open applied %q, want sha-1 x2", got)
	}
	p.Scale(4)
	eventually(t, 5*time.Second, "4 ready members", func() bool { return p.Snapshot().Ready == 4 })
	if got := s.lastApply(); got != "sha-1 x4" {
		t.Fatalf("Scale(4) applied %q", got)
	}
	l := startLoad(t, p, 6, "sleep:30")
	time.Sleep(200 * time.Millisecond)
	p.Scale(2)
	eventually(t, 5*time.Second, "2 replicas left", func() bool { return s.running("sha-1") == 2 })
	eventually(t, 5*time.Second, "the pool serves 2", func() bool { return len(p.Snapshot().Members) == 2 })
	time.Sleep(200 * time.Millisecond)
	l.end(t, "scale-down under load")
}

// A roll is one Apply of the new spec; the engine starts the new replicas
// first, and no call fails while the old ones stop.
func TestServicePoolRollsThroughTheEngine(t *testing.T) {
	s := newFakeService(t, 2)
	p := openServicePool(t, s, serviceConfig(2, 4, 2), true)
	l := startLoad(t, p, 4, "sleep:20")
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Roll(ctx, fnVersion(2)); err != nil {
		t.Fatalf("Roll: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	l.end(t, "roll")
	if got := s.lastApply(); got != "sha-2 x2" {
		t.Fatalf("the roll applied %q, want sha-2 x2", got)
	}
	for _, m := range p.Snapshot().Members {
		if m.SHA256 != "sha-2" {
			t.Errorf("after the roll: %+v", m)
		}
	}
}

// A follower lb never tells the service anything, and serves what it runs.
func TestServiceFollowerNeverApplies(t *testing.T) {
	s := newFakeService(t, 1)
	s.mu.Lock()
	s.startLocked(WorkerSpec{Function: fnVersion(1)})
	s.startLocked(WorkerSpec{Function: fnVersion(1)})
	s.mu.Unlock()
	p := openServicePool(t, s, serviceConfig(1, 4, 1), false)
	eventually(t, 5*time.Second, "the follower serves both replicas", func() bool { return p.Snapshot().Ready == 2 })
	p.Scale(4)
	time.Sleep(200 * time.Millisecond)
	if got := s.lastApply(); got != "" {
		t.Fatalf("a follower applied %q", got)
	}
	if _, _, err := call(t, p, "x"); err != nil {
		t.Fatal(err)
	}
}

// A replica that stops answering health is taken out of rotation, and the
// controller has the engine replace it (Remove); a follower does not.
func TestServicePoolReplacesASilentReplica(t *testing.T) {
	for _, controller := range []bool{true, false} {
		t.Run(fmt.Sprintf("controller=%v", controller), func(t *testing.T) {
			s := newFakeService(t, 1)
			s.mu.Lock()
			s.startLocked(WorkerSpec{Function: fnVersion(1)})
			s.startLocked(WorkerSpec{Function: fnVersion(1)})
			silent := s.replicas[0]
			s.mu.Unlock()
			p := openServicePool(t, s, serviceConfig(2, 2, 1), controller)
			eventually(t, 5*time.Second, "both served", func() bool { return p.Snapshot().Ready == 2 })
			silent.w.silent.Store(true)
			eventually(t, 5*time.Second, "the silent one out of rotation", func() bool { return p.Snapshot().Ready == 1 })
			time.Sleep(300 * time.Millisecond)
			s.mu.Lock()
			removed := slices.Clone(s.removed)
			s.mu.Unlock()
			if want := controller; slices.Contains(removed, silent.id) != want {
				t.Fatalf("Remove calls %v; want the silent %s replaced: %v", removed, silent.id, want)
			}
			if controller {
				eventually(t, 5*time.Second, "its replacement served", func() bool { return p.Snapshot().Ready == 2 })
			}
		})
	}
}

// Close of the controller's pool removes the service; Leave leaves it.
func TestServicePoolCloseRemovesTheService(t *testing.T) {
	for _, leave := range []bool{false, true} {
		s := newFakeService(t, 1)
		p := openServicePool(t, s, serviceConfig(1, 2, 1), true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if leave {
			err = p.Leave(ctx)
		} else {
			err = p.Close(ctx)
		}
		cancel()
		s.mu.Lock()
		gone := s.gone
		s.mu.Unlock()
		if err != nil || gone == leave {
			t.Fatalf("leave=%v: err %v, service removed %v", leave, err, gone)
		}
	}
}

// The starts of a service's workers are measured from the engine's
// creation of each to its first healthy probe; workers that ran before the
// pool opened are adopted, not counted as starts.
func TestServicePoolMeasuresStarts(t *testing.T) {
	s := newFakeService(t, 1)
	s.mu.Lock()
	s.startLocked(WorkerSpec{Function: fnVersion(1)}) // an earlier lb's
	s.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	p := New(s, serviceConfig(1, 3, 1))
	var starts atomic.Int64
	p.OnWorkerReady = func(d time.Duration) {
		if d <= 0 || d > 5*time.Second {
			t.Errorf("start took %v", d)
		}
		starts.Add(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Open(ctx, fnVersion(1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Leave(context.Background()) })
	p.Scale(3)
	eventually(t, 5*time.Second, "3 ready", func() bool { return p.Snapshot().Ready == 3 })
	if c := p.Snapshot().Counters; starts.Load() != 2 || c.Started != 2 || c.Adopted != 1 {
		t.Fatalf("starts reported %d, counters %+v; want 2 started, 1 adopted", starts.Load(), c)
	}
}
