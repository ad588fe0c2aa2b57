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

// FuzzFastDecoder: whatever the fast decoder accepts, the full decoder
// (encoding/xml) accepts too, with the same values; a fault response is the
// same fault.
func FuzzFastDecoder(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFastCall(t, body)
		checkFastResponse(t, body)
	})
}

var fastSeeds = []string{
	call(param("<int>1</int>")),
	"<?xml version='1.0'?>\n<methodCall>\n<methodName>call_faas</methodName>\n<params>\n<param>\n<value><string>30</string></value>\n</param>\n</params>\n</methodCall>\n",
	`<?xml version="1.0" encoding="UTF-8"?><methodCall><methodName>m</methodName><params><param><value><struct><member><name>a&amp;b</name><value><array><data><value><i4>-3</i4></value><value><boolean>1</boolean></value><value><double>2.5</double></value><value>plain &lt;x&gt;</value><value><nil/></value><value/><value><base64>AAE=</base64></value><value><dateTime.iso8601>20240102T03:04:05</dateTime.iso8601></value></data></array></value></member></struct></value></param></params></methodCall>`,
	"<methodCall><methodName>x</methodName><params><param><value><string>a&#xD;b&#65;\u00e9\U0001F600</string></value></param></params></methodCall>",
	"<methodCall><methodName>x</methodName><params/></methodCall>",
	"<methodResponse><params><param><value><string>832040\n</string></value></param></params></methodResponse>\n",
	"<?xml version=\"1.0\"?>\n<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>-32500</int></value></member><member><name>faultString</name><value><string>boom</string></value></member></struct></value></fault></methodResponse>\n",
	"<methodResponse><params><param><value>  </value></param></params></methodResponse>",
}

func checkFastCall(t *testing.T, body []byte) {
	t.Helper()
	method, params, ok := fastCall(body)
	if !ok {
		return
	}
	m2, p2, err := fullCall(body)
	if err != nil {
		t.Fatalf("fast decoder accepted %q (%q %#v), the full one refused it: %v", body, method, params, err)
	}
	if m2 != method || !sameValue(params, p2) || (params == nil) != (p2 == nil) {
		t.Fatalf("%q: fast %q %#v, full %q %#v", body, method, params, m2, p2)
	}
}

func checkFastResponse(t *testing.T, body []byte) {
	t.Helper()
	v, ferr, ok := fastResponse(body)
	if !ok {
		return
	}
	v2, err2 := fullResponse(body)
	f1, remote1 := IsRemoteFault(ferr)
	f2, remote2 := IsRemoteFault(err2)
	switch {
	case ferr == nil && err2 == nil:
		if !sameValue(v, v2) {
			t.Fatalf("%q: fast %#v, full %#v", body, v, v2)
		}
	case remote1 && remote2:
		if *f1 != *f2 {
			t.Fatalf("%q: fast fault %+v, full %+v", body, f1, f2)
		}
	default:
		t.Fatalf("%q: fast (%#v, %v), full (%#v, %v)", body, v, ferr, v2, err2)
	}
}

// TestFastDecoderTakesCommonDocuments: the documents every call carries are
// decoded by the fast path, and oddities go to the full decoder.
func TestFastDecoderTakesCommonDocuments(t *testing.T) {
	for _, s := range fastSeeds {
		if _, _, ok := fastCall([]byte(s)); !ok {
			if _, _, ok := fastResponse([]byte(s)); !ok {
				t.Errorf("fast decoder refused %q", s)
			}
		}
		checkFastCall(t, []byte(s))
		checkFastResponse(t, []byte(s))
	}
	for _, s := range []string{
		"<!-- c --><methodCall><methodName>x</methodName></methodCall>",
		"<methodCall><methodName>x</methodName><params><param><value><string><![CDATA[a]]></string></value></param></params></methodCall>",
		"<methodCall><methodName>x</methodName><params><param><value><string>a\r\nb</string></value></param></params></methodCall>",
		`<?xml version="1.0" encoding="iso-8859-1"?><methodCall><methodName>x</methodName></methodCall>`,
		`<methodCall a="1"><methodName>x</methodName></methodCall>`,
		"<x:methodCall><methodName>x</methodName></x:methodCall>",
		call(param("<int>1x</int>")),
	} {
		if _, _, ok := fastCall([]byte(s)); ok {
			t.Errorf("fast decoder took %q", s)
		}
	}
}
