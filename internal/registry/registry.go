// Package registry keeps function records in Redis: the hash
// spillway:fn:<name> written by addfaas and read by lb, the legacy plain key
// <name> that the reference system's `SET faas <code>` wrote, and the
// spillway:updates channel that announces each publish.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/spillway-faas/spillway"
)

// Redis names. They are part of the cross-team contract (DESIGN.md §2).
const (
	// KeyPrefix prefixes the hash that holds a function record.
	KeyPrefix = "spillway:fn:"
	// UpdatesChannel carries the name of each function that was published.
	UpdatesChannel = "spillway:updates"
)

// ErrMalformedRecord is wrapped by Get and List when a hash in Redis is not a
// readable function record (no code, unknown style, bad version...).
var ErrMalformedRecord = errors.New("malformed function record")

// MaxNameLen bounds a function name. Names become part of Lambda function and
// API names ("spillway-<name>", at most 64 characters) and of container names,
// so they are short and use letters, digits, '-' and '_' only.
const MaxNameLen = 48

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// ValidateName reports whether name can name a function record.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("function name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("function name %q is longer than %d characters", name, MaxNameLen)
	case !nameRE.MatchString(name):
		return fmt.Errorf("function name %q may use only letters, digits, '-' and '_' (and must start with a letter or digit)", name)
	}
	return nil
}

// Key returns the Redis key of the hash that holds name's record.
func Key(name string) string { return KeyPrefix + name }

// SHA256 returns the hex sha256 of code, as records carry it.
func SHA256(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:])
}

// Options tune the connection. Zero values take the defaults noted.
type Options struct {
	Password string
	DB       int

	// ConnectTimeout bounds Dial as a whole, retries included (default 5s).
	ConnectTimeout time.Duration
	// DialTimeout bounds one TCP connect (default 1s).
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound each socket read and write of every
	// call (default 2s each), so no call hangs on a stuck server.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration

	// MinBackoff and MaxBackoff bound the wait between connection attempts,
	// in Dial and in a watcher that lost its subscription (defaults 100ms, 2s).
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// HealthInterval is how long a watcher waits in silence before it pings
	// the server to prove its subscription is alive (default 5s).
	HealthInterval time.Duration
	// ResyncInterval is how often a watcher re-reads the record even without
	// a message, which catches a legacy `SET <name>` (that announces nothing)
	// and any message pub/sub lost (default 30s; negative disables).
	ResyncInterval time.Duration

	// Logger receives one line per connection event; nil discards.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ConnectTimeout, 5*time.Second)
	def(&o.DialTimeout, time.Second)
	def(&o.ReadTimeout, 2*time.Second)
	def(&o.WriteTimeout, 2*time.Second)
	def(&o.MinBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 2*time.Second)
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	def(&o.HealthInterval, 5*time.Second)
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// backoff returns the wait before retry number attempt (0-based): doubling
// from MinBackoff, capped at MaxBackoff, with up to 20% jitter off the top so
// many clients restarted together do not reconnect in lockstep.
func (o Options) backoff(attempt int) time.Duration {
	d := o.MinBackoff
	for i := 0; i < attempt && d < o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.MaxBackoff)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// publishScript assigns the next version, writes the whole record and
// announces it, all in one atomic step: a reader never sees a version without
// its code, concurrent publishers never share a version, and the message
// cannot go out for a write that did not happen (or the reverse).
//
// KEYS[1] record hash; ARGV: name, code, style, handler, runtime, sha256,
// updated_at, channel, then pairs of an optional field and its value
// (idempotent, reuse_process, the settings): an empty value removes the
// field, so a publish stores exactly the options it was given. Returns the
// new version.
const publishScript = `
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1],
  'code', ARGV[2], 'style', ARGV[3], 'handler', ARGV[4], 'runtime', ARGV[5],
  'sha256', ARGV[6], 'updated_at', ARGV[7])
for i = 9, #ARGV, 2 do
  if ARGV[i+1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1])
  end
end
redis.call('PUBLISH', ARGV[8], ARGV[1])
return v
`

// deleteScript removes a record and announces it, in one atomic step.
// KEYS[1] record hash, KEYS[2] the legacy plain key of the same name;
// ARGV: channel, name. The legacy key goes too, when it is a string: left
// behind, Get would find the function again as version 0. Returns the hash's
// fields (flat) and the legacy code (false when none), or nil when there was
// neither.
const deleteScript = `
local h = redis.call('HGETALL', KEYS[1])
local legacy = false
if redis.call('TYPE', KEYS[2]).ok == 'string' then
  legacy = redis.call('GET', KEYS[2])
  if legacy == '' then legacy = false end
end
if #h == 0 and not legacy then
  return nil
end
if #h > 0 then redis.call('DEL', KEYS[1]) end
if legacy then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {h, legacy}
`

// Store reads and writes function records. It is safe for concurrent use.
type Store struct {
	addr    string
	opts    Options
	client  *redis.Client
	publish *redis.Script
	delete  *redis.Script
}

// Dial connects to the Redis server at addr, retrying with capped backoff
// until it answers PING, ctx ends, or opts.ConnectTimeout passes. The error
// names the address.
func Dial(ctx context.Context, addr string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	client := redis.NewClient(&redis.Options{
		Addr:                  addr,
		Password:              opts.Password,
		DB:                    opts.DB,
		DialTimeout:           opts.DialTimeout,
		DialerRetries:         1, // Dial and the watcher retry themselves, with backoff
		ReadTimeout:           opts.ReadTimeout,
		WriteTimeout:          opts.WriteTimeout,
		ContextTimeoutEnabled: true,
		PoolTimeout:           opts.DialTimeout + opts.ReadTimeout,
		MaxRetries:            1,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
	s := &Store{addr: addr, opts: opts, client: client, publish: redis.NewScript(publishScript),
		delete: redis.NewScript(deleteScript)}

	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	var cause error // the last failure that says more than "deadline exceeded"
	for attempt := 0; ; attempt++ {
		err := client.Ping(ctx).Err()
		if err != nil && (cause == nil || !errors.Is(err, context.DeadlineExceeded)) {
			cause = err
		}
		if err == nil {
			if attempt > 0 {
				opts.Logger.Info("connected to redis", "addr", addr, "attempts", attempt+1)
			}
			return s, nil
		}
		if isAuthError(err) {
			// A wrong or missing password does not heal by waiting.
			client.Close()
			return nil, fmt.Errorf("connect to redis at %s: authentication failed (check REDIS_PASSWORD): %w", addr, err)
		}
		if ctx.Err() == nil {
			t := time.NewTimer(opts.backoff(attempt))
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
			}
		}
		client.Close()
		if errors.Is(cause, context.DeadlineExceeded) || isTimeout(cause) {
			cause = fmt.Errorf("no answer to PING: %w", cause)
		}
		return nil, fmt.Errorf("connect to redis at %s: gave up after %s: %w",
			addr, time.Since(start).Round(100*time.Millisecond), cause)
	}
}

// Addr is the server address the store talks to.
func (s *Store) Addr() string { return s.addr }

// Client is the store's Redis connection, for other Redis state lb keeps
// (internal/cluster's lease and load reports) on the same server.
func (s *Store) Client() *redis.Client { return s.client }

// Close releases the connections. Watchers must be closed first.
func (s *Store) Close() error { return s.client.Close() }

// Publish writes fn as the newest version of fn.Name and announces it on
// UpdatesChannel, atomically. The record holds exactly the options and
// settings fn has: one unset now is removed even if an earlier version had
// it. Settings out of range (see CheckSettings) are refused. Publish fills in
// the SHA256, Version, UpdatedAt, Runtime (spillway.DefaultRuntime when
// empty) and, for handler style, the Handler (spillway.DefaultHandler when
// empty), and returns the stored record. It does not check that Code is
// valid Python: see package pysource.
func (s *Store) Publish(ctx context.Context, fn spillway.Function) (spillway.Function, error) {
	if err := ValidateName(fn.Name); err != nil {
		return spillway.Function{}, fmt.Errorf("publish function: %w", err)
	}
	if _, err := spillway.ParseStyle(string(fn.Style)); err != nil {
		return spillway.Function{}, fmt.Errorf("publish function %q: %w", fn.Name, err)
	}
	if fn.Code == "" {
		return spillway.Function{}, fmt.Errorf("publish function %q: code is empty", fn.Name)
	}
	if err := ValidateSettings(fn.Settings); err != nil {
		return spillway.Function{}, fmt.Errorf("publish function %q: %w", fn.Name, err)
	}
	if fn.Runtime == "" {
		fn.Runtime = spillway.DefaultRuntime
	}
	if fn.Style == spillway.StyleHandler && fn.Handler == "" {
		fn.Handler = spillway.DefaultHandler
	}
	fn.SHA256 = SHA256(fn.Code)
	fn.UpdatedAt = time.Now().UTC().Truncate(time.Second)

	args := []any{fn.Name, fn.Code, string(fn.Style), fn.Handler, fn.Runtime, fn.SHA256,
		fn.UpdatedAt.Format(time.RFC3339), UpdatesChannel,
		"idempotent", flagField(fn.Idempotent), "reuse_process", flagField(fn.ReuseProcess)}
	for _, f := range settingsFields(fn.Settings) {
		args = append(args, f)
	}
	v, err := s.publish.Run(ctx, s.client, []string{Key(fn.Name)}, args...).Int64()
	if err != nil {
		return spillway.Function{}, fmt.Errorf("publish function %q to redis at %s: %w", fn.Name, s.addr, err)
	}
	fn.Version = v
	return fn, nil
}

func flagField(b bool) string {
	if b {
		return "1"
	}
	return ""
}

// Get reads name's record: the hash spillway:fn:<name>, or else the legacy
// plain string key <name>, read as a script-style function with version 0.
// A missing record is an error wrapping spillway.ErrFunctionNotFound.
// SHA256 is always computed from the code read.
func (s *Store) Get(ctx context.Context, name string) (spillway.Function, error) {
	fn, err := s.getHash(ctx, name)
	if !errors.Is(err, spillway.ErrFunctionNotFound) {
		return fn, err
	}
	code, err := s.client.Get(ctx, name).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return spillway.Function{}, fmt.Errorf("get function %q: %w", name, spillway.ErrFunctionNotFound)
	case err != nil:
		return spillway.Function{}, fmt.Errorf("get function %q (legacy key) from redis at %s: %w", name, s.addr, err)
	case code == "":
		return spillway.Function{}, fmt.Errorf("get function %q: legacy key is empty: %w", name, spillway.ErrFunctionNotFound)
	}
	return legacyRecord(name, code), nil
}

// getHash reads name's hashed record only; without one it fails with an
// error wrapping spillway.ErrFunctionNotFound.
func (s *Store) getHash(ctx context.Context, name string) (spillway.Function, error) {
	if err := ValidateName(name); err != nil {
		return spillway.Function{}, fmt.Errorf("get function: %w", err)
	}
	h, err := s.client.HGetAll(ctx, Key(name)).Result()
	if err != nil {
		return spillway.Function{}, fmt.Errorf("get function %q from redis at %s: %w", name, s.addr, err)
	}
	if len(h) == 0 {
		return spillway.Function{}, fmt.Errorf("get function %q: %w", name, spillway.ErrFunctionNotFound)
	}
	return parseRecord(name, h, true)
}

func legacyRecord(name, code string) spillway.Function {
	return spillway.Function{
		Name:    name,
		Code:    code,
		Style:   spillway.StyleScript,
		Runtime: spillway.DefaultRuntime,
		SHA256:  SHA256(code),
	}
}

// Delete removes name's record (the hash, and the legacy plain key of that
// name if there is one) and announces it on UpdatesChannel, atomically, so
// that watchers learn it: a SetWatcher delivers a deletion; a VersionWatcher
// re-reads, finds nothing and delivers nothing. It returns the record as it
// was (only the name when it was unreadable). A function published again
// after its deletion starts again at version 1. A missing record is an error
// wrapping spillway.ErrFunctionNotFound.
func (s *Store) Delete(ctx context.Context, name string) (spillway.Function, error) {
	if err := ValidateName(name); err != nil {
		return spillway.Function{}, fmt.Errorf("delete function: %w", err)
	}
	res, err := s.delete.Run(ctx, s.client, []string{Key(name), name}, UpdatesChannel, name).Slice()
	switch {
	case errors.Is(err, redis.Nil):
		return spillway.Function{}, fmt.Errorf("delete function %q: %w", name, spillway.ErrFunctionNotFound)
	case err != nil:
		return spillway.Function{}, fmt.Errorf("delete function %q from redis at %s: %w", name, s.addr, err)
	case len(res) != 2:
		return spillway.Function{}, fmt.Errorf("delete function %q: unexpected reply %v", name, res)
	}
	if flat, _ := res[0].([]any); len(flat) > 0 {
		h := make(map[string]string, len(flat)/2)
		for i := 0; i+1 < len(flat); i += 2 {
			k, _ := flat[i].(string)
			v, _ := flat[i+1].(string)
			h[k] = v
		}
		fn, err := parseRecord(name, h, true)
		if err != nil {
			s.opts.Logger.Warn("deleted an unreadable function record", "function", name, "err", err)
			return spillway.Function{Name: name}, nil
		}
		return fn, nil
	}
	code, _ := res[1].(string)
	return legacyRecord(name, code), nil
}

// listFields are the hash fields List reads (everything but the code).
func listFields() []string {
	return []string{"style", "handler", "runtime", "sha256", "version", "updated_at", "idempotent", "reuse_process",
		FieldMin, FieldMax, FieldConcurrency, FieldTimeout}
}

// List returns every hashed record, sorted by name, without Code (SHA256 is
// the stored one). It walks the keyspace with SCAN, never KEYS. Legacy plain
// keys are not listed: nothing tells them apart from other string keys.
func (s *Store) List(ctx context.Context) ([]spillway.Function, error) {
	var out []spillway.Function
	err := s.scan(ctx, func(name string, fn spillway.Function, err error) error {
		if err != nil {
			return fmt.Errorf("list functions: %w", err)
		}
		out = append(out, fn)
		return nil
	})
	return out, err
}

// scan reads every hashed record without its code, in name order, and
// passes each to visit with its parse error (wrapping ErrMalformedRecord);
// visit's error stops the scan. A Redis error stops it too and is returned.
func (s *Store) scan(ctx context.Context, visit func(name string, fn spillway.Function, err error) error) error {
	var names []string
	iter := s.client.ScanType(ctx, 0, KeyPrefix+"*", 256, "hash").Iterator()
	for iter.Next(ctx) {
		names = append(names, strings.TrimPrefix(iter.Val(), KeyPrefix))
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("list functions in redis at %s: %w", s.addr, err)
	}
	sort.Strings(names)
	names = compactSorted(names) // SCAN may return a key twice

	fields := listFields()
	for _, name := range names {
		vals, err := s.client.HMGet(ctx, Key(name), fields...).Result()
		if err != nil {
			return fmt.Errorf("list functions: read %q from redis at %s: %w", name, s.addr, err)
		}
		h := make(map[string]string, len(fields))
		for i, f := range fields {
			if v, ok := vals[i].(string); ok {
				h[f] = v
			}
		}
		if len(h) == 0 {
			continue // deleted since SCAN saw it
		}
		fn, err := parseRecord(name, h, false)
		if err := visit(name, fn, err); err != nil {
			return err
		}
	}
	return nil
}

func compactSorted(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// parseRecord turns hash fields into a Function. withCode says the hash's
// code field was read (and must be there).
func parseRecord(name string, h map[string]string, withCode bool) (spillway.Function, error) {
	bad := func(format string, args ...any) (spillway.Function, error) {
		return spillway.Function{}, fmt.Errorf("record %s: %s: %w", Key(name), fmt.Sprintf(format, args...), ErrMalformedRecord)
	}
	fn := spillway.Function{
		Name:    name,
		Handler: h["handler"],
		Runtime: h["runtime"],
		SHA256:  h["sha256"],
	}
	if withCode {
		code, ok := h["code"]
		if !ok || code == "" {
			return bad("no code")
		}
		fn.Code = code
		fn.SHA256 = SHA256(code)
	}
	style, err := spillway.ParseStyle(h["style"])
	if err != nil {
		return bad("%v", err)
	}
	fn.Style = style
	if fn.Runtime == "" {
		fn.Runtime = spillway.DefaultRuntime
	}
	if v := h["version"]; v != "" {
		if fn.Version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return bad("version %q is not an integer", v)
		}
	}
	for field, flag := range map[string]*bool{"idempotent": &fn.Idempotent, "reuse_process": &fn.ReuseProcess} {
		switch v := h[field]; v {
		case "", "0", "false":
		case "1", "true":
			*flag = true
		default:
			return bad("%s %q is not 1 or 0", field, v)
		}
	}
	if u := h["updated_at"]; u != "" {
		if fn.UpdatedAt, err = time.Parse(time.RFC3339, u); err != nil {
			return bad("updated_at %q is not RFC 3339", u)
		}
	}
	if fn.Settings, err = parseSettings(h); err != nil {
		return bad("%v", err)
	}
	return fn, nil
}

// isAuthError reports Redis's answers to a missing or wrong password.
func isAuthError(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS") ||
		strings.Contains(msg, "without any password configured") || strings.Contains(msg, "invalid password")
}
