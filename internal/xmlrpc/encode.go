package xmlrpc

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const xmlHeader = "<?xml version=\"1.0\"?>\n"

// AppendCall appends a methodCall document for method and args to dst.
func AppendCall(dst []byte, method string, args []any) ([]byte, error) {
	dst = append(dst, xmlHeader...)
	dst = append(dst, "<methodCall><methodName>"...)
	dst = appendEscaped(dst, method)
	dst = append(dst, "</methodName><params>"...)
	for i, a := range args {
		var err error
		dst = append(dst, "<param>"...)
		if dst, err = appendValue(dst, a, 0); err != nil {
			return nil, fmt.Errorf("encode param %d of %s: %w", i+1, method, err)
		}
		dst = append(dst, "</param>"...)
	}
	dst = append(dst, "</params></methodCall>\n"...)
	return dst, nil
}

// AppendResponse appends a methodResponse document carrying v to dst.
func AppendResponse(dst []byte, v any) ([]byte, error) {
	dst = append(dst, xmlHeader...)
	dst = append(dst, "<methodResponse><params><param>"...)
	dst, err := appendValue(dst, v, 0)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	dst = append(dst, "</param></params></methodResponse>\n"...)
	return dst, nil
}

// AppendFault appends a methodResponse document carrying fault f to dst.
func AppendFault(dst []byte, f Fault) []byte {
	dst = append(dst, xmlHeader...)
	dst = append(dst, "<methodResponse><fault>"...)
	dst = appendFaultValue(dst, f)
	dst = append(dst, "</fault></methodResponse>\n"...)
	return dst
}

func appendFaultValue(dst []byte, f Fault) []byte {
	dst = append(dst, "<value><struct><member><name>faultCode</name><value><int>"...)
	dst = strconv.AppendInt(dst, int64(f.Code), 10)
	dst = append(dst, "</int></value></member><member><name>faultString</name><value><string>"...)
	dst = appendEscaped(dst, f.String)
	dst = append(dst, "</string></value></member></struct></value>"...)
	return dst
}

// appendValue appends <value>..</value>. Empty strings and nil are written
// with explicit type elements (never <value/>), which every decoder we
// interoperate with reads inside arrays and structs.
func appendValue(dst []byte, v any, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("values nested deeper than %d (a cycle?)", MaxDepth)
	}
	if f, ok := v.(*Fault); ok {
		// A fault as a value: system.multicall's per-call faults.
		return appendFaultValue(dst, *f), nil
	}
	dst = append(dst, "<value>"...)
	var err error
	switch x := v.(type) {
	case nil:
		dst = append(dst, "<nil/>"...)
	case string:
		dst = appendString(dst, x)
	case bool:
		if x {
			dst = append(dst, "<boolean>1</boolean>"...)
		} else {
			dst = append(dst, "<boolean>0</boolean>"...)
		}
	case int64:
		dst = appendInt(dst, x)
	case int:
		dst = appendInt(dst, int64(x))
	case int32:
		dst = appendInt(dst, int64(x))
	case float64:
		dst = appendDouble(dst, x)
	case map[string]any:
		dst = append(dst, "<struct>"...)
		for _, k := range sortedKeys(x) {
			dst = appendMemberName(dst, k)
			if dst, err = appendValue(dst, x[k], depth+1); err != nil {
				return nil, err
			}
			dst = append(dst, "</member>"...)
		}
		dst = append(dst, "</struct>"...)
	case []any:
		dst = append(dst, "<array><data>"...)
		for _, e := range x {
			if dst, err = appendValue(dst, e, depth+1); err != nil {
				return nil, err
			}
		}
		dst = append(dst, "</data></array>"...)
	case []byte:
		dst = append(dst, "<base64>"...)
		dst = base64.StdEncoding.AppendEncode(dst, x)
		dst = append(dst, "</base64>"...)
	case time.Time:
		dst = append(dst, "<dateTime.iso8601>"...)
		dst = x.UTC().AppendFormat(dst, "20060102T15:04:05")
		dst = append(dst, "</dateTime.iso8601>"...)
	case []string:
		dst = append(dst, "<array><data>"...)
		for _, e := range x {
			dst = append(dst, "<value>"...)
			dst = appendString(dst, e)
			dst = append(dst, "</value>"...)
		}
		dst = append(dst, "</data></array>"...)
	case map[string]string:
		dst = append(dst, "<struct>"...)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			dst = appendMemberName(dst, k)
			dst = append(dst, "<value>"...)
			dst = appendString(dst, x[k])
			dst = append(dst, "</value></member>"...)
		}
		dst = append(dst, "</struct>"...)
	case json.Number:
		if n, err := x.Int64(); err == nil {
			dst = appendInt(dst, n)
		} else if f, err := x.Float64(); err == nil {
			dst = appendDouble(dst, f)
		} else {
			return nil, fmt.Errorf("bad json.Number %q", string(x))
		}
	default:
		if dst, err = appendReflect(dst, reflect.ValueOf(v), depth); err != nil {
			return nil, err
		}
	}
	dst = append(dst, "</value>"...)
	return dst, nil
}

func appendMemberName(dst []byte, k string) []byte {
	dst = append(dst, "<member><name>"...)
	dst = appendEscaped(dst, k)
	return append(dst, "</name>"...)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// appendReflect encodes the kinds the type switch does not name: named
// scalar types, pointers, other slices and maps, and structs.
func appendReflect(dst []byte, rv reflect.Value, depth int) ([]byte, error) {
	var err error
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return append(dst, "<nil/>"...), nil
		}
		return appendReflect(dst, rv.Elem(), depth)
	case reflect.String:
		return appendString(dst, rv.String()), nil
	case reflect.Bool:
		if rv.Bool() {
			return append(dst, "<boolean>1</boolean>"...), nil
		}
		return append(dst, "<boolean>0</boolean>"...), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return appendInt(dst, rv.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := rv.Uint()
		if u > math.MaxInt64 {
			return nil, fmt.Errorf("unsigned %d does not fit an i8", u)
		}
		return appendInt(dst, int64(u)), nil
	case reflect.Float32, reflect.Float64:
		return appendDouble(dst, rv.Float()), nil
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			dst = append(dst, "<base64>"...)
			dst = base64.StdEncoding.AppendEncode(dst, rv.Bytes())
			return append(dst, "</base64>"...), nil
		}
		dst = append(dst, "<array><data>"...)
		for i := 0; i < rv.Len(); i++ {
			if dst, err = appendValue(dst, rv.Index(i).Interface(), depth+1); err != nil {
				return nil, err
			}
		}
		return append(dst, "</data></array>"...), nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("map key type %s: only string keys encode as a struct", rv.Type().Key())
		}
		keys := rv.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		dst = append(dst, "<struct>"...)
		for _, k := range keys {
			dst = appendMemberName(dst, k.String())
			if dst, err = appendValue(dst, rv.MapIndex(k).Interface(), depth+1); err != nil {
				return nil, err
			}
			dst = append(dst, "</member>"...)
		}
		return append(dst, "</struct>"...), nil
	case reflect.Struct:
		if t, ok := rv.Interface().(time.Time); ok {
			dst = append(dst, "<dateTime.iso8601>"...)
			dst = t.UTC().AppendFormat(dst, "20060102T15:04:05")
			return append(dst, "</dateTime.iso8601>"...), nil
		}
		dst = append(dst, "<struct>"...)
		t := rv.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, omitEmpty := fieldName(f)
			if name == "-" {
				continue
			}
			fv := rv.Field(i)
			if omitEmpty && fv.IsZero() {
				continue
			}
			dst = appendMemberName(dst, name)
			if dst, err = appendValue(dst, fv.Interface(), depth+1); err != nil {
				return nil, err
			}
			dst = append(dst, "</member>"...)
		}
		return append(dst, "</struct>"...), nil
	}
	return nil, fmt.Errorf("cannot encode %s as XML-RPC", rv.Type())
}

// fieldName takes a struct field's name from its xmlrpc tag, else its json
// tag, else the Go name.
func fieldName(f reflect.StructField) (string, bool) {
	tag, ok := f.Tag.Lookup("xmlrpc")
	if !ok {
		tag, ok = f.Tag.Lookup("json")
	}
	if !ok {
		return f.Name, false
	}
	name, opts, _ := strings.Cut(tag, ",")
	if name == "" {
		name = f.Name
	}
	return name, opts == "omitempty" || strings.Contains(opts, "omitempty")
}

func appendInt(dst []byte, n int64) []byte {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		dst = append(dst, "<int>"...)
		dst = strconv.AppendInt(dst, n, 10)
		return append(dst, "</int>"...)
	}
	dst = append(dst, "<i8>"...)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, "</i8>"...)
}

// appendDouble writes plain decimal notation where it stays short, as the
// spec asks, and exponent notation (which Python and Go both read) for very
// large or small magnitudes.
func appendDouble(dst []byte, f float64) []byte {
	dst = append(dst, "<double>"...)
	if a := math.Abs(f); a == 0 || (a >= 1e-6 && a < 1e21) {
		dst = strconv.AppendFloat(dst, f, 'f', -1, 64)
	} else {
		dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	}
	return append(dst, "</double>"...)
}

func appendString(dst []byte, s string) []byte {
	dst = append(dst, "<string>"...)
	dst = appendEscaped(dst, s)
	return append(dst, "</string>"...)
}

// appendEscaped writes s as XML character data. Characters XML cannot carry
// (most C0 controls, invalid UTF-8) become U+FFFD; \r is written as a
// character reference so it survives line-end normalisation.
func appendEscaped(dst []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '&' && c != '<' && c != '>' {
			i++
			continue
		}
		var esc string
		width := 1
		switch {
		case c == '&':
			esc = "&amp;"
		case c == '<':
			esc = "&lt;"
		case c == '>':
			esc = "&gt;"
		case c == '\r':
			esc = "&#xD;"
		case c == '\n' || c == '\t':
			i++
			continue
		case c < 0x20:
			esc = "\uFFFD"
		default:
			r, w := utf8.DecodeRuneInString(s[i:])
			width = w
			if r == utf8.RuneError && w == 1 || !xmlChar(r) {
				esc = "\uFFFD"
			} else {
				i += w
				continue
			}
		}
		dst = append(dst, s[last:i]...)
		dst = append(dst, esc...)
		i += width
		last = i
	}
	return append(dst, s[last:]...)
}

func xmlChar(r rune) bool {
	return r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}
