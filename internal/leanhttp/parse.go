package leanhttp

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strconv"
)

// parsedHead is a request head the short path serves.
type parsedHead struct {
	target        string
	host          string
	header        http.Header
	contentLength int64
	close         bool
}

// parseHead parses head (a request line, header lines and the blank line)
// and reports whether the short path serves it: a POST over HTTP/1.1 with
// one valid Content-Length, a Host, and nothing that needs more (a
// Transfer-Encoding, an Expect, an Upgrade, a folded or malformed line).
// net/http serves, or refuses, everything else.
func parseHead(head []byte) (*parsedHead, bool) {
	line, rest, ok := cutLine(head)
	if !ok {
		return nil, false
	}
	method, line, ok := bytes.Cut(line, sp)
	if !ok || string(method) != http.MethodPost {
		return nil, false
	}
	target, proto, ok := bytes.Cut(line, sp)
	if !ok || string(proto) != "HTTP/1.1" || len(target) == 0 || target[0] != '/' || !validTarget(target) {
		return nil, false
	}
	h := &parsedHead{target: string(target), header: make(http.Header, 8), contentLength: -1}
	hasHost := false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return nil, false
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, colon)
		if !ok || len(name) == 0 || !validFieldName(name) {
			return nil, false
		}
		value = bytes.TrimLeft(bytes.TrimRight(value, " \t"), " \t")
		if !validFieldValue(value) {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(string(name))
		switch key {
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Te":
			return nil, false
		case "Content-Length":
			if h.contentLength >= 0 {
				return nil, false
			}
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || value[0] == '+' {
				return nil, false
			}
			h.contentLength = n
		case "Host":
			if hasHost {
				return nil, false
			}
			hasHost = true
			h.host = string(value)
		case "Connection":
			for _, tok := range bytes.Split(value, comma) {
				tok = bytes.TrimSpace(tok)
				switch {
				case bytes.EqualFold(tok, []byte("close")):
					h.close = true
				case bytes.EqualFold(tok, []byte("keep-alive")):
				default:
					// A hop-by-hop header we would have to strip: net/http does.
					return nil, false
				}
			}
		}
		h.header[key] = append(h.header[key], string(value))
	}
	if !hasHost || h.contentLength < 0 || len(rest) != 0 {
		return nil, false
	}
	return h, true
}

var (
	sp    = []byte(" ")
	colon = []byte(":")
	comma = []byte(",")
)

// cutLine cuts one CRLF-ended line; a bare LF or CR is not taken.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

// validTarget takes an origin-form target of visible ASCII.
func validTarget(t []byte) bool {
	for _, c := range t {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// validFieldName takes a token (RFC 9110 §5.6.2).
func validFieldName(b []byte) bool {
	for _, c := range b {
		if !isTokenChar(c) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// validFieldValue refuses control characters other than tab.
func validFieldValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
