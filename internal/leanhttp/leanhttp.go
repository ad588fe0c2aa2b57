// Package leanhttp serves HTTP/1.1 with a short path for the calls that
// make up nearly all of lb's and a worker's traffic: a POST with a
// Content-Length body on a keep-alive connection. Such a request is parsed
// here, handed to the same http.Handler, and answered with one write.
// Everything else (GET pages, chunked bodies, Expect: 100-continue, a
// malformed or oversized head, HTTP/1.0) goes, with the bytes already read,
// to a net/http Server that does the rest.
//
// Why: net/http spends per request a background-read goroutine, its wake-ups
// and a buffered writer's header pass; on a 2-vCPU paravirtualised host
// these are a measurable part of a sub-millisecond call (BENCHMARKS.md).
//
// What the short path drops: a request's context ends when its client
// goes away only once the call has run for DisconnectGrace (net/http
// watches from the start), and responses are buffered whole (no Flusher,
// no Hijacker: no caller of the short path streams).
package leanhttp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Server is a drop-in for the part of http.Server that lb and the worker
// use. Its fields mean what http.Server's do, but for WriteTimeout on the
// short path: it bounds the answer's write, where net/http counts from
// the end of the request's head (the handler's time included).
type Server struct {
	Handler           http.Handler
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	ConnState         func(net.Conn, http.ConnState)
	ErrorLog          *log.Logger
	// DisconnectGrace is how long a call on the short path runs before the
	// server watches its connection and ends the request's context if the
	// client goes away; 0 means DefaultDisconnectGrace.
	DisconnectGrace time.Duration

	initOnce sync.Once
	fallback *http.Server
	handoff  *chanListener

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
	shutting atomic.Bool
}

// DefaultDisconnectGrace is DisconnectGrace's default: longer than nearly
// every warm call, so those pay nothing for the watch.
const DefaultDisconnectGrace = 50 * time.Millisecond

const (
	defaultMaxHeaderBytes = 1 << 20
	// maxDiscardBytes is how much of a body the handler left unread is read
	// and dropped to keep the connection; beyond it the connection closes.
	maxDiscardBytes = 256 << 10
	readChunk       = 4 << 10
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.conns = map[*conn]struct{}{}
		s.handoff = newChanListener()
		s.fallback = &http.Server{
			Handler:           s.Handler,
			ReadHeaderTimeout: s.ReadHeaderTimeout,
			ReadTimeout:       s.ReadTimeout,
			WriteTimeout:      s.WriteTimeout,
			IdleTimeout:       s.IdleTimeout,
			MaxHeaderBytes:    s.MaxHeaderBytes,
			ConnState:         s.ConnState,
			ErrorLog:          s.ErrorLog,
		}
	})
}

// Serve accepts connections on ln until Shutdown or Close, and serves each
// on its own goroutine. It returns ErrServerClosed after those, else the
// listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.ln = ln
	s.handoff.addr = ln.Addr()
	s.mu.Unlock()
	// Ends when Shutdown or Close shuts the fallback and its listener.
	go func() { _ = s.fallback.Serve(s.handoff) }()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return ErrServerClosed
			}
			if retryableAccept(err) {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logf("leanhttp: accept: %v; retrying in %v", err, backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

// retryableAccept reports whether an accept error passes: too many open
// files, a connection aborted before it was taken, a timeout.
func retryableAccept(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || (errors.As(err, &ne) && ne.Timeout())
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		nc.Close()
		c.cancel()
		return nil
	}
	s.conns[c] = struct{}{}
	c.state = http.StateNew
	s.mu.Unlock()
	s.connState(nc, http.StateNew)
	return c
}

func (s *Server) connState(nc net.Conn, st http.ConnState) {
	if s.ConnState != nil {
		s.ConnState(nc, st)
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// Shutdown stops accepting, closes idle connections, and waits until the
// busy ones have answered and gone idle (then closes them) or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.stopAccepting(false)
	fallbackDone := make(chan error, 1)
	go func() { fallbackDone <- s.fallback.Shutdown(ctx) }()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if s.closeIdle() {
			break
		}
		select {
		case <-ctx.Done():
			<-fallbackDone
			return ctx.Err()
		case <-t.C:
		}
	}
	if ferr := <-fallbackDone; ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// closeIdle closes the connections that wait for a request and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state == http.StateIdle || c.state == http.StateNew {
			c.state = http.StateClosed
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

// stopAccepting marks the server shutting down and closes its listener
// and, with closeConns, every connection of the short path.
func (s *Server) stopAccepting(closeConns bool) error {
	s.init()
	s.shutting.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	if closeConns {
		for c := range s.conns {
			c.nc.Close()
		}
	}
	return err
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	err := s.stopAccepting(true)
	if ferr := s.fallback.Close(); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// conn is one client connection on the short path.
type conn struct {
	srv    *Server
	nc     net.Conn
	remote string
	ctx    context.Context // ends when the connection does
	cancel context.CancelFunc

	state http.ConnState // under srv.mu

	in  []byte // bytes read and not yet used
	out []byte // the answer being written, reused
	hdr http.Header

	watch     *time.Timer
	watchDone chan watchResult
	serving   bool   // the handler runs: a body read to its end starts the watch
	watching  bool   // the watch's timer is set for this request
	watchByte []byte // a byte the watch read: the next request's first
	date      dateCache
}

type watchResult struct {
	b   byte
	n   int
	err error
}

func (c *conn) setState(st http.ConnState) bool {
	c.srv.mu.Lock()
	if c.state == http.StateClosed {
		c.srv.mu.Unlock()
		return false
	}
	c.state = st
	c.srv.mu.Unlock()
	c.srv.connState(c.nc, st)
	return true
}

func (c *conn) close(reportClosed bool) {
	c.cancel()
	c.nc.Close()
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.state = http.StateClosed
	c.srv.mu.Unlock()
	if reportClosed {
		c.srv.connState(c.nc, http.StateClosed)
	}
}

func (c *conn) serve() {
	handedOff := false
	defer func() {
		if !handedOff {
			c.close(true)
		}
	}()
	defer func() {
		if v := recover(); v != nil {
			c.srv.logf("leanhttp: panic serving %s: %v\n%s", c.remote, v, debug.Stack())
		}
	}()
	first := true
	for {
		head, err := c.readHead(first)
		if err != nil {
			return
		}
		req, ok := (*parsedHead)(nil), head <= c.maxHead()
		if ok {
			req, ok = parseHead(c.in[:head])
		}
		if !ok {
			// Not for the short path: net/http reads it again from the start.
			handedOff = c.handOff()
			return
		}
		first = false
		if !c.setState(http.StateActive) {
			return
		}
		keep := c.serveOne(req, head)
		if !keep || c.srv.shutting.Load() {
			return
		}
		if !c.setState(http.StateIdle) {
			return
		}
	}
}

// readHead reads until c.in holds a whole request head and returns its
// length (with the blank line). An error means the connection is done;
// a head too large or malformed is returned as is for net/http to answer.
func (c *conn) readHead(first bool) (int, error) {
	s := c.srv
	maxHead := c.maxHead()
	// Wait for the request's first byte under the idle timeout (or the
	// header timeout for a new connection), then the rest under the header
	// timeout.
	headStarted := len(c.in) > 0
	if headStarted || first {
		c.setReadDeadline(s.headerTimeout())
	} else {
		idle := s.IdleTimeout
		if idle <= 0 {
			idle = s.ReadTimeout
		}
		c.setReadDeadline(idle)
	}
	for {
		if n := headEnd(c.in); n > 0 {
			return n, nil
		}
		if len(c.in) > maxHead+4096 {
			// Too large: net/http answers 431.
			return len(c.in), nil
		}
		if cap(c.in)-len(c.in) < readChunk/2 {
			grown := make([]byte, len(c.in), 2*cap(c.in)+readChunk)
			copy(grown, c.in)
			c.in = grown
		}
		n, err := c.nc.Read(c.in[len(c.in):cap(c.in)])
		c.in = c.in[:len(c.in)+n]
		if err != nil {
			return 0, err
		}
		if n > 0 && !headStarted {
			headStarted = true
			// A whole head in the first read (nearly every call) needs no
			// header deadline.
			if n := headEnd(c.in); n > 0 {
				return n, nil
			}
			if !first {
				c.setReadDeadline(s.headerTimeout())
			}
		}
	}
}

// headerTimeout is ReadHeaderTimeout, or ReadTimeout when that is 0, as
// net/http has it.
func (s *Server) headerTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return s.ReadTimeout
}

func (c *conn) maxHead() int {
	if c.srv.MaxHeaderBytes <= 0 {
		return defaultMaxHeaderBytes
	}
	return c.srv.MaxHeaderBytes
}

// setReadDeadline sets the read deadline d from now; 0 means none.
func (c *conn) setReadDeadline(d time.Duration) {
	if d <= 0 {
		_ = c.nc.SetReadDeadline(time.Time{})
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
}

// headEnd is the length of the head at the start of b with its blank
// line, or 0 when b holds no blank line yet. Bare LFs end lines too, so
// that net/http gets such a head to answer.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		k := i + j + 1
		if k < len(b) && b[k] == '\n' {
			return k + 1
		}
		if k+1 < len(b) && b[k] == '\r' && b[k+1] == '\n' {
			return k + 2
		}
		i = k
	}
}

// handOff gives the connection, with the bytes read so far, to net/http.
func (c *conn) handOff() bool {
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	closed := c.state == http.StateClosed
	c.state = http.StateHijacked
	c.srv.mu.Unlock()
	c.cancel()
	if closed {
		c.nc.Close()
		return true
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	// net/http counts the connection from here: report it gone from ours.
	c.srv.connState(c.nc, http.StateHijacked)
	pc := &prefixConn{Conn: c.nc, prefix: c.in}
	c.in = nil
	if !c.srv.handoff.deliver(pc) {
		pc.Close()
	}
	return true
}

// serveOne runs the handler for the request whose head is c.in[:head] and
// writes its answer. It reports whether the connection stays open.
func (c *conn) serveOne(h *parsedHead, head int) bool {
	s := c.srv
	body := &bodyReader{c: c, rest: h.contentLength}
	bodyStart := head
	avail := int64(len(c.in) - bodyStart)
	if avail > h.contentLength {
		avail = h.contentLength
	}
	body.buf = c.in[bodyStart : bodyStart+int(avail)]
	body.rest -= avail
	// The bytes after this request (a pipelined one) stay for the next.
	after := c.in[bodyStart+int(avail):]
	if body.rest > 0 && s.ReadTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(s.ReadTimeout))
	}
	r, err := http.NewRequestWithContext(c.ctx, http.MethodPost, h.target, body)
	if err != nil {
		// A target that does not parse as a URL (a bad %-escape): answer
		// 400 and close, as net/http would.
		c.writeSimple(http.StatusBadRequest, "bad request target")
		return false
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = h.header
	r.Host = h.host
	r.RequestURI = h.target
	r.RemoteAddr = c.remote
	r.ContentLength = h.contentLength
	r.Close = h.close

	c.serving = true
	if body.rest == 0 {
		c.startWatch()
	}
	w := &responseWriter{}
	panicked := c.runHandler(w, r)
	c.serving = false
	gone := c.stopWatch()
	if panicked {
		return false
	}
	keep := !h.close && !gone && w.header.Get("Connection") != "close"
	// Drop what the handler left of the body, so the next request starts
	// where it should.
	unread := false
	if body.rest > 0 {
		if body.rest > maxDiscardBytes || body.err != nil {
			keep, unread = false, body.err == nil
		} else if _, err := io.Copy(io.Discard, body); err != nil {
			keep = false
		}
	}
	if !keep || s.shutting.Load() {
		w.closing = true
	}
	if err := c.writeAnswer(w); err != nil {
		return false
	}
	if unread {
		c.lingerAfterAnswer()
		return false
	}
	// Keep the unread bytes after this request, moved to the front, and
	// the byte the watch may have read after them.
	n := copy(c.in, after)
	c.in = c.in[:n]
	if cap(c.in) > 64<<10 {
		c.in = append(make([]byte, 0, readChunk), c.in...)
	}
	c.in = append(c.in, c.watchByte...)
	c.watchByte = c.watchByte[:0]
	return !w.closing
}

// lingerAfterAnswer closes the sending side and reads what the client
// still sends for a while before the connection closes: closing with unread
// bytes would reset it, and the client could lose the answer it was sent.
func (c *conn) lingerAfterAnswer() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.nc.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 64<<20))
}

// lingerTime bounds lingerAfterAnswer, as net/http's delay before it
// closes a connection with a body left unread.
const lingerTime = 500 * time.Millisecond

func (c *conn) runHandler(w *responseWriter, r *http.Request) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panicked = true
				return
			}
			c.srv.logf("leanhttp: panic serving %s: %v\n%s", c.remote, v, debug.Stack())
			panicked = true
		}
	}()
	c.srv.Handler.ServeHTTP(w, r)
	return false
}

// writeAnswer writes the status line, the headers and the body in one
// write.
func (c *conn) writeAnswer(w *responseWriter) error {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	out := c.out[:0]
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(status)...)
	out = append(out, "\r\n"...)
	hasBody := bodyAllowed(status)
	if w.header != nil {
		for k, vs := range w.header {
			if k == "Content-Length" || k == "Connection" || k == "Date" || k == "Transfer-Encoding" {
				continue
			}
			for _, v := range vs {
				out = appendHeaderLine(out, k, v)
			}
		}
	}
	if hasBody {
		if w.header == nil || w.header["Content-Type"] == nil {
			if len(w.body) > 0 {
				out = appendHeaderLine(out, "Content-Type", http.DetectContentType(w.body))
			}
		}
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, int64(len(w.body)), 10)
		out = append(out, "\r\n"...)
	}
	out = append(out, "Date: "...)
	out = c.date.append(out)
	out = append(out, "\r\n"...)
	if w.closing {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	if hasBody {
		out = append(out, w.body...)
	}
	if c.srv.WriteTimeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.WriteTimeout))
	}
	_, err := c.nc.Write(out)
	if cap(out) <= 64<<10 {
		c.out = out[:0]
	} else {
		c.out = nil
	}
	return err
}

func appendHeaderLine(out []byte, k, v string) []byte {
	out = append(out, k...)
	out = append(out, ": "...)
	// A value must not end the header: drop any CR or LF, as net/http does.
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			out = append(out, ' ')
			continue
		}
		out = append(out, v[i])
	}
	return append(out, "\r\n"...)
}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// writeSimple answers with a plain-text status and closes.
func (c *conn) writeSimple(status int, text string) {
	w := &responseWriter{status: status, closing: true}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.body = append(w.body, text+"\n"...)
	_ = c.writeAnswer(w)
}

// The disconnect watch: once a call has run DisconnectGrace, read the
// connection; EOF or an error means the client went away, so the request's
// context ends. A byte read (a pipelined request) is kept.

// startWatch runs once the body has been read whole: a read before then
// would take the body's bytes.
func (c *conn) startWatch() {
	grace := c.srv.DisconnectGrace
	if grace <= 0 {
		grace = DefaultDisconnectGrace
	}
	if !c.serving || c.watching {
		return
	}
	// Cleared here, not in the watch, so that stopWatch's deadline in the
	// past cannot be undone by a watch that starts late.
	_ = c.nc.SetReadDeadline(time.Time{})
	c.watching = true
	if c.watch == nil {
		c.watchDone = make(chan watchResult, 1)
		c.watch = time.AfterFunc(grace, c.watchConn)
		return
	}
	c.watch.Reset(grace)
}

func (c *conn) watchConn() {
	var one [1]byte
	n, err := c.nc.Read(one[:])
	if n == 0 && err != nil {
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) {
			c.cancel()
		}
	}
	c.watchDone <- watchResult{b: one[0], n: n, err: err}
}

// stopWatch ends the watch and reports whether the client went away.
func (c *conn) stopWatch() bool {
	if !c.watching {
		return false
	}
	c.watching = false
	if c.watch.Stop() {
		return false
	}
	// The watch runs or ran: end its read and take its result.
	_ = c.nc.SetReadDeadline(aLongTimeAgo)
	res := <-c.watchDone
	if res.n > 0 {
		c.watchByte = append(c.watchByte, res.b)
		return false
	}
	var ne net.Error
	return !(errors.As(res.err, &ne) && ne.Timeout())
}

var aLongTimeAgo = time.Unix(1, 0)

// bodyReader is a request body: what was read with the head, then the
// rest from the connection.
type bodyReader struct {
	c    *conn
	buf  []byte
	rest int64 // bytes still on the connection
	err  error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if len(b.buf) > 0 {
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil
	}
	if b.rest <= 0 {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.rest {
		p = p[:b.rest]
	}
	n, err := b.c.nc.Read(p)
	b.rest -= int64(n)
	if err == io.EOF && b.rest > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
		return n, err
	}
	if b.rest == 0 {
		b.c.startWatch()
	}
	return n, nil
}

func (b *bodyReader) Close() error { return nil }

// responseWriter buffers the whole answer.
type responseWriter struct {
	header  http.Header
	status  int
	body    []byte
	closing bool
}

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// dateCache formats the Date header once a second.
type dateCache struct {
	sec  int64
	text []byte
}

func (d *dateCache) append(out []byte) []byte {
	now := time.Now()
	if now.Unix() != d.sec || d.text == nil {
		d.sec = now.Unix()
		d.text = now.UTC().AppendFormat(d.text[:0], http.TimeFormat)
	}
	return append(out, d.text...)
}

// prefixConn replays the bytes read before a hand-off.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// chanListener is the listener net/http serves: it yields the connections
// handed off.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr {
	if l.addr == nil {
		return &net.TCPAddr{}
	}
	return l.addr
}
