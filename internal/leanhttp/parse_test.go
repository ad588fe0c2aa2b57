package leanhttp

import (
	"net"
	"net/http"
	"os"
	"reflect"
	"syscall"
	"testing"
)

// parseHead takes what the short path serves and refuses the rest, for
// net/http to serve or answer.
func TestParseHead(t *testing.T) {
	cases := []struct {
		name string
		head string
		want *parsedHead // nil: refused
	}{
		{"a call", "POST /RPC2 HTTP/1.1\r\nHost: lb:8000\r\nContent-Type: text/xml\r\nContent-Length: 12\r\n\r\n",
			&parsedHead{target: "/RPC2", host: "lb:8000", contentLength: 12, header: http.Header{
				"Host": {"lb:8000"}, "Content-Type": {"text/xml"}, "Content-Length": {"12"}}}},
		{"keys canonical, values trimmed, Connection: close",
			"POST / HTTP/1.1\r\nhost: h\r\ncontent-length:0\r\nconnection:  Close \r\nx-a: 1\r\nX-A: 2\r\n\r\n",
			&parsedHead{target: "/", host: "h", contentLength: 0, close: true, header: http.Header{
				"Host": {"h"}, "Content-Length": {"0"}, "Connection": {"Close"}, "X-A": {"1", "2"}}}},
		{"GET", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", nil},
		{"HTTP/1.0", "POST / HTTP/1.0\r\nHost: h\r\nContent-Length: 0\r\n\r\n", nil},
		{"an absolute target", "POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", nil},
		{"no Content-Length", "POST / HTTP/1.1\r\nHost: h\r\n\r\n", nil},
		{"a negative Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", nil},
		{"a signed Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", nil},
		{"two Content-Lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", nil},
		{"two Hosts", "POST / HTTP/1.1\r\nHost: h\r\nHost: i\r\nContent-Length: 0\r\n\r\n", nil},
		{"Transfer-Encoding", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", nil},
		{"Expect", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n", nil},
		{"Upgrade", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nUpgrade: h2c\r\n\r\n", nil},
		{"a hop-by-hop Connection token", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: x-secret\r\n\r\n", nil},
		{"a space in a name", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 0\r\n\r\n", nil},
		{"a folded line", "POST / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", nil},
		{"a NUL in a value", "POST / HTTP/1.1\r\nHost: h\r\nX: a\x00\r\nContent-Length: 0\r\n\r\n", nil},
		{"a bare CR", "POST / HTTP/1.1\r\nHost: h\rX: 1\r\nContent-Length: 0\r\n\r\n", nil},
		{"a space in the target", "POST /a b HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseHead([]byte(tc.head))
			if (tc.want != nil) != ok {
				t.Fatalf("served = %v, want %v", ok, tc.want != nil)
			}
			if ok && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestHeadEnd(t *testing.T) {
	for in, want := range map[string]int{
		"":                    0,
		"POST / HTTP/1.1\r\n": 0,
		"A\r\n\r\nbody":       5,
		"A\n\nbody":           3,
		"A\r\nB: c\r\n\r\n":   11,
		"A\r\nB: c\n\r\nrest": 10,
		"\r\n":                0,
		"A\r\nB\r\n\r":        0,
	} {
		if got := headEnd([]byte(in)); got != want {
			t.Errorf("headEnd(%q) = %d, want %d", in, got, want)
		}
	}
}

// An accept that fails for want of descriptors is retried; a closed
// listener ends Serve.
func TestRetryableAccept(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}, true},
		{&net.OpError{Op: "accept", Err: net.ErrClosed}, false},
	} {
		if got := retryableAccept(tc.err); got != tc.want {
			t.Errorf("retryableAccept(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
