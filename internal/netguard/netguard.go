// Package netguard refuses network peers by source address. lb wraps its
// listener with it so that function code in a worker, which shares a Docker
// network with an lb in compose, cannot call lb.
package netguard

import (
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
)

// Listener is a net.Listener that closes, at once and unanswered, every
// connection whose source address lies in a denied prefix. The prefixes can
// change while it serves (lb learns the workers' subnets after it starts
// listening).
type Listener struct {
	net.Listener
	log     *slog.Logger
	deny    atomic.Pointer[[]netip.Prefix]
	refused atomic.Uint64
}

// Wrap guards inner; nothing is denied until Deny is called.
func Wrap(inner net.Listener, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.Default()
	}
	return &Listener{Listener: inner, log: log}
}

// Deny replaces the denied prefixes.
func (l *Listener) Deny(prefixes []netip.Prefix) {
	p := make([]netip.Prefix, 0, len(prefixes))
	for _, x := range prefixes {
		if x.IsValid() {
			p = append(p, x.Masked())
		}
	}
	l.deny.Store(&p)
}

// Refused counts the connections and requests refused so far.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// Accept returns the next connection from an allowed source; denied ones
// are closed and counted.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.DeniedAddr(c.RemoteAddr().String()) {
			return c, nil
		}
		l.refused.Add(1)
		l.log.Debug("refused a connection from a denied network", "remote", c.RemoteAddr().String())
		_ = c.Close()
	}
}

// DeniedAddr reports whether addr (host:port, as in http.Request.RemoteAddr)
// lies in a denied prefix. An address that does not parse is not denied:
// only TCP peers are checked.
func (l *Listener) DeniedAddr(addr string) bool {
	p := l.deny.Load()
	if p == nil || len(*p) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, prefix := range *p {
		if prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// CountRefused records a refusal made elsewhere (a request on a connection
// accepted before the prefixes were known).
func (l *Listener) CountRefused() { l.refused.Add(1) }
