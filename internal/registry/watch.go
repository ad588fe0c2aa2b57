package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/spillway-faas/spillway"
)

// VersionWatcher follows one function's record and delivers each new version on
// Updates. Pub/sub is at-most-once (a message sent while the subscription is
// down is lost), so the watcher re-reads the record after every subscribe and
// resubscribe, and every Options.ResyncInterval; what it delivers is
// therefore the record as it is in Redis, never just what a message said.
//
// It survives Redis restarts: a lost subscription is retried with capped
// backoff (Options.MinBackoff..MaxBackoff) for as long as the watcher runs.
type VersionWatcher struct {
	owner
	store *Store
	name  string
	out   chan spillway.Function

	last spillway.Function // owned by run: the record delivered (or given) last
}

// Watch starts a watcher of name's record. have is the record the caller
// already runs (zero value for none): only records that differ from it in
// version or sha256 are delivered, and after that only records that differ
// from the last one delivered. A missing record is not delivered.
//
// The watcher stops when ctx ends or Close is called; either way Updates is
// closed once it has stopped.
func (s *Store) Watch(ctx context.Context, name string, have spillway.Function) *VersionWatcher {
	w := &VersionWatcher{
		store: s,
		name:  name,
		out:   make(chan spillway.Function, 1),
		last:  have,
	}
	w.start(ctx, func(ctx context.Context) {
		defer close(w.out)
		s.follow(ctx, w, s.opts.Logger.With("function", name, "addr", s.addr))
	})
	return w
}

// Updates delivers new records. It holds at most one pending record: if the
// reader is slow, a newer record replaces the one it has not taken yet, so the
// reader always gets the latest and the watcher never blocks on it.
func (w *VersionWatcher) Updates() <-chan spillway.Function { return w.out }

// owner runs a watcher's goroutine: Close cancels it and waits for it.
type owner struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// start runs run in a goroutine until ctx ends or Close is called.
func (o *owner) start(ctx context.Context, run func(context.Context)) {
	ctx, o.cancel = context.WithCancel(ctx)
	o.done = make(chan struct{})
	go func() {
		defer close(o.done)
		run(ctx)
	}()
}

// Close stops the watcher and waits for it to finish. It may be called more
// than once.
func (o *owner) Close() error {
	o.once.Do(o.cancel)
	<-o.done
	return nil
}

// message re-reads the record when the message names it.
func (w *VersionWatcher) message(ctx context.Context, name string) error {
	if name != w.name {
		return nil
	}
	return w.resync(ctx)
}

// follower is what a watcher does with UpdatesChannel: resync re-reads all
// it follows, after every (re)subscribe and every Options.ResyncInterval;
// message handles one message (the name of a function published or
// deleted). An error from either makes follow drop the subscription and
// make a new one, so it is for a failed connection, not a bad record.
type follower interface {
	resync(ctx context.Context) error
	message(ctx context.Context, name string) error
}

// follow feeds f from UpdatesChannel until ctx ends. A lost subscription is
// retried with capped backoff for as long as ctx lasts.
func (s *Store) follow(ctx context.Context, f follower, log *slog.Logger) {
	failures := 0
	for {
		subscribed, err := s.session(ctx, f)
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			failures = 0
		}
		wait := s.opts.backoff(failures)
		failures++
		if failures == 1 || failures%20 == 0 {
			log.Warn("function watch lost its subscription; retrying", "err", err, "failures", failures, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session subscribes, resyncs f, then passes it messages until the
// connection fails or ctx ends. subscribed reports whether it got as far as
// a confirmed subscription.
func (s *Store) session(ctx context.Context, f follower) (subscribed bool, err error) {
	opts := s.opts
	ps := s.client.Subscribe(ctx) // no channels yet: Subscribe below reports errors
	defer ps.Close()
	// Receive does not watch ctx; closing the PubSub unblocks it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()

	if err := ps.Subscribe(ctx, UpdatesChannel); err != nil {
		return false, fmt.Errorf("subscribe to %s: %w", UpdatesChannel, err)
	}
	if err := awaitSubscription(ctx, ps, opts.DialTimeout+opts.ReadTimeout); err != nil {
		return false, err
	}
	if err := f.resync(ctx); err != nil {
		return true, err
	}
	lastSync := time.Now()
	pingSent := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, opts.HealthInterval)
		if err != nil {
			if !isTimeout(err) || ctx.Err() != nil {
				return true, fmt.Errorf("receive from %s: %w", UpdatesChannel, err)
			}
			if pingSent {
				return true, fmt.Errorf("no answer to ping on %s within %s", UpdatesChannel, opts.HealthInterval)
			}
			if err := ps.Ping(ctx); err != nil {
				return true, fmt.Errorf("ping on %s: %w", UpdatesChannel, err)
			}
			pingSent = true
			if opts.ResyncInterval > 0 && time.Since(lastSync) >= opts.ResyncInterval {
				if err := f.resync(ctx); err != nil {
					return true, err
				}
				lastSync = time.Now()
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Pong:
			pingSent = false
		case *redis.Message:
			if err := f.message(ctx, m.Payload); err != nil {
				return true, err
			}
		case *redis.Subscription:
			// A resubscribe go-redis did by itself: messages may have been lost.
			if err := f.resync(ctx); err != nil {
				return true, err
			}
			lastSync = time.Now()
		}
	}
}

func awaitSubscription(ctx context.Context, ps *redis.PubSub, timeout time.Duration) error {
	msg, err := ps.ReceiveTimeout(ctx, timeout)
	if err != nil {
		return fmt.Errorf("confirm subscription to %s: %w", UpdatesChannel, err)
	}
	if s, ok := msg.(*redis.Subscription); !ok || s.Kind != "subscribe" {
		return fmt.Errorf("confirm subscription to %s: unexpected reply %v", UpdatesChannel, msg)
	}
	return nil
}

// resync reads the record and delivers it when it differs from the last one.
// A missing or malformed record is not delivered and is not a connection
// error; any other read error is returned so the session reconnects.
func (w *VersionWatcher) resync(ctx context.Context) error {
	fn, err := w.store.Get(ctx, w.name)
	if errors.Is(err, spillway.ErrFunctionNotFound) {
		return nil
	}
	if errors.Is(err, ErrMalformedRecord) {
		w.store.opts.Logger.Warn("function record unreadable; keeping the previous one", "function", w.name, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if fn.Version == w.last.Version && fn.SHA256 == w.last.SHA256 {
		return nil
	}
	w.last = fn
	w.deliver(fn)
	return nil
}

// deliver puts fn in the one-slot channel, replacing a record the reader has
// not taken yet. Only run sends, so after the drain the send cannot block.
func (w *VersionWatcher) deliver(fn spillway.Function) {
	select {
	case w.out <- fn:
		return
	default:
	}
	select {
	case <-w.out:
	default:
	}
	w.out <- fn
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
