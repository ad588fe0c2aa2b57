// Package cluster lets several lb replicas of one pool share it: a Redis
// lease elects the one controller (it scales, rolls and deploys), and each
// replica reports its load so the controller sizes the pool for all of them.
//
// Redis names (a contract between replicas):
//
//	spillway:leader:<pool>       the lease: "<lb_id> <generation>", set only
//	                             if absent, with an expiry, renewed each tick
//	spillway:leader:<pool>:gen   the generation counter, one up per new holder
//	spillway:lbs:<pool>          set of replica ids that reported
//	spillway:lb:<pool>:<lb_id>   one replica's report (JSON), with an expiry
//	spillway:cloud:<pool>:<fn>   the controller's cloud deployment of a function (fenced write)
package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LeaderKey is the lease key of pool.
func LeaderKey(pool string) string { return "spillway:leader:" + pool }

// ErrNotController is returned by Lease.Check (and wrapped by fenced
// actions) when this replica does not hold the lease of the generation it
// acted under.
var ErrNotController = errors.New("not the controller")

// acquireScript sets the lease only if it is absent (SET NX PX) and then
// takes the next generation, in one atomic step.
var acquireScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[2]) then
  return 0
end
local gen = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. gen, 'XX', 'PX', ARGV[2])
return gen
`)

// renewScript extends the lease only if it still holds our value
// (compare-and-extend): a holder whose lease expired and was taken cannot
// renew the new holder's lease.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the lease only if it holds our value.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Lease is one replica's view of the controller lease of a pool. It is
// safe for concurrent use.
type Lease struct {
	rdb redis.Scripter
	key string
	id  string
	ttl time.Duration

	mu    sync.Mutex // guards gen and until
	gen   int64      // generation held; 0 when not held
	until time.Time  // local deadline of the lease (renewal time + ttl)
}

// NewLease returns the lease of pool for the replica id. ttl is how long a
// holder that stops renewing keeps it.
func NewLease(rdb redis.Scripter, pool, id string, ttl time.Duration) *Lease {
	return &Lease{rdb: rdb, key: LeaderKey(pool), id: id, ttl: ttl}
}

func (l *Lease) value(gen int64) string { return l.id + " " + strconv.FormatInt(gen, 10) }

// Tick takes the lease if it is free, or renews it if held; it returns
// whether this replica holds it afterwards. now is when the tick started
// (the local deadline is counted from it).
func (l *Lease) Tick(ctx context.Context, now time.Time) (bool, error) {
	l.mu.Lock()
	gen := l.gen
	l.mu.Unlock()
	ms := strconv.FormatInt(l.ttl.Milliseconds(), 10)
	if gen != 0 {
		n, err := renewScript.Run(ctx, l.rdb, []string{l.key}, l.value(gen), ms).Int64()
		if err != nil {
			// Unknown outcome: keep the lease until its local deadline.
			return l.Held(now), fmt.Errorf("renew lease %s: %w", l.key, err)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if n == 1 {
			l.until = now.Add(l.ttl)
			return true, nil
		}
		l.gen, l.until = 0, time.Time{}
		return false, nil
	}
	g, err := acquireScript.Run(ctx, l.rdb, []string{l.key, l.key + ":gen"}, l.id, ms).Int64()
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", l.key, err)
	}
	if g == 0 {
		return false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen, l.until = g, now.Add(l.ttl)
	return true, nil
}

// Held reports whether the lease is held at now by the local clock (it
// was renewed less than ttl ago).
func (l *Lease) Held(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen != 0 && now.Before(l.until)
}

// Generation is the generation held, 0 when none.
func (l *Lease) Generation() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// Check is the fence of an action that changes shared state: it fails
// with ErrNotController unless Redis still holds this replica's lease of
// generation gen.
func (l *Lease) Check(ctx context.Context, rdb redis.StringCmdable, gen int64) error {
	if gen == 0 {
		return fmt.Errorf("lease %s: %w", l.key, ErrNotController)
	}
	v, err := rdb.Get(ctx, l.key).Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("lease %s expired: %w", l.key, ErrNotController)
	}
	if err != nil {
		return fmt.Errorf("read lease %s: %w", l.key, err)
	}
	if v != l.value(gen) {
		return fmt.Errorf("lease %s is %q, not generation %d of %s: %w", l.key, v, gen, l.id, ErrNotController)
	}
	return nil
}

// Release gives the lease up if held, so another replica takes it on its
// next tick instead of waiting for the expiry.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	gen := l.gen
	l.gen, l.until = 0, time.Time{}
	l.mu.Unlock()
	if gen == 0 {
		return nil
	}
	if err := releaseScript.Run(ctx, l.rdb, []string{l.key}, l.value(gen)).Err(); err != nil {
		return fmt.Errorf("release lease %s: %w", l.key, err)
	}
	return nil
}

// Holder reads who holds the lease of pool: its lb_id and generation, or
// "" when it is free.
func Holder(ctx context.Context, rdb redis.StringCmdable, pool string) (string, int64, error) {
	v, err := rdb.Get(ctx, LeaderKey(pool)).Result()
	if errors.Is(err, redis.Nil) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("read lease of %s: %w", pool, err)
	}
	id, g, _ := strings.Cut(v, " ")
	gen, _ := strconv.ParseInt(g, 10, 64)
	return id, gen, nil
}
