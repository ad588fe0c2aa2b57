package xmlrpc

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
)

var benchCall = []byte("<?xml version='1.0'?>\n<methodCall>\n<methodName>call_faas</methodName>\n<params>\n<param>\n<value><string>30</string></value>\n</param>\n</params>\n</methodCall>\n")

var benchInvocation = map[string]any{"result": "832040\n", "route": "local", "worker": "spillway-w1",
	"reason": "", "duration_ms": 1.25, "cold_start": false}

func BenchmarkDecodeCall(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchCall)))
	for b.Loop() {
		if _, _, err := DecodeCall(benchCall); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendCall(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 512)
	args := []any{"30"}
	for b.Loop() {
		var err error
		if buf, err = AppendCall(buf[:0], "call_function", args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendResponseStruct(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 1024)
	for b.Loop() {
		var err error
		if buf, err = AppendResponse(buf[:0], benchInvocation); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeResponseStruct(b *testing.B) {
	body, err := AppendResponse(nil, benchInvocation)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeResponse(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLBCodecPath is the codec work one lb call does: decode the
// caller's request, encode the worker call, decode the worker's reply,
// encode the response.
func BenchmarkLBCodecPath(b *testing.B) {
	reply, err := AppendResponse(nil, "832040\n")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	buf := make([]byte, 0, 1024)
	for b.Loop() {
		_, params, err := DecodeCall(benchCall)
		if err != nil {
			b.Fatal(err)
		}
		if buf, err = AppendCall(buf[:0], "call_function", params); err != nil {
			b.Fatal(err)
		}
		v, err := DecodeResponse(reply)
		if err != nil {
			b.Fatal(err)
		}
		if buf, err = AppendResponse(buf[:0], v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripHTTP is one Client.Call to a Server over loopback HTTP.
func BenchmarkRoundTripHTTP(b *testing.B) {
	s := NewServer()
	s.Register("call_function", "", func(_ context.Context, params []any) (any, error) { return "832040\n", nil })
	hs := httptest.NewServer(s)
	defer hs.Close()
	c := NewClient(hs.URL, nil)
	ctx := context.Background()
	args := []any{"30"}
	b.ReportAllocs()
	for b.Loop() {
		var got any
		if err := c.Call(ctx, "call_function", args, &got); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripConns is BenchmarkRoundTripHTTP with the client on
// Conns, lb's transport to its workers.
func BenchmarkRoundTripConns(b *testing.B) {
	s := NewServer()
	s.Register("call_function", "", func(_ context.Context, params []any) (any, error) { return "832040\n", nil })
	hs := httptest.NewServer(s)
	defer hs.Close()
	c := NewClient(hs.URL, nil)
	c.Conns = NewConns(strings.TrimPrefix(hs.URL, "http://"), ConnsOptions{})
	ctx := context.Background()
	args := []any{"30"}
	b.ReportAllocs()
	for b.Loop() {
		var got any
		if err := c.Call(ctx, "call_function", args, &got); err != nil {
			b.Fatal(err)
		}
	}
}
