package loadgen

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
)

// Targets is Target for a comma-separated list of lb replicas (in --lb or
// LB_URL): each URL is checked and normalised.
func Targets(flagURL, fallback string) ([]string, error) {
	raw := flagURL
	if raw == "" {
		raw = fallback
	}
	if !strings.Contains(raw, ",") {
		t, err := Target(raw, "")
		if err != nil {
			return nil, err
		}
		return []string{t}, nil
	}
	var out []string
	for _, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		t, err := Target(part, "")
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("lb URL list %q names no URL", raw)
	}
	return out, nil
}

// Failover is an http.RoundTripper over several lb replicas. Each request
// goes to the replica that last answered, and moves on to the next (once
// around the list) only when that replica cannot have received the call:
//   - the connection was refused: nothing listens, nothing was sent;
//   - the connection was reset before any byte of an answer: the kernel
//     resets a connection only when data it holds was never read, so the
//     lb never read the whole call (a killed lb's connection still in its
//     listen queue, or an idle keep-alive connection it closed as the call
//     went out).
//
// Any other error — above all EOF, which is what a client sees when an lb
// read the call and then died — is returned as it is: that lb may have run
// the call, and resending it could run it twice.
type Failover struct {
	targets []*url.URL
	next    http.RoundTripper
	cur     atomic.Int64 // index of the replica in use
	moves   atomic.Int64 // times the client moved to another replica
}

var _ http.RoundTripper = (*Failover)(nil)

// NewFailover returns a Failover over targets (URLs as Targets returns
// them) on next.
func NewFailover(targets []string, next http.RoundTripper) (*Failover, error) {
	if len(targets) == 0 {
		return nil, errors.New("failover: no lb URL")
	}
	f := &Failover{next: next}
	for _, t := range targets {
		u, err := url.Parse(t)
		if err != nil {
			return nil, fmt.Errorf("lb URL %q: %w", t, err)
		}
		f.targets = append(f.targets, u)
	}
	return f, nil
}

// Moves is how many times requests moved to another replica.
func (f *Failover) Moves() int64 { return f.moves.Load() }

// RoundTrip sends req to the current replica, moving on only past refused
// connections.
func (f *Failover) RoundTrip(req *http.Request) (*http.Response, error) {
	n := int64(len(f.targets))
	start := f.cur.Load()
	var errs []error
	for i := range n {
		idx := (start + i) % n
		r, err := f.retarget(req, f.targets[idx], i > 0)
		if err != nil {
			return nil, err
		}
		var answered atomic.Bool
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			GotFirstResponseByte: func() { answered.Store(true) },
		}))
		resp, err := f.next.RoundTrip(r)
		if err == nil {
			if idx != start && f.cur.CompareAndSwap(start, idx) {
				f.moves.Add(1)
			}
			return resp, nil
		}
		if !neverReceived(err, answered.Load()) || req.Context().Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("every lb replica refused the connection: %w", errors.Join(errs...))
}

// neverReceived reports whether err proves the lb never read the call.
func neverReceived(err error, answered bool) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	return errors.Is(err, syscall.ECONNRESET) && !answered
}

// retarget copies req for target, with a fresh body for a second try.
func (f *Failover) retarget(req *http.Request, target *url.URL, again bool) (*http.Request, error) {
	r := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host, u.Path, u.RawPath = target.Scheme, target.Host, target.Path, target.RawPath
	if target.User != nil {
		u.User = target.User
	}
	r.URL = &u
	r.Host = ""
	if again && req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, errors.New("failover: the request body cannot be sent again")
		}
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("failover: rewind the request body: %w", err)
		}
		r.Body = body
	}
	return r, nil
}
