package xmlrpc

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

// FuzzDecodeCall: any input decodes or gives a parse / invalid-request /
// too-large fault, never a panic; what decodes re-encodes to the same values.
// The seed corpus is in testdata/fuzz/FuzzDecodeCall.
func FuzzDecodeCall(f *testing.F) {
	f.Add([]byte(call(param("<int>1</int>"))))
	f.Add([]byte("<?xml version='1.0'?>\n<methodCall>\n<methodName>call_faas</methodName>\n<params>\n<param>\n<value><string>30</string></value>\n</param>\n</params>\n</methodCall>\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		method, params, err := DecodeCall(body)
		if err != nil {
			var fault *Fault
			if !errors.As(err, &fault) {
				t.Fatalf("error %v is not a *Fault", err)
			}
			switch fault.Code {
			case spillway.FaultParse, spillway.FaultInvalidRequest:
			default:
				t.Fatalf("fault code %d", fault.Code)
			}
			return
		}
		again, err := AppendCall(nil, method, params)
		if err != nil {
			t.Fatalf("re-encode %q %#v: %v", method, params, err)
		}
		method2, params2, err := DecodeCall(again)
		if err != nil {
			t.Fatalf("decode re-encoded %s: %v", again, err)
		}
		if method2 != method || !sameValue(params, params2) {
			t.Fatalf("round trip: %q %#v\n -> %q %#v", method, params, method2, params2)
		}
	})
}

// sameValue is reflect.DeepEqual but NaN equals NaN, times compare by
// instant, and an empty []byte equals a nil one.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && (x == y || math.IsNaN(x) && math.IsNaN(y))
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []byte:
		y, ok := b.([]byte)
		return ok && string(x) == string(y)
	}
	return reflect.DeepEqual(a, b)
}
