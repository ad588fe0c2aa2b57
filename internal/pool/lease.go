package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/policy"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

var _ spillway.Lease = (*Lease)(nil)

// Lease is one call slot on one member. Every lease from Acquire or
// TryAcquire must be released exactly once; a second Release is a no-op
// that logs the bug.
type Lease struct {
	p        *Pool
	m        *member
	cold     bool
	released atomic.Bool
}

// Worker is the member's container name (invoke's `worker` field).
func (l *Lease) Worker() string { return l.m.name }

// ColdStart reports whether this is the member's first call since it
// started (or was adopted without having served any).
func (l *Lease) ColdStart() bool { return l.cold }

// Addr is the member's host:port.
func (l *Lease) Addr() string { return l.m.addr }

// Call runs call_function(param) on the leased member. A fault comes back
// as the domain error (spillway.ErrorFromFault: *spillway.FunctionError,
// spillway.ErrTimeout, ...), and the member stays in rotation. A busy
// answer (the worker runs its WORKER_CONCURRENCY calls for another lb
// replica) wraps spillway.ErrWorkerBusy: the member stays in rotation but
// is skipped for BusyBackoff. A transport
// failure (refused, reset, EOF, bad HTTP, container gone) ejects the member
// at once and returns an error wrapping spillway.ErrWorkerFailed: retry the
// call elsewhere. When ctx ends first, the error wraps ctx.Err().
func (l *Lease) Call(ctx context.Context, param any) (any, error) {
	m := l.m
	if l.released.Load() {
		return nil, fmt.Errorf("call on worker %s with a released lease", m.name)
	}
	if m.ctx.Err() != nil {
		return nil, fmt.Errorf("call worker %s: %w: it left the pool", m.name, spillway.ErrWorkerFailed)
	}
	// A member that leaves has its connections closed (closeConns), which
	// interrupts this call: no context of its own is needed for that.
	reply, err := m.client.Call(ctx, param)
	if err == nil {
		m.lastOK.Store(time.Now().UnixNano())
		return reply, nil
	}
	var f *workerapi.Fault
	if errors.As(err, &f) {
		m.lastOK.Store(time.Now().UnixNano())
		ferr := workerapi.FaultError(f)
		if errors.Is(ferr, spillway.ErrWorkerBusy) {
			// Another lb replica holds its slots: not a failure. Skip it
			// for a moment so the call goes elsewhere.
			l.p.markBusy(m)
			return nil, fmt.Errorf("worker %s: %w", m.name, ferr)
		}
		return nil, ferr
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("call worker %s: %w", m.name, context.Cause(ctx))
	}
	if m.ctx.Err() != nil {
		return nil, fmt.Errorf("call worker %s: %w: it left the pool during the call", m.name, spillway.ErrWorkerFailed)
	}
	if errors.Is(err, workerapi.ErrResponseTooLarge) {
		// The worker answered; its answer was too large to take. It stays
		// in rotation, and the call is not run again.
		m.lastOK.Store(time.Now().UnixNano())
		return nil, fmt.Errorf("call worker %s: result too large (MAX_RESULT_BYTES): %w: %w", m.name, err, spillway.ErrPayloadTooLarge)
	}
	l.p.fail(m, err)
	return nil, fmt.Errorf("call worker %s: %w: %w", m.name, spillway.ErrWorkerFailed, err)
}

// Release returns the slot. The next waiter (FIFO) gets it at once.
func (l *Lease) Release() {
	if !l.released.CompareAndSwap(false, true) {
		if l.p.log != nil {
			l.p.log.Error("bug: lease released twice", "worker", l.m.name)
		}
		return
	}
	p := l.p
	m := l.m
	// The common case takes no lock: a ready member, nobody waiting. The
	// decrement comes before both checks, and Acquire publishes a waiter
	// (and a drain the member's state) before it looks at the slots: so
	// either this Release sees the waiter (or the state) and takes the
	// lock below to hand the slot on, or the waiter (or the drain) sees
	// the free slot itself.
	n := m.inFlight.Add(-1)
	if n >= 0 && m.ready.Load() && p.nWaiters.Load() == 0 {
		return
	}
	p.mu.Lock()
	negative := n < 0
	if negative {
		m.inFlight.Add(1)
	}
	idle := false // the last call of a member out of rotation
	switch {
	case m.state == StateReady:
		p.grantLocked()
	case m.inFlight.Load() == 0:
		// A draining or failed member may now be removed; Close may be
		// waiting for the last call.
		idle = true
		p.notifyLocked()
	}
	gone := idle && (m.state == StateFailed || m.removing)
	p.mu.Unlock()
	if negative && p.log != nil {
		p.log.Error("bug: negative in-flight count", "worker", m.name)
	}
	if gone {
		m.closeConns()
	}
	if idle {
		p.poke()
	}
}

// Acquire waits, first come first served, for a free slot on a ready
// member and leases it. It fails with ctx's error when ctx ends first and
// with spillway.ErrUnavailable once the pool is closing.
func (p *Pool) Acquire(ctx context.Context) (spillway.Lease, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("acquire a worker: pool closed: %w", spillway.ErrUnavailable)
	}
	if len(p.waiters) == 0 {
		if m := p.pickLocked(); m != nil {
			l := p.leaseLocked(m)
			p.mu.Unlock()
			return l, nil
		}
	}
	w := &waiter{ch: make(chan struct{})}
	p.waiters = append(p.waiters, w)
	p.nWaiters.Store(int64(len(p.waiters)))
	// A Release that freed a slot without the lock (it saw no waiter
	// before this one was published) left it free: look again.
	p.grantLocked()
	p.mu.Unlock()

	select {
	case <-w.ch:
		if w.err != nil {
			return nil, w.err
		}
		return w.lease, nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	if w.done {
		// Granted while ctx ended: hand the slot on.
		p.mu.Unlock()
		if w.lease != nil {
			w.lease.Release()
		}
	} else {
		if i := slices.Index(p.waiters, w); i >= 0 {
			p.waiters = slices.Delete(p.waiters, i, i+1)
			p.nWaiters.Store(int64(len(p.waiters)))
		}
		p.mu.Unlock()
	}
	return nil, fmt.Errorf("wait for a free worker: %w", context.Cause(ctx))
}

// TryAcquire leases a free slot if one is free now and nobody is waiting
// for one; it never blocks.
func (p *Pool) TryAcquire() (spillway.Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.waiters) > 0 {
		return nil, false
	}
	m := p.pickLocked()
	if m == nil {
		return nil, false
	}
	return p.leaseLocked(m), true
}

// TryAcquireCounts is Counts and TryAcquire under one lock, the request
// path's one pool lock per call: the counts are those from before the
// lease, which the caller's placement decision reads.
func (p *Pool) TryAcquireCounts() (spillway.Lease, spillway.PoolCounts, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.countsLocked()
	if p.closed || len(p.waiters) > 0 {
		return nil, c, false
	}
	m := p.pickLocked()
	if m == nil {
		return nil, c, false
	}
	return p.leaseLocked(m), c, true
}

func (p *Pool) leaseLocked(m *member) *Lease {
	m.inFlight.Add(1)
	m.leases++
	return &Lease{p: p, m: m, cold: m.leases == 1 && m.completed == 0}
}

// grantLocked hands free slots to waiters in arrival order.
func (p *Pool) grantLocked() {
	for len(p.waiters) > 0 {
		m := p.pickLocked()
		if m == nil {
			return
		}
		w := p.waiters[0]
		p.waiters[0] = nil
		p.waiters = p.waiters[1:]
		p.nWaiters.Store(int64(len(p.waiters)))
		w.lease = p.leaseLocked(m)
		w.done = true
		close(w.ch)
	}
}

// pickLocked asks the scheduler for a ready member with a free slot, in
// the members' stable order; nil when all are full.
func (p *Pool) pickLocked() *member {
	p.candBuf = p.candBuf[:0]
	p.candIdx = p.candIdx[:0]
	var now time.Time
	for _, m := range p.members {
		if m.state == StateReady && !m.busyUntil.IsZero() {
			if now.IsZero() {
				now = time.Now()
			}
			if now.Before(m.busyUntil) {
				continue // it said busy a moment ago
			}
			m.busyUntil = time.Time{}
		}
		if m.state == StateReady {
			p.candBuf = append(p.candBuf, policy.Member{Name: m.name, InFlight: int(m.inFlight.Load()), Capacity: m.capacity})
			p.candIdx = append(p.candIdx, m)
		}
	}
	if len(p.candIdx) == 0 {
		return nil
	}
	i := -1
	if p.Scheduler != nil {
		i = p.Scheduler.Pick(p.candBuf)
	}
	if i >= 0 && i < len(p.candIdx) && int(p.candIdx[i].inFlight.Load()) < p.candIdx[i].capacity {
		return p.candIdx[i]
	}
	for _, m := range p.candIdx { // the scheduler erred or saw all full
		if int(m.inFlight.Load()) < m.capacity {
			return m
		}
	}
	return nil
}

// BusyBackoff is how long a member that answered busy is skipped: about one
// short call, so its slots are tried again soon.
const BusyBackoff = 50 * time.Millisecond

// markBusy skips m for BusyBackoff, then offers its slots to waiters again.
func (p *Pool) markBusy(m *member) {
	p.mu.Lock()
	p.counters.Busy++
	m.busyUntil = time.Now().Add(BusyBackoff)
	wake := !m.busyWake && !p.closed
	if wake {
		m.busyWake = true
		p.wg.Add(1) // under mu: Close sets closed under mu before it waits
	}
	p.mu.Unlock()
	if !wake {
		return
	}
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(BusyBackoff)
		defer t.Stop()
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		m.busyWake = false
		if m.state == StateReady {
			p.grantLocked()
		}
	}()
}
