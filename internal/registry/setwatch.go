package registry

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/spillway-faas/spillway"
)

// Change is one change to the set of functions: a record published (the
// whole record, code included) or a record deleted (Deleted, with the last
// record delivered for that name, without its code).
type Change struct {
	Function spillway.Function
	Deleted  bool
}

// changesBuffer is how many changes wait for a reader before the watcher
// waits for it.
const changesBuffer = 16

// SetWatcher follows every hashed function record (what List lists, plus
// the legacy plain keys it was asked to follow) and delivers each change on
// Changes. Like
// VersionWatcher it re-reads after every subscribe and resubscribe, and
// every Options.ResyncInterval: what it delivers is the registry as it is,
// and what changed while it was disconnected (a new version, a deletion)
// arrives when it is back.
type SetWatcher struct {
	owner
	store *Store
	out   chan Change

	legacy map[string]bool              // names whose legacy plain key counts too; read-only
	known  map[string]spillway.Function // owned by run: the last record delivered per name, without code
}

// WatchAll starts a watcher of the whole registry. It first delivers one
// Change per existing function, then each publish and each deletion, in
// order for each name. Records that cannot be read are logged and skipped
// (a function already delivered keeps its last record).
//
// Legacy plain keys are not in the set (nothing tells them apart from other
// string keys), except those of the names in legacy: each of those is read
// as Get reads it, so lb's default function still works when published the
// reference system's way (`SET faas <code>`). Such a SET announces nothing:
// the periodic re-read (Options.ResyncInterval) finds it.
//
// Changes are not coalesced: when the reader falls more than a few behind,
// the watcher waits for it (or for ctx or Close), and catches up on what it
// missed meanwhile by re-reading once it is back. The watcher stops when
// ctx ends or Close is called; either way Changes is closed once it has
// stopped.
func (s *Store) WatchAll(ctx context.Context, legacy ...string) *SetWatcher {
	w := &SetWatcher{
		store:  s,
		out:    make(chan Change, changesBuffer),
		legacy: map[string]bool{},
		known:  map[string]spillway.Function{},
	}
	for _, name := range legacy {
		w.legacy[name] = true
	}
	w.start(ctx, func(ctx context.Context) {
		defer close(w.out)
		s.follow(ctx, w, s.opts.Logger.With("function", "*", "addr", s.addr))
	})
	return w
}

// Changes delivers the changes.
func (w *SetWatcher) Changes() <-chan Change { return w.out }

// resync lists the registry and delivers what differs from what was
// delivered: records new or changed (read whole), and deletions.
func (w *SetWatcher) resync(ctx context.Context) error {
	listed := make(map[string]bool, len(w.known))
	err := w.store.scan(ctx, func(name string, fn spillway.Function, err error) error {
		listed[name] = true // an unreadable record is still there
		if err != nil {
			w.store.opts.Logger.Warn("function record unreadable; skipping it", "function", name, "err", err)
			return nil
		}
		if last, ok := w.known[name]; ok && sameVersion(last, fn) {
			return nil
		}
		return w.message(ctx, name)
	})
	if err != nil {
		return err
	}
	// Names not listed are re-read one by one: a followed legacy key may
	// still hold them; otherwise they were deleted.
	var unlisted []string
	for name := range w.legacy {
		if !listed[name] {
			unlisted = append(unlisted, name)
		}
	}
	for name := range w.known {
		if !listed[name] && !w.legacy[name] {
			unlisted = append(unlisted, name)
		}
	}
	sort.Strings(unlisted)
	for _, name := range unlisted {
		if err := w.message(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// message re-reads the record named and delivers it, or its deletion, when
// it differs from what was delivered last.
func (w *SetWatcher) message(ctx context.Context, name string) error {
	if ValidateName(name) != nil {
		return nil // not a function's name: nothing of ours
	}
	read := w.store.getHash
	if w.legacy[name] {
		read = w.store.Get
	}
	fn, err := read(ctx, name)
	last, known := w.known[name]
	switch {
	case errors.Is(err, spillway.ErrFunctionNotFound):
		if !known {
			return nil
		}
		if err := w.deliver(ctx, Change{Function: last, Deleted: true}); err != nil {
			return err
		}
		delete(w.known, name)
		return nil
	case errors.Is(err, ErrMalformedRecord) || isReply(err):
		// A bad record, or an error Redis answered (a followed legacy name
		// that holds a list...): not the connection's fault.
		w.store.opts.Logger.Warn("function record unreadable; keeping the previous one", "function", name, "err", err)
		return nil
	case err != nil:
		return err
	case known && sameVersion(last, fn):
		return nil
	}
	if err := w.deliver(ctx, Change{Function: fn}); err != nil {
		return err
	}
	fn.Code = ""
	w.known[name] = fn
	return nil
}

// deliver waits until the reader takes c or ctx ends.
func (w *SetWatcher) deliver(ctx context.Context, c Change) error {
	select {
	case w.out <- c:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("deliver a change of %q: %w", c.Function.Name, ctx.Err())
	}
}

// sameVersion reports whether a and b are the same publish of a record. The
// time tells apart a function deleted and published again, which starts
// again at version 1.
func sameVersion(a, b spillway.Function) bool {
	return a.Version == b.Version && a.SHA256 == b.SHA256 && a.UpdatedAt.Equal(b.UpdatedAt)
}

// isReply reports an error that Redis answered, as opposed to a failed
// connection.
func isReply(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}
