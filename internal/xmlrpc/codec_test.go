package xmlrpc

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	kolo "github.com/kolo/xmlrpc"

	"github.com/spillway-faas/spillway"
)

func call(params string) string {
	return `<?xml version="1.0"?><methodCall><methodName>m</methodName><params>` + params + `</params></methodCall>`
}

func param(v string) string { return "<param><value>" + v + "</value></param>" }

func TestDecodeCallValues(t *testing.T) {
	when := time.Date(2024, 3, 9, 7, 5, 1, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"int", "<int>42</int>", int64(42)},
		{"i4 negative", "<i4>-7</i4>", int64(-7)},
		{"i8 big", "<i8>9007199254740993</i8>", int64(9007199254740993)},
		{"ex:i8", "<ex:i8>5</ex:i8>", int64(5)},
		{"int spaces", "<int> 3 </int>", int64(3)},
		{"boolean true", "<boolean>1</boolean>", true},
		{"boolean false", "<boolean>0</boolean>", false},
		{"string", "<string>hi &amp; &lt;there&gt;</string>", "hi & <there>"},
		{"empty string", "<string></string>", ""},
		{"empty string self-closed", "<string/>", ""},
		{"bare string", "bare text", "bare text"},
		{"bare string keeps spaces", "  x  ", "  x  "},
		{"empty value", "", ""},
		{"cdata", "<string><![CDATA[a<b]]></string>", "a<b"},
		{"char refs", "<string>&#x41;&#66;&#xD;</string>", "AB\r"},
		{"double", "<double>-1.5</double>", -1.5},
		{"double exp", "<double>1e+100</double>", 1e100},
		{"date compact", "<dateTime.iso8601>20240309T07:05:01</dateTime.iso8601>", when},
		{"date hyphen", "<dateTime.iso8601>2024-03-09T07:05:01</dateTime.iso8601>", when},
		{"date zone", "<dateTime.iso8601>2024-03-09T08:05:01+01:00</dateTime.iso8601>", when},
		{"base64", "<base64>aGVsbG8=</base64>", []byte("hello")},
		{"base64 lines", "<base64>aGVs\nbG8=\n</base64>", []byte("hello")},
		{"base64 empty", "<base64></base64>", []byte{}},
		{"nil", "<nil/>", nil},
		{"ex:nil", "<ex:nil/>", nil},
		{"empty array", "<array><data></data></array>", []any{}},
		{"empty array self-closed data", "<array><data/></array>", []any{}},
		{"empty struct", "<struct></struct>", map[string]any{}},
		{"array", "<array><data><value><int>1</int></value><value>x</value><value><nil/></value></data></array>",
			[]any{int64(1), "x", nil}},
		{"struct", "<struct><member><name>a</name><value><int>1</int></value></member>" +
			"<member><value><string>v</string></value><name>b</name></member></struct>",
			map[string]any{"a": int64(1), "b": "v"}},
		{"whitespace everywhere", "\n <struct>\n <member>\n <name>a</name>\n <value>\n <array>\n <data>\n <value><int>1</int></value>\n </data>\n </array>\n </value>\n </member>\n </struct>\n ",
			map[string]any{"a": []any{int64(1)}}},
		{"nested", "<array><data><value><struct><member><name>k</name><value><array><data><value><boolean>1</boolean></value></data></array></value></member></struct></value></data></array>",
			[]any{map[string]any{"k": []any{true}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, params, err := DecodeCall([]byte(call(param(tt.in))))
			if err != nil {
				t.Fatalf("DecodeCall: %v", err)
			}
			if method != "m" || len(params) != 1 {
				t.Fatalf("got method %q with %d params", method, len(params))
			}
			if got := params[0]; !reflect.DeepEqual(got, tt.want) {
				if gt, ok := got.(time.Time); ok && gt.Equal(tt.want.(time.Time)) {
					return
				}
				t.Errorf("value: -want %#v +got %#v", tt.want, got)
			}
		})
	}
}

func TestDecodeCallShape(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		method string
		n      int
	}{
		{"no params", `<methodCall><methodName>a.b</methodName></methodCall>`, "a.b", 0},
		{"empty params", `<methodCall><methodName>x</methodName><params/></methodCall>`, "x", 0},
		{"python style", "<?xml version='1.0'?>\n<methodCall>\n<methodName>call_faas</methodName>\n<params>\n<param>\n<value><string>30</string></value>\n</param>\n</params>\n</methodCall>\n", "call_faas", 1},
		{"latin1", `<?xml version="1.0" encoding="ISO-8859-1"?><methodCall><methodName>x</methodName><params><param><value>` + "\xe9" + `</value></param></params></methodCall>`, "x", 1},
		{"comment", `<!-- hi --><methodCall><methodName>x</methodName></methodCall><!-- bye -->`, "x", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, p, err := DecodeCall([]byte(tt.in))
			if err != nil {
				t.Fatalf("DecodeCall: %v", err)
			}
			if m != tt.method || len(p) != tt.n || p == nil && tt.n > 0 {
				t.Errorf("got %q with %d params, want %q with %d", m, len(p), tt.method, tt.n)
			}
		})
	}
}

func TestDecodeCallErrors(t *testing.T) {
	deep := strings.Repeat("<value><array><data>", MaxDepth+1) + "<value>x</value>" + strings.Repeat("</data></array></value>", MaxDepth+1)
	okDeep := strings.Repeat("<value><array><data>", MaxDepth) + "<value>x</value>" + strings.Repeat("</data></array></value>", MaxDepth)
	many := "<methodCall><methodName>x</methodName><params><param><value><array><data>" +
		strings.Repeat("<value/>", defaultMaxElements) + "</data></array></value></param></params></methodCall>"
	tests := []struct {
		name string
		in   string
		code int
	}{
		{"empty", "", spillway.FaultParse},
		{"garbage", "not xml", spillway.FaultInvalidRequest},
		{"truncated", `<methodCall><methodName>x</methodName><params><param><value><int>1`, spillway.FaultParse},
		{"unclosed", `<methodCall><methodName>x</methodName>`, spillway.FaultParse},
		{"bad entity", `<methodCall><methodName>x&bogus;</methodName></methodCall>`, spillway.FaultParse},
		{"wrong root", `<methodResponse/>`, spillway.FaultInvalidRequest},
		{"no method", `<methodCall><params/></methodCall>`, spillway.FaultInvalidRequest},
		{"empty method", `<methodCall><methodName> </methodName></methodCall>`, spillway.FaultInvalidRequest},
		{"long method", `<methodCall><methodName>` + strings.Repeat("a", 300) + `</methodName></methodCall>`, spillway.FaultInvalidRequest},
		{"two methods", `<methodCall><methodName>a</methodName><methodName>b</methodName></methodCall>`, spillway.FaultInvalidRequest},
		{"unknown type", call(param("<float>1</float>")), spillway.FaultInvalidRequest},
		{"bad int", call(param("<int>1x</int>")), spillway.FaultInvalidRequest},
		{"int overflow", call(param("<i8>99999999999999999999</i8>")), spillway.FaultInvalidRequest},
		{"bad bool", call(param("<boolean>yes</boolean>")), spillway.FaultInvalidRequest},
		{"bad double", call(param("<double>one</double>")), spillway.FaultInvalidRequest},
		{"bad date", call(param("<dateTime.iso8601>yesterday</dateTime.iso8601>")), spillway.FaultInvalidRequest},
		{"bad base64", call(param("<base64>!!!</base64>")), spillway.FaultInvalidRequest},
		{"mismatched end", call(param("<int>1</i4>")), spillway.FaultInvalidRequest},
		{"element in string", call(param("<string><b>x</b></string>")), spillway.FaultInvalidRequest},
		{"mixed value", call(param("text<int>1</int>")), spillway.FaultInvalidRequest},
		{"two types", call(param("<int>1</int><int>2</int>")), spillway.FaultInvalidRequest},
		{"member without value", call(param("<struct><member><name>a</name></member></struct>")), spillway.FaultInvalidRequest},
		{"member without name", call(param("<struct><member><value>1</value></member></struct>")), spillway.FaultInvalidRequest},
		{"junk in array", call(param("<array><value>1</value></array>")), spillway.FaultInvalidRequest},
		{"text in params", `<methodCall><methodName>x</methodName><params>junk</params></methodCall>`, spillway.FaultInvalidRequest},
		{"too deep", call("<param>" + deep + "</param>"), spillway.FaultInvalidRequest},
		{"too many elements", many, spillway.FaultInvalidRequest},
		{"doctype", `<!DOCTYPE x [<!ENTITY a "b">]><methodCall><methodName>x</methodName></methodCall>`, spillway.FaultInvalidRequest},
		{"trailing element", `<methodCall><methodName>x</methodName></methodCall><x/>`, spillway.FaultInvalidRequest},
		{"trailing text", `<methodCall><methodName>x</methodName></methodCall>x`, spillway.FaultInvalidRequest},
		{"unknown encoding", `<?xml version="1.0" encoding="EBCDIC"?><methodCall/>`, spillway.FaultParse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecodeCall([]byte(tt.in))
			var f *Fault
			if !errors.As(err, &f) {
				t.Fatalf("DecodeCall error %v, want *Fault", err)
			}
			if f.Code != tt.code {
				t.Errorf("fault code %d (%s), want %d", f.Code, f.String, tt.code)
			}
		})
	}
	t.Run("depth limit itself is fine", func(t *testing.T) {
		if _, _, err := DecodeCall([]byte(call("<param>" + okDeep + "</param>"))); err != nil {
			t.Fatalf("DecodeCall at depth %d: %v", MaxDepth, err)
		}
	})
}

type named string

type record struct {
	Name   string  `xmlrpc:"name"`
	Count  int     `json:"count"`
	Skip   string  `xmlrpc:"-"`
	Empty  string  `xmlrpc:"empty,omitempty"`
	Ptr    *int    `xmlrpc:"ptr"`
	Plain  float32 // no tag: Go name
	hidden int
}

// roundTrip values: encoded by us, decoded by us.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	when := time.Date(2024, 3, 9, 7, 5, 1, 0, time.UTC)
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"string", "a & b < c > d", "a & b < c > d"},
		{"empty string", "", ""},
		{"newlines and cr", "a\r\nb\tc\n", "a\r\nb\tc\n"},
		{"unicode", "héllo ✓ 𝄞", "héllo ✓ 𝄞"},
		{"control chars", "a\x00b\x1bc", "a\uFFFDb\uFFFDc"},
		{"invalid utf8", "a\xffb", "a\uFFFDb"},
		{"int", 7, int64(7)},
		{"int64 big", int64(math.MaxInt64), int64(math.MaxInt64)},
		{"int64 min", int64(math.MinInt64), int64(math.MinInt64)},
		{"int32 edge", int64(math.MaxInt32) + 1, int64(math.MaxInt32) + 1},
		{"uint8", uint8(200), int64(200)},
		{"bool", true, true},
		{"float", 0.1, 0.1},
		{"float tiny", 1e-300, 1e-300},
		{"float huge", 1.5e300, 1.5e300},
		{"float32", float32(0.5), 0.5},
		{"time", when, when},
		{"bytes", []byte{0, 1, 255}, []byte{0, 1, 255}},
		{"empty bytes", []byte{}, []byte{}},
		{"empty array", []any{}, []any{}},
		{"empty struct", map[string]any{}, map[string]any{}},
		{"nil slice", []any(nil), []any{}},
		{"strings", []string{"a", ""}, []any{"a", ""}},
		{"string map", map[string]string{"k": "v"}, map[string]any{"k": "v"}},
		{"json number int", json.Number("12"), int64(12)},
		{"json number float", json.Number("1.25"), 1.25},
		{"named string", named("local"), "local"},
		{"duration", 2 * time.Second, int64(2e9)},
		{"ints", []int{1, 2}, []any{int64(1), int64(2)}},
		{"map of ints", map[string]int{"a": 1}, map[string]any{"a": int64(1)}},
		{"struct", record{Name: "n", Count: 2, Skip: "s", Plain: 1.5, hidden: 1},
			map[string]any{"name": "n", "count": int64(2), "ptr": nil, "Plain": 1.5}},
		{"pointer", &record{Empty: "e"},
			map[string]any{"name": "", "count": int64(0), "empty": "e", "ptr": nil, "Plain": 0.0}},
		{"nested", map[string]any{"a": []any{map[string]any{"b": []any{nil, "", []any{}}}}},
			map[string]any{"a": []any{map[string]any{"b": []any{nil, "", []any{}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendCall(nil, "m", []any{tt.in})
			if err != nil {
				t.Fatalf("AppendCall: %v", err)
			}
			_, params, err := DecodeCall(b)
			if err != nil {
				t.Fatalf("DecodeCall(%s): %v", b, err)
			}
			if !reflect.DeepEqual(params[0], tt.want) {
				t.Errorf("-want %#v +got %#v\n%s", tt.want, params[0], b)
			}
			resp, err := AppendResponse(nil, tt.in)
			if err != nil {
				t.Fatalf("AppendResponse: %v", err)
			}
			got, err := DecodeResponse(resp)
			if err != nil {
				t.Fatalf("DecodeResponse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("response: -want %#v +got %#v", tt.want, got)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	tests := []struct {
		name string
		in   any
	}{
		{"channel", make(chan int)},
		{"int keys", map[int]string{1: "a"}},
		{"huge uint", uint64(math.MaxUint64)},
		{"cycle", cyclic},
		{"bad json number", json.Number("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := AppendResponse(nil, tt.in); err == nil {
				t.Errorf("AppendResponse(%T) succeeded, want an error", tt.in)
			}
		})
	}
}

func TestFaultRoundTrip(t *testing.T) {
	b := AppendFault(nil, Fault{Code: -32601, String: "no <such> method"})
	_, err := DecodeResponse(b)
	f, ok := IsRemoteFault(err)
	if !ok {
		t.Fatalf("DecodeResponse error %v, want a remote fault", err)
	}
	if f.Code != -32601 || f.String != "no <such> method" {
		t.Errorf("got %+v", f)
	}
	// kolo reads our faults too.
	if err := kolo.Response(b).Err(); err == nil || !strings.Contains(err.Error(), "no <such> method") {
		t.Errorf("kolo Err() = %v", err)
	}
}

func TestDecodeResponseErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"<methodResponse/>",
		"<methodResponse><params><param><value>1</value></param><param><value>2</value></param></params></methodResponse>",
		"<methodResponse><fault><value><int>1</int></value></fault></methodResponse>",
		"<methodResponse><fault><value><struct></struct></value></fault></methodResponse>",
		"<methodCall><methodName>x</methodName></methodCall>",
	} {
		_, err := DecodeResponse([]byte(in))
		if err == nil {
			t.Errorf("DecodeResponse(%q) succeeded", in)
		}
		if _, remote := IsRemoteFault(err); remote {
			t.Errorf("DecodeResponse(%q) = remote fault %v, want a decode error", in, err)
		}
	}
}

// kolo's decoder (which Client uses for typed replies, and which other Go
// programs may use against our servers) must read what our encoder writes.
// Known differences of kolo decoding into interface{}: an empty string
// comes back as nil, an empty struct as a nil map, and base64 as its
// undecoded text; Client.Call with *any
// therefore uses our decoder.
func TestKoloDecodesOurEncoding(t *testing.T) {
	when := time.Date(2024, 3, 9, 7, 5, 1, 0, time.UTC)
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"string", "x<y", "x<y"},
		{"int", 5, int64(5)},
		{"i8", int64(1) << 40, int64(1) << 40},
		{"negative i8", -(int64(1) << 40), -(int64(1) << 40)},
		{"bool", false, false},
		{"double", 2.5, 2.5},
		{"time", when, when},
		{"base64 (text)", []byte("hi"), "aGk="},
		{"empty string (as nil)", "", nil},
		{"empty array", []any{}, []any{}},
		{"empty struct (nil map)", map[string]any{}, map[string]any(nil)},
		{"array with nil and empties", []any{nil, []any{}, map[string]any{}, 1}, []any{nil, []any{}, map[string]any(nil), int64(1)}},
		{"nested", map[string]any{"a": []any{map[string]any{"b": nil, "c": []any{int64(1) << 40}}}, "d": "x"},
			map[string]any{"a": []any{map[string]any{"b": nil, "c": []any{int64(1) << 40}}}, "d": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendResponse(nil, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var got any
			if err := kolo.Response(b).Unmarshal(&got); err != nil {
				t.Fatalf("kolo Unmarshal(%s): %v", b, err)
			}
			if gt, ok := got.(time.Time); ok && gt.Equal(when) {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("-want %#v +got %#v", tt.want, got)
			}
		})
	}
	t.Run("typed struct", func(t *testing.T) {
		type invocation struct {
			Result    any     `xmlrpc:"result"`
			Route     string  `xmlrpc:"route"`
			Reason    string  `xmlrpc:"reason"`
			Duration  float64 `xmlrpc:"duration_ms"`
			ColdStart bool    `xmlrpc:"cold_start"`
		}
		b, err := AppendResponse(nil, map[string]any{"result": "832040\n", "route": "local", "reason": "", "duration_ms": 1.5, "cold_start": true, "extra": []any{}})
		if err != nil {
			t.Fatal(err)
		}
		var got invocation
		if err := kolo.Response(b).Unmarshal(&got); err != nil {
			t.Fatalf("kolo Unmarshal: %v", err)
		}
		want := invocation{Result: "832040\n", Route: "local", Duration: 1.5, ColdStart: true}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("-want %+v +got %+v", want, got)
		}
	})
}

// Our decoder reads what kolo's encoder writes (another Go client).
func TestWeDecodeKoloEncoding(t *testing.T) {
	b, err := kolo.EncodeMethodCall("m", "s", 3, true, 1.5, []any{"a", 2}, map[string]any{"k": "v"}, kolo.Base64("aGk="))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := DecodeCall(b)
	if err != nil {
		t.Fatalf("DecodeCall(%s): %v", b, err)
	}
	want := []any{"s", int64(3), true, 1.5, []any{"a", int64(2)}, map[string]any{"k": "v"}, []byte("hi")}
	if !reflect.DeepEqual(params, want) {
		t.Errorf("-want %#v +got %#v", want, params)
	}
}

func TestParams(t *testing.T) {
	p := Params{"s", int64(2), 1.5, true, map[string]any{}, []any{}, nil}
	check := func(name string, err error, wantOK bool) {
		t.Helper()
		if wantOK && err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if !wantOK {
			var f *Fault
			if !errors.As(err, &f) || f.Code != spillway.FaultInvalidParams {
				t.Errorf("%s: error %v, want an invalid-params fault", name, err)
			}
		}
	}
	_, err := p.String(0)
	check("String(0)", err, true)
	_, err = p.String(1)
	check("String(1)", err, false)
	_, err = p.Int(1)
	check("Int(1)", err, true)
	_, err = p.Float(1)
	check("Float(1)", err, true)
	_, err = p.Float(2)
	check("Float(2)", err, true)
	_, err = p.Bool(3)
	check("Bool(3)", err, true)
	_, err = p.Struct(4)
	check("Struct(4)", err, true)
	_, err = p.Array(5)
	check("Array(5)", err, true)
	_, err = p.String(9)
	check("String(9)", err, false)
	m, err := p.OptStruct(6)
	check("OptStruct(6)", err, true)
	if m != nil {
		t.Errorf("OptStruct(nil) = %v", m)
	}
	_, err = p.OptStruct(0)
	check("OptStruct(0)", err, false)
	check("Count(7,7)", p.Count(7, 7), true)
	check("Count(1,2)", p.Count(1, 2), false)
	check("Count(8,-1)", p.Count(8, -1), false)
}
