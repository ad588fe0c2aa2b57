package xmlrpc

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// allocatedBy is how many bytes f allocates.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestDeclaredLengthIsNotAllocated(t *testing.T) {
	// A request that declares 200 MB (under a 256 MB limit) and sends a
	// few hundred bytes costs what it sends. The calibration (the probe seeing
	// a real allocation) sends 16 MB to a server that reads 8 MB of it
	// before refusing, which must show.
	s := NewServer()
	s.MaxBodyBytes = 256 << 20
	s.Register("echo", "", func(ctx context.Context, p []any) (any, error) { return len(p), nil })
	call := `<?xml version="1.0"?><methodCall><methodName>echo</methodName><params><param><value>x</value></param></params></methodCall>`

	serve := func(body io.Reader, declared int64) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/", body)
		r.ContentLength = declared
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	var w *httptest.ResponseRecorder
	small := allocatedBy(func() { w = serve(strings.NewReader(call), 200<<20) })
	if !strings.Contains(w.Body.String(), "<int>1</int>") {
		t.Fatalf("answer %s", w.Body.String())
	}
	if small > 4<<20 {
		t.Errorf("a %d-byte body declared as 200 MB allocated %d MB", len(call), small>>20)
	}

	s.MaxBodyBytes = 8 << 20
	big := strings.Repeat(" ", 16<<20)
	large := allocatedBy(func() { w = serve(strings.NewReader(big), -1) })
	if !strings.Contains(w.Body.String(), "-32002") {
		t.Fatalf("calibration answer %s, want the too-large fault", w.Body.String())
	}
	if large < 8<<20 {
		t.Errorf("calibration: reading 8 MB allocated only %d MB; the probe cannot see allocations", large>>20)
	}
}
