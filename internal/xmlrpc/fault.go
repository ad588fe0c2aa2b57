// Package xmlrpc is Spillway's XML-RPC codec: a server with bounded
// decoding (body size, nesting depth, element count) and the
// interoperability fault codes, and a client whose typed replies are decoded
// by github.com/kolo/xmlrpc. Documents are decoded in one pass by a decoder
// for the shapes clients send (fast.go), and by one on encoding/xml when that
// decoder gives up (anything unusual, and every error). The client speaks
// HTTP through net/http, or through Conns, a lean HTTP/1.1 client for many
// small calls to one host (lb's calls to its workers).
//
// Decoded values are int64 (int, i4, i8), bool, string, float64, time.Time,
// []byte (base64), map[string]any (struct), []any (array) and nil. The encoder
// takes those plus other Go integers and floats, []string, map[string]string,
// json.Number, named string/number types, and (by reflection, off the fast
// path) other slices, string-keyed maps and structs.
package xmlrpc

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spillway-faas/spillway"
)

// Fault is an XML-RPC fault. A handler returning (or wrapping) a *Fault has
// it sent as is; Client.Call returns a received fault as *Fault.
type Fault struct {
	Code   int
	String string
}

func (f *Fault) Error() string {
	return "xmlrpc fault " + strconv.Itoa(f.Code) + ": " + f.String
}

// NewFault returns a fault with a formatted fault string.
func NewFault(code int, format string, args ...any) *Fault {
	return &Fault{Code: code, String: fmt.Sprintf(format, args...)}
}

// DefaultMapError maps a handler error to a fault with the domain's codes.
func DefaultMapError(err error) Fault {
	return Fault{Code: spillway.FaultCode(err), String: spillway.FaultString(err)}
}

// Params wraps a call's parameters with accessors whose errors are
// FaultInvalidParams faults, ready to be returned from a handler.
type Params []any

// Count checks that there are at least min and at most max parameters
// (max < 0: no upper bound).
func (p Params) Count(min, max int) error {
	if len(p) < min || (max >= 0 && len(p) > max) {
		switch {
		case min == max:
			return NewFault(spillway.FaultInvalidParams, "want %d params, got %d", min, len(p))
		case max < 0:
			return NewFault(spillway.FaultInvalidParams, "want at least %d params, got %d", min, len(p))
		default:
			return NewFault(spillway.FaultInvalidParams, "want %d to %d params, got %d", min, max, len(p))
		}
	}
	return nil
}

// Has reports whether parameter i is present.
func (p Params) Has(i int) bool { return i >= 0 && i < len(p) }

func (p Params) get(i int) (any, error) {
	if !p.Has(i) {
		return nil, NewFault(spillway.FaultInvalidParams, "param %d missing (got %d params)", i+1, len(p))
	}
	return p[i], nil
}

func wrongType(i int, want string, got any) error {
	return NewFault(spillway.FaultInvalidParams, "param %d: want %s, got %s", i+1, want, TypeName(got))
}

// Any returns parameter i whatever its type.
func (p Params) Any(i int) (any, error) { return p.get(i) }

// String returns parameter i, which must be a string.
func (p Params) String(i int) (string, error) {
	v, err := p.get(i)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", wrongType(i, "string", v)
	}
	return s, nil
}

// Int returns parameter i, which must be an integer.
func (p Params) Int(i int) (int64, error) {
	v, err := p.get(i)
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, wrongType(i, "int", v)
	}
	return n, nil
}

// Float returns parameter i, which must be a double or an integer.
func (p Params) Float(i int) (float64, error) {
	v, err := p.get(i)
	if err != nil {
		return 0, err
	}
	switch n := v.(type) {
	case float64:
		return n, nil
	case int64:
		return float64(n), nil
	}
	return 0, wrongType(i, "double", v)
}

// Bool returns parameter i, which must be a boolean.
func (p Params) Bool(i int) (bool, error) {
	v, err := p.get(i)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, wrongType(i, "boolean", v)
	}
	return b, nil
}

// Struct returns parameter i, which must be a struct.
func (p Params) Struct(i int) (map[string]any, error) {
	v, err := p.get(i)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, wrongType(i, "struct", v)
	}
	return m, nil
}

// OptStruct returns parameter i as a struct, or nil when it is absent or nil.
func (p Params) OptStruct(i int) (map[string]any, error) {
	if !p.Has(i) || p[i] == nil {
		return nil, nil
	}
	return p.Struct(i)
}

// Array returns parameter i, which must be an array.
func (p Params) Array(i int) ([]any, error) {
	v, err := p.get(i)
	if err != nil {
		return nil, err
	}
	a, ok := v.([]any)
	if !ok {
		return nil, wrongType(i, "array", v)
	}
	return a, nil
}

// TypeName names a decoded value's XML-RPC type, for error messages.
func TypeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case int64:
		return "int"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		return "double"
	case time.Time:
		return "dateTime.iso8601"
	case []byte:
		return "base64"
	case map[string]any:
		return "struct"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}
