package workerapi

import (
	"context"
	"time"

	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// ClientOptions tune a Client's connections to its worker.
type ClientOptions struct {
	// DialTimeout bounds a TCP connect to the worker; 0 is the
	// xmlrpc transport's (5s).
	DialTimeout time.Duration
	// IdleConns is how many idle connections are kept to the worker:
	// about its concurrency. 0 is the xmlrpc transport's.
	IdleConns int
	// MaxResultBytes is MAX_RESULT_BYTES: the worker refuses a larger
	// result, and an answer larger than the XML of such a result is not
	// read (ErrResponseTooLarge). 0 keeps xmlrpc's response limit.
	MaxResultBytes int64
}

// Client calls one worker. Each Client has its own connections, reused
// across calls and dropped by CloseIdleConnections: a new container may
// get the address of an old one and must never be sent its connections.
// It is safe for concurrent use.
type Client struct {
	rpc   *xmlrpc.Client
	conns *xmlrpc.Conns
}

// NewClient returns a client of the worker at addr (host:port).
func NewClient(addr string, o ClientOptions) *Client {
	// The lean transport: each call on the caller's goroutine, one write
	// per request, no per-call allocations of headers.
	conns := xmlrpc.NewConns(addr, xmlrpc.ConnsOptions{DialTimeout: o.DialTimeout, MaxIdle: o.IdleConns})
	c := xmlrpc.NewClient("http://"+addr+"/", nil)
	c.Conns = conns
	// The XML of a result can be several times its JSON.
	c.MaxResponseBytes = max(xmlrpc.DefaultMaxResponseBytes, 8*o.MaxResultBytes)
	return &Client{rpc: c, conns: conns}
}

// Call runs call_function(param) and returns the function's result. The
// error is one of:
//   - a *Fault (errors.As): the worker answered with a fault, and
//     FaultError gives its domain error;
//   - an error wrapping ErrResponseTooLarge: the worker answered with more
//     than the client takes;
//   - any other error: the call did not complete (connection refused, cut,
//     bad HTTP) or ctx ended (the error then wraps ctx's).
func (c *Client) Call(ctx context.Context, param any) (any, error) {
	args := [1]any{param}
	var reply any
	if err := c.rpc.Call(ctx, MethodCallFunction, args[:], &reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// Health calls health().
func (c *Client) Health(ctx context.Context) (Health, error) {
	var reply any
	if err := c.rpc.Call(ctx, MethodHealth, nil, &reply); err != nil {
		return Health{}, err
	}
	return HealthFrom(reply)
}

// CloseIdleConnections drops the client's idle connections; calls in
// flight keep theirs.
func (c *Client) CloseIdleConnections() { c.conns.CloseIdleConnections() }

// Close drops every connection and interrupts the calls in flight, which
// fail at once (the worker left); later calls fail too.
func (c *Client) Close() { c.conns.Close() }
