package xmlrpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Conns is a lean HTTP/1.1 client of one host, for many small XML-RPC
// calls: lb's calls to a worker. Each call runs on the caller's goroutine:
// it takes an idle keep-alive connection (or dials one), writes the request
// head and body in one system call, and reads the answer with a buffer the
// connection keeps. There are no per-connection goroutines, and nothing is
// allocated per call but what the answer needs. It speaks only what such a
// call needs: POST, a Content-Length or chunked answer, keep-alive or
// close; no proxies, TLS, redirects or compression.
//
// A connection that an ended context interrupted, that saw any error, or
// whose answer said "Connection: close" is closed, never reused. A request
// is sent again on a new connection only when not one byte of it could be
// written to a reused connection (the server had closed it), as net/http
// does; never once any of it was sent, so a call runs at most once.
//
// Conns is safe for concurrent use. Use it through Client.Conns.
type Conns struct {
	addr        string
	path        string
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex // guards idle, active, gen and closed
	idle   []*pconn   // most recently used last
	active map[*pconn]struct{}
	gen    uint64 // bumped by CloseIdleConnections
	closed bool
}

// ConnsOptions tune Conns; zero values take the defaults.
type ConnsOptions struct {
	// DialTimeout bounds a TCP connect (5s).
	DialTimeout time.Duration
	// MaxIdle is how many idle connections are kept (64).
	MaxIdle int
	// IdleTimeout drops a connection idle longer than this (30s); keep it
	// below the server's own idle timeout so that a connection is never
	// reused just as the server closes it.
	IdleTimeout time.Duration
}

// NewConns returns a client of the HTTP server at addr (host:port) whose
// XML-RPC endpoint is "/".
func NewConns(addr string, o ConnsOptions) *Conns {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = 64
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	return &Conns{addr: addr, path: "/", dial: d.DialContext, maxIdle: o.MaxIdle, idleTimeout: o.IdleTimeout,
		active: map[*pconn]struct{}{}}
}

// ErrConnsClosed is the error of a call made after Close.
var ErrConnsClosed = errors.New("connections closed")

// Close closes the idle connections and interrupts the calls in flight
// (they fail at once); later calls fail with ErrConnsClosed.
func (c *Conns) Close() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.gen++
	c.closed = true
	for pc := range c.active {
		pc.abort()
	}
	c.mu.Unlock()
	for _, pc := range idle {
		_ = pc.c.Close()
	}
}

// pconn is one connection and its buffers.
type pconn struct {
	c        net.Conn
	br       *bufio.Reader
	head     []byte // request head, rebuilt per call in place
	gen      uint64
	lastUsed time.Time
	reused   bool
}

// abort makes the connection's pending and next reads and writes fail at
// once: an ended context's way to interrupt a call.
func (pc *pconn) abort() { _ = pc.c.SetDeadline(aLongTimeAgo) }

var aLongTimeAgo = time.Unix(1, 0)

// CloseIdleConnections closes the idle connections; connections in use are
// closed when their call ends instead of being kept.
func (c *Conns) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.gen++
	c.mu.Unlock()
	for _, pc := range idle {
		_ = pc.c.Close()
	}
}

// get takes the most recently used idle connection that is young enough,
// or dials a new one; either is counted in use.
func (c *Conns) get(ctx context.Context) (*pconn, error) {
	now := time.Now()
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return nil, ErrConnsClosed
		}
		if len(c.idle) == 0 {
			break
		}
		pc := c.idle[len(c.idle)-1]
		c.idle[len(c.idle)-1] = nil
		c.idle = c.idle[:len(c.idle)-1]
		idleFor := now.Sub(pc.lastUsed)
		if idleFor >= c.idleTimeout {
			_ = pc.c.Close()
			continue
		}
		c.active[pc] = struct{}{}
		c.mu.Unlock()
		// Under load a connection comes back within microseconds; one
		// that waited longer may have been closed by the server (it
		// shut down, say): look before sending on it.
		if idleFor < liveCheckAfter || peerOpen(pc.c) {
			pc.reused = true
			return pc, nil
		}
		c.drop(pc)
		c.mu.Lock()
	}
	gen := c.gen
	c.mu.Unlock()
	nc, err := c.dial(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	return c.activate(&pconn{c: nc, br: bufio.NewReaderSize(nc, 4096), gen: gen})
}

// activate counts pc among the connections in use, which Close
// interrupts.
func (c *Conns) activate(pc *pconn) (*pconn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = pc.c.Close()
		return nil, ErrConnsClosed
	}
	c.active[pc] = struct{}{}
	return pc, nil
}

// drop closes pc, which is in use.
func (c *Conns) drop(pc *pconn) {
	c.mu.Lock()
	delete(c.active, pc)
	c.mu.Unlock()
	_ = pc.c.Close()
}

// liveCheckAfter is how long a connection may idle before get checks that
// the server has not closed it.
const liveCheckAfter = 100 * time.Millisecond

// peerOpen reports whether the server has neither closed c nor sent
// anything unasked on it, without waiting: a non-blocking peek.
func peerOpen(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && open
}

// put keeps pc for the next call, or closes it.
func (c *Conns) put(pc *pconn) {
	pc.lastUsed = time.Now()
	c.mu.Lock()
	delete(c.active, pc)
	if pc.gen == c.gen && len(c.idle) < c.maxIdle {
		c.idle = append(c.idle, pc)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	_ = pc.c.Close()
}

// errSend marks an error before any of the answer arrived.
type errSend struct{ err error }

func (e *errSend) Error() string { return e.err.Error() }
func (e *errSend) Unwrap() error { return e.err }

// post sends body and appends the answer's body to dst. A non-200 status
// comes back with its body and no error. Errors before the answer began
// are *errSend.
func (c *Conns) post(ctx context.Context, hdr http.Header, body []byte, limit int64, dst []byte) (status int, out []byte, err error) {
	for attempt := 0; ; attempt++ {
		pc, err := c.get(ctx)
		if err != nil {
			return 0, dst, &errSend{err}
		}
		status, out, retry, err := c.roundTrip(ctx, pc, hdr, body, limit, dst)
		if retry && attempt == 0 && ctx.Err() == nil {
			continue // a reused connection the server had closed: not sent
		}
		return status, out, err
	}
}

func (c *Conns) roundTrip(ctx context.Context, pc *pconn, hdr http.Header, body []byte, limit int64, dst []byte) (status int, out []byte, retry bool, err error) {
	stop := func() bool { return true }
	if ctx.Done() != nil {
		if err := ctx.Err(); err != nil {
			c.put(pc)
			return 0, dst, false, &errSend{err}
		}
		stop = context.AfterFunc(ctx, pc.abort)
	}
	keep := false
	defer func() {
		// The abort ran (or runs now): the connection's deadline is spent.
		if !stop() || !keep || err != nil {
			c.drop(pc)
			return
		}
		c.put(pc)
	}()

	pc.head = appendRequestHead(pc.head[:0], c.path, c.addr, hdr, len(body))
	var n int64
	var werr error
	if len(body) <= maxCopiedBody {
		// One plain write: a copy of a small body costs less than writev.
		pc.head = append(pc.head, body...)
		var m int
		m, werr = pc.c.Write(pc.head)
		n = int64(m)
		if cap(pc.head) > 4*maxCopiedBody {
			pc.head = nil
		}
	} else {
		bufs := net.Buffers{pc.head, body}
		n, werr = bufs.WriteTo(pc.c)
	}
	if werr != nil {
		if n == 0 && pc.reused {
			return 0, dst, true, &errSend{werr}
		}
		// The server may have answered before reading the whole request
		// (it refuses a body over its limit) and closed the connection:
		// that answer, if it came, is the call's, as net/http takes it too.
		if status, out, ok := readEarlyAnswer(pc, limit, dst); ok {
			return status, out, false, nil
		}
		return 0, dst, false, &errSend{werr}
	}
	status, clen, chunked, closeAfter, err := readResponseHead(pc.br)
	if err != nil {
		return 0, dst, false, &errSend{err}
	}
	out, err = readResponseBody(pc.br, clen, chunked, limit, dst)
	if err != nil {
		return status, out, false, err
	}
	keep = !closeAfter && (clen >= 0 || chunked)
	return status, out, false, nil
}

// earlyAnswerWait bounds the wait for an answer the server sent before it
// stopped reading the request.
const earlyAnswerWait = 100 * time.Millisecond

// readEarlyAnswer reads a whole answer that is already on its way after a
// failed write; ok=false when there is none.
func readEarlyAnswer(pc *pconn, limit int64, dst []byte) (status int, out []byte, ok bool) {
	if err := pc.c.SetReadDeadline(time.Now().Add(earlyAnswerWait)); err != nil {
		return 0, dst, false
	}
	status, clen, chunked, _, err := readResponseHead(pc.br)
	if err != nil {
		return 0, dst, false
	}
	out, err = readResponseBody(pc.br, clen, chunked, limit, dst)
	if err != nil {
		return 0, dst, false
	}
	return status, out, true
}

// maxCopiedBody is the largest body copied next to the request head.
const maxCopiedBody = 64 << 10

func appendRequestHead(dst []byte, path, host string, hdr http.Header, n int) []byte {
	dst = append(dst, "POST "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUser-Agent: spillway\r\nContent-Type: text/xml\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, "\r\n"...)
	for k, vs := range hdr {
		for _, v := range vs {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			dst = append(dst, v...)
			dst = append(dst, "\r\n"...)
		}
	}
	return append(dst, "\r\n"...)
}

// readResponseHead reads a status line and headers. clen is -1 when the
// answer has no Content-Length.
func readResponseHead(br *bufio.Reader) (status int, clen int64, chunked, closeAfter bool, err error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, 0, false, false, err
		}
		// HTTP/1.1 200 OK
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, 0, false, false, fmt.Errorf("malformed HTTP status line %q", clip(line))
		}
		http10 := line[7] == '0'
		status, err = strconv.Atoi(string(line[9:12]))
		if err != nil || status < 100 {
			return 0, 0, false, false, fmt.Errorf("malformed HTTP status line %q", clip(line))
		}
		clen, chunked, closeAfter = -1, false, http10
		for {
			h, err := readLine(br)
			if err != nil {
				return 0, 0, false, false, err
			}
			if len(h) == 0 {
				break
			}
			name, value, ok := bytes.Cut(h, []byte(":"))
			if !ok {
				return 0, 0, false, false, fmt.Errorf("malformed HTTP header %q", clip(h))
			}
			value = bytes.TrimSpace(value)
			switch {
			case asciiEqualFold(name, "content-length"):
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil || n < 0 || clen >= 0 && n != clen {
					return 0, 0, false, false, fmt.Errorf("bad Content-Length %q", clip(value))
				}
				clen = n
			case asciiEqualFold(name, "transfer-encoding"):
				if !asciiEqualFold(value, "chunked") {
					return 0, 0, false, false, fmt.Errorf("unsupported Transfer-Encoding %q", clip(value))
				}
				chunked = true
			case asciiEqualFold(name, "connection"):
				if asciiEqualFold(value, "close") {
					closeAfter = true
				} else if asciiEqualFold(value, "keep-alive") {
					closeAfter = false
				}
			}
		}
		if status >= 200 || status == http.StatusSwitchingProtocols {
			if chunked {
				clen = -1
			}
			if status == http.StatusNoContent || status == http.StatusNotModified {
				clen = 0
			}
			return status, clen, chunked, closeAfter, nil
		}
		// 1xx: an interim answer; the real one follows.
	}
}

// readLine reads one CRLF- (or LF-) terminated line without its ending;
// the result aliases br's buffer.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("HTTP header line too long")
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return nil, io.EOF
			}
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readResponseBody appends the body to dst: clen bytes, chunked, or up to
// the end of the connection (clen < 0 and not chunked).
func readResponseBody(br *bufio.Reader, clen int64, chunked bool, limit int64, dst []byte) ([]byte, error) {
	tooLarge := func() error {
		return fmt.Errorf("%w: over %s bytes", ErrResponseTooLarge, strconv.FormatInt(limit, 10))
	}
	read := int64(0)
	readN := func(n int64) error {
		if read+n > limit {
			return tooLarge()
		}
		start := len(dst)
		dst = slices.Grow(dst, int(n))[:start+int(n)]
		got, err := io.ReadFull(br, dst[start:])
		read += int64(got)
		if err != nil {
			dst = dst[:start+got]
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("connection closed after %d bytes: %w", read, io.ErrUnexpectedEOF)
			}
			return err
		}
		return nil
	}
	switch {
	case chunked:
		for {
			line, err := readLine(br)
			if err != nil {
				return dst, err
			}
			if i := bytes.IndexByte(line, ';'); i >= 0 {
				line = line[:i]
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
			if err != nil || size < 0 {
				return dst, fmt.Errorf("bad chunk size %q", clip(line))
			}
			if size == 0 {
				for { // trailers, up to the blank line
					t, err := readLine(br)
					if err != nil {
						return dst, err
					}
					if len(t) == 0 {
						return dst, nil
					}
				}
			}
			if err := readN(size); err != nil {
				return dst, err
			}
			if crlf, err := readLine(br); err != nil || len(crlf) != 0 {
				return dst, fmt.Errorf("malformed chunk end: %v", err)
			}
		}
	case clen >= 0:
		return dst, readN(clen)
	default:
		lr := io.LimitReader(br, limit+1)
		for {
			if len(dst) == cap(dst) {
				dst = append(dst, 0)[:len(dst)]
			}
			n, err := lr.Read(dst[len(dst):cap(dst)])
			dst = dst[:len(dst)+n]
			read += int64(n)
			if read > limit {
				return dst, tooLarge()
			}
			if errors.Is(err, io.EOF) {
				return dst, nil
			}
			if err != nil {
				return dst, err
			}
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
