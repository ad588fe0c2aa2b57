package xmlrpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	kolo "github.com/kolo/xmlrpc"
)

// ErrResponseTooLarge is wrapped by Call when the answer is over
// MaxResponseBytes: the server is fine, its answer was too big to take.
var ErrResponseTooLarge = errors.New("response body too large")

// DefaultMaxResponseBytes is the response body limit when
// Client.MaxResponseBytes is 0.
const DefaultMaxResponseBytes = 64 << 20

// Client calls one XML-RPC endpoint. It is safe for concurrent use; set its
// fields before the first call.
type Client struct {
	// URL is the endpoint, e.g. http://127.0.0.1:8001/.
	URL string
	// HTTP sends the requests; its Transport keeps connections alive.
	HTTP *http.Client
	// Header is added to every request (e.g. Authorization); may be nil.
	Header http.Header
	// MaxResponseBytes limits a response body; 0 means DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// Conns, when set, carries the calls instead of HTTP: a leaner client
	// for many small calls to one host (URL then only names it in errors).
	Conns *Conns
}

// NewClient returns a client for url. A nil hc gets a client of its own whose
// transport keeps up to 256 idle connections to the host (no overall
// timeout: give each Call a context deadline).
func NewClient(url string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: NewTransport()}
	}
	return &Client{URL: url, HTTP: hc}
}

// NewTransport returns an http.Transport tuned for many small calls to few
// hosts: keep-alive with a deep idle pool, no proxy from the environment.
func NewTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // the call's context bounds it
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// SetBearerToken sends "Authorization: Bearer token" with every call.
func (c *Client) SetBearerToken(token string) {
	if c.Header == nil {
		c.Header = http.Header{}
	}
	c.Header.Set("Authorization", "Bearer "+token)
}

// SetBasicAuth sends HTTP basic credentials with every call.
func (c *Client) SetBasicAuth(user, password string) {
	if c.Header == nil {
		c.Header = http.Header{}
	}
	c.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
}

// Call calls method with args and stores the result in reply, a pointer
// (nil to discard the result). *any receives the decoded value as the
// package doc describes; any other pointer (a struct with `xmlrpc:"name"`
// tags, a map, a string, ...) is filled by github.com/kolo/xmlrpc's decoder.
// A fault from the server comes back as *Fault; other errors say which
// call failed and how, and wrap the context's error when it ended the call.
func (c *Client) Call(ctx context.Context, method string, args []any, reply any) error {
	buf := getBuf()
	defer putBuf(buf)
	body, err := AppendCall((*buf)[:0], method, args)
	if err != nil {
		return fmt.Errorf("xmlrpc call %s: %w", method, err)
	}
	*buf = body[:0]

	var respBody []byte
	if c.Conns != nil {
		out := getBuf()
		defer putBuf(out)
		var status int
		status, *out, err = c.Conns.post(ctx, c.Header, body, c.limit(), (*out)[:0])
		respBody = *out
		if err != nil {
			if cerr := context.Cause(ctx); cerr != nil && ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", cerr, err)
			}
			var se *errSend
			if errors.As(err, &se) {
				return fmt.Errorf("xmlrpc call %s: send to %s: %w", method, c.URL, err)
			}
			return fmt.Errorf("xmlrpc call %s: read response from %s: %w", method, c.URL, err)
		}
		if status != http.StatusOK {
			return fmt.Errorf("xmlrpc call %s: %s answered HTTP %d: %s", method, c.URL, status, clip(bytes.TrimSpace(respBody)))
		}
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("xmlrpc call %s: build request for %s: %w", method, c.URL, err)
		}
		req.Header.Set("Content-Type", "text/xml")
		for k, vs := range c.Header {
			req.Header[k] = vs
		}
		hc := c.HTTP
		if hc == nil {
			hc = http.DefaultClient
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("xmlrpc call %s: send to %s: %w", method, c.URL, err)
		}
		var readErr error
		respBody, readErr = c.readResponse(resp)
		if readErr != nil {
			return fmt.Errorf("xmlrpc call %s: read response from %s: %w", method, c.URL, readErr)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("xmlrpc call %s: %s answered HTTP %d: %s", method, c.URL, resp.StatusCode, clip(bytes.TrimSpace(respBody)))
		}
	}

	v, err := DecodeResponse(respBody)
	if err != nil {
		if f, ok := IsRemoteFault(err); ok {
			return f
		}
		return fmt.Errorf("xmlrpc call %s: decode response from %s: %w", method, c.URL, err)
	}
	switch r := reply.(type) {
	case nil:
	case *any:
		*r = v
	default:
		if err := kolo.Response(respBody).Unmarshal(reply); err != nil {
			return fmt.Errorf("xmlrpc call %s: decode response from %s into %T: %w", method, c.URL, reply, err)
		}
	}
	return nil
}

// readResponse reads the body up to the limit, then drains (bounded) and
// closes it so the connection can be reused.
func (c *Client) readResponse(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	limit := c.limit()
	var b []byte
	if resp.ContentLength > 0 && resp.ContentLength <= limit {
		b = make([]byte, 0, resp.ContentLength)
	}
	w := bytes.NewBuffer(b)
	n, err := io.Copy(w, io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("connection closed after %d bytes: %w", n, err)
		}
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%w: over %s bytes", ErrResponseTooLarge, strconv.FormatInt(limit, 10))
	}
	return w.Bytes(), nil
}

func (c *Client) limit() int64 {
	if c.MaxResponseBytes <= 0 {
		return DefaultMaxResponseBytes
	}
	return c.MaxResponseBytes
}
