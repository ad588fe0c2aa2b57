package xmlrpc

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spillway-faas/spillway"
)

// Decoding limits. Allocation stays proportional to the (size-limited) input.
const (
	// MaxDepth is the deepest nesting of arrays and structs accepted.
	MaxDepth = 64
	// maxMethodName bounds a method name's length.
	maxMethodName = 256
	// defaultMaxElements bounds the elements of one request document.
	defaultMaxElements = 1 << 18
	// responseMaxElements bounds the elements of one response document.
	responseMaxElements = 1 << 22
)

// DecodeCall decodes a methodCall document. Errors are *Fault with code
// FaultParse (not well-formed XML) or FaultInvalidRequest (well-formed, but
// not a valid call, or over a limit).
func DecodeCall(body []byte) (method string, params []any, err error) {
	if method, params, ok := fastCall(body); ok {
		return method, params, nil
	}
	return fullCall(body)
}

// fullCall is DecodeCall on encoding/xml: every document, every error.
func fullCall(body []byte) (string, []any, error) {
	d := newDecoder(body, defaultMaxElements)
	method, params, err := d.call()
	if err != nil {
		return "", nil, err
	}
	return method, params, nil
}

// DecodeResponse decodes a methodResponse document: its value, or a *Fault
// when the response is a fault. A malformed response is a *Fault with code
// FaultParse or FaultInvalidRequest too, so callers should not tell the two
// apart by type alone: use IsRemoteFault.
func DecodeResponse(body []byte) (any, error) {
	if v, err, ok := fastResponse(body); ok {
		return v, err
	}
	return fullResponse(body)
}

// fullResponse is DecodeResponse on encoding/xml.
func fullResponse(body []byte) (any, error) {
	return newDecoder(body, responseMaxElements).response()
}

type decoder struct {
	x           *xml.Decoder
	scratch     []byte
	depth       int
	elements    int
	maxElements int
}

func newDecoder(body []byte, maxElements int) *decoder {
	x := xml.NewDecoder(bytes.NewReader(body))
	x.CharsetReader = charsetReader
	return &decoder{x: x, maxElements: maxElements}
}

func parseErr(err error) error {
	if errors.Is(err, io.EOF) {
		return NewFault(spillway.FaultParse, "parse error: unexpected end of document")
	}
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		return NewFault(spillway.FaultParse, "parse error: line %d: %s", se.Line, se.Msg)
	}
	var f *Fault
	if errors.As(err, &f) {
		return f
	}
	return NewFault(spillway.FaultParse, "parse error: %v", err)
}

func invalid(format string, args ...any) error {
	return NewFault(spillway.FaultInvalidRequest, "invalid request: "+format, args...)
}

// next returns the next token that matters: comments, processing
// instructions and directives are skipped. CharData is only valid until the
// following call.
func (d *decoder) next() (xml.Token, error) {
	for {
		tok, err := d.x.RawToken()
		if err != nil {
			return nil, parseErr(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			d.elements++
			if d.elements > d.maxElements {
				return nil, invalid("more than %d elements", d.maxElements)
			}
			return t, nil
		case xml.EndElement, xml.CharData:
			return t, nil
		case xml.Directive:
			// A DOCTYPE could declare entities; encoding/xml never expands
			// them, but nothing legitimate sends one, so refuse it.
			return nil, invalid("directives are not allowed")
		}
	}
}

// start returns the next start element, skipping whitespace. Any other token
// is an error naming where.
func (d *decoder) start(where string) (xml.StartElement, error) {
	for {
		tok, err := d.next()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.CharData:
			if !isSpace(t) {
				return xml.StartElement{}, invalid("unexpected text in %s", where)
			}
		case xml.EndElement:
			return xml.StartElement{}, invalid("unexpected </%s> in %s", t.Name.Local, where)
		}
	}
}

// startOrEnd returns the next start element, or ok=false at </end>.
func (d *decoder) startOrEnd(end string) (xml.StartElement, bool, error) {
	for {
		tok, err := d.next()
		if err != nil {
			return xml.StartElement{}, false, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, true, nil
		case xml.CharData:
			if !isSpace(t) {
				return xml.StartElement{}, false, invalid("unexpected text in <%s>", end)
			}
		case xml.EndElement:
			if t.Name.Local != end {
				return xml.StartElement{}, false, invalid("unexpected </%s> in <%s>", t.Name.Local, end)
			}
			return xml.StartElement{}, false, nil
		}
	}
}

// end consumes whitespace up to </name>.
func (d *decoder) end(name string) error {
	_, more, err := d.startOrEnd(name)
	if err != nil {
		return err
	}
	if more {
		return invalid("unexpected element in <%s>", name)
	}
	return nil
}

// text reads character data up to </name>; the result aliases d.scratch.
func (d *decoder) text(name string) ([]byte, error) {
	d.scratch = d.scratch[:0]
	for {
		tok, err := d.next()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			d.scratch = append(d.scratch, t...)
		case xml.StartElement:
			return nil, invalid("unexpected <%s> in <%s>", t.Name.Local, name)
		case xml.EndElement:
			if t.Name.Local != name {
				return nil, invalid("unexpected </%s> in <%s>", t.Name.Local, name)
			}
			return d.scratch, nil
		}
	}
}

// eof checks that only whitespace and comments follow the root element.
func (d *decoder) eof() error {
	for {
		tok, err := d.x.RawToken()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return parseErr(err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			if !isSpace(t) {
				return invalid("text after the root element")
			}
		case xml.StartElement, xml.EndElement:
			return invalid("content after the root element")
		}
	}
}

func (d *decoder) call() (string, []any, error) {
	root, err := d.start("document")
	if err != nil {
		return "", nil, err
	}
	if root.Name.Local != "methodCall" {
		return "", nil, invalid("root element <%s>, want <methodCall>", root.Name.Local)
	}
	var (
		method     string
		haveMethod bool
		params     []any
	)
	for {
		el, more, err := d.startOrEnd("methodCall")
		if err != nil {
			return "", nil, err
		}
		if !more {
			break
		}
		switch el.Name.Local {
		case "methodName":
			if haveMethod {
				return "", nil, invalid("two <methodName> elements")
			}
			b, err := d.text("methodName")
			if err != nil {
				return "", nil, err
			}
			b = bytes.TrimSpace(b)
			if len(b) == 0 || len(b) > maxMethodName {
				return "", nil, invalid("method name empty or longer than %d bytes", maxMethodName)
			}
			method, haveMethod = string(b), true
		case "params":
			if params != nil {
				return "", nil, invalid("two <params> elements")
			}
			if params, err = d.params(); err != nil {
				return "", nil, err
			}
		default:
			return "", nil, invalid("unexpected <%s> in <methodCall>", el.Name.Local)
		}
	}
	if !haveMethod {
		return "", nil, invalid("no <methodName>")
	}
	if err := d.eof(); err != nil {
		return "", nil, err
	}
	return method, params, nil
}

// params reads <param><value>..</value></param>... up to </params>; the
// result is never nil.
func (d *decoder) params() ([]any, error) {
	params := make([]any, 0, 1)
	for {
		el, more, err := d.startOrEnd("params")
		if err != nil {
			return nil, err
		}
		if !more {
			return params, nil
		}
		if el.Name.Local != "param" {
			return nil, invalid("unexpected <%s> in <params>", el.Name.Local)
		}
		v, err := d.wrapped("param")
		if err != nil {
			return nil, err
		}
		params = append(params, v)
	}
}

// wrapped reads <value>..</value></name>, the content of <param> or <fault>.
func (d *decoder) wrapped(name string) (any, error) {
	el, err := d.start("<" + name + ">")
	if err != nil {
		return nil, err
	}
	if el.Name.Local != "value" {
		return nil, invalid("unexpected <%s> in <%s>", el.Name.Local, name)
	}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	return v, d.end(name)
}

func (d *decoder) response() (any, error) {
	root, err := d.start("document")
	if err != nil {
		return nil, err
	}
	if root.Name.Local != "methodResponse" {
		return nil, invalid("root element <%s>, want <methodResponse>", root.Name.Local)
	}
	el, err := d.start("<methodResponse>")
	if err != nil {
		return nil, err
	}
	var (
		result any
		fault  *Fault
	)
	switch el.Name.Local {
	case "params":
		params, err := d.params()
		if err != nil {
			return nil, err
		}
		if len(params) > 1 {
			return nil, invalid("response with %d params", len(params))
		}
		if len(params) == 1 {
			result = params[0]
		}
	case "fault":
		v, err := d.wrapped("fault")
		if err != nil {
			return nil, err
		}
		if fault, err = faultFromValue(v); err != nil {
			return nil, err
		}
	default:
		return nil, invalid("unexpected <%s> in <methodResponse>", el.Name.Local)
	}
	if err := d.end("methodResponse"); err != nil {
		return nil, err
	}
	if err := d.eof(); err != nil {
		return nil, err
	}
	if fault != nil {
		return nil, &remoteFault{fault}
	}
	return result, nil
}

// remoteFault marks a fault the peer sent, as opposed to one describing a
// malformed response. DecodeResponse returns it; it unwraps to the *Fault.
type remoteFault struct{ f *Fault }

func (r *remoteFault) Error() string { return r.f.Error() }
func (r *remoteFault) Unwrap() error { return r.f }

// IsRemoteFault reports whether err from DecodeResponse is a fault the peer
// sent, and returns it.
func IsRemoteFault(err error) (*Fault, bool) {
	var r *remoteFault
	if errors.As(err, &r) {
		return r.f, true
	}
	return nil, false
}

func faultFromValue(v any) (*Fault, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("fault value is %s, want struct", TypeName(v))
	}
	code, ok := m["faultCode"].(int64)
	if !ok {
		return nil, invalid("fault without an int faultCode")
	}
	s, _ := m["faultString"].(string) // absent or not a string: empty
	return &Fault{Code: int(code), String: s}, nil
}

// value reads a value after its <value> start, up to and including </value>.
func (d *decoder) value() (any, error) {
	var text []byte
	for {
		tok, err := d.next()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			text = append(text, t...)
		case xml.EndElement:
			if t.Name.Local != "value" {
				return nil, invalid("unexpected </%s> in <value>", t.Name.Local)
			}
			// A value with no type element is a string.
			if len(text) == 0 {
				return "", nil
			}
			return string(text), nil
		case xml.StartElement:
			if !isSpace(text) {
				return nil, invalid("text and <%s> mixed in <value>", t.Name.Local)
			}
			v, err := d.typed(t.Name.Local)
			if err != nil {
				return nil, err
			}
			if err := d.end("value"); err != nil {
				return nil, err
			}
			return v, nil
		}
	}
}

// typed reads a typed value after its start element, through its end.
func (d *decoder) typed(name string) (any, error) {
	switch name {
	case "struct":
		return d.structValue()
	case "array":
		return d.arrayValue()
	case "nil":
		if err := d.end(name); err != nil {
			return nil, err
		}
		return nil, nil
	}
	b, err := d.text(name)
	if err != nil {
		return nil, err
	}
	if name == "string" {
		return string(b), nil
	}
	return scalar(name, b)
}

// scalar converts the text of a scalar value of type name.
func scalar(name string, b []byte) (any, error) {
	switch name {
	case "int", "i4", "i8", "i2", "i1":
		n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
		if err != nil {
			return nil, invalid("bad <%s> %q", name, clip(b))
		}
		return n, nil
	case "boolean":
		switch string(bytes.TrimSpace(b)) {
		case "1", "true":
			return true, nil
		case "0", "false":
			return false, nil
		}
		return nil, invalid("bad <boolean> %q", clip(b))
	case "double":
		f, err := strconv.ParseFloat(string(bytes.TrimSpace(b)), 64)
		if err != nil {
			return nil, invalid("bad <double> %q", clip(b))
		}
		return f, nil
	case "dateTime.iso8601":
		t, err := parseTime(string(bytes.TrimSpace(b)))
		if err != nil {
			return nil, invalid("bad <dateTime.iso8601> %q", clip(b))
		}
		return t, nil
	case "base64":
		clean := stripSpace(b)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			return nil, invalid("bad <base64>: %v", err)
		}
		return out[:n], nil
	}
	return nil, invalid("unknown value type <%s>", name)
}

func (d *decoder) structValue() (any, error) {
	if d.depth++; d.depth > MaxDepth {
		return nil, invalid("values nested deeper than %d", MaxDepth)
	}
	defer func() { d.depth-- }()
	m := make(map[string]any)
	for {
		el, more, err := d.startOrEnd("struct")
		if err != nil {
			return nil, err
		}
		if !more {
			return m, nil
		}
		if el.Name.Local != "member" {
			return nil, invalid("unexpected <%s> in <struct>", el.Name.Local)
		}
		var (
			name            string
			v               any
			haveName, haveV bool
		)
		for {
			el, more, err := d.startOrEnd("member")
			if err != nil {
				return nil, err
			}
			if !more {
				break
			}
			switch {
			case el.Name.Local == "name" && !haveName:
				b, err := d.text("name")
				if err != nil {
					return nil, err
				}
				name, haveName = string(b), true
			case el.Name.Local == "value" && !haveV:
				if v, err = d.value(); err != nil {
					return nil, err
				}
				haveV = true
			default:
				return nil, invalid("unexpected <%s> in <member>", el.Name.Local)
			}
		}
		if !haveName || !haveV {
			return nil, invalid("<member> needs a <name> and a <value>")
		}
		m[name] = v
	}
}

func (d *decoder) arrayValue() (any, error) {
	if d.depth++; d.depth > MaxDepth {
		return nil, invalid("values nested deeper than %d", MaxDepth)
	}
	defer func() { d.depth-- }()
	a := []any{}
	for {
		el, more, err := d.startOrEnd("array")
		if err != nil {
			return nil, err
		}
		if !more {
			return a, nil
		}
		if el.Name.Local != "data" {
			return nil, invalid("unexpected <%s> in <array>", el.Name.Local)
		}
		for {
			el, more, err := d.startOrEnd("data")
			if err != nil {
				return nil, err
			}
			if !more {
				break
			}
			if el.Name.Local != "value" {
				return nil, invalid("unexpected <%s> in <data>", el.Name.Local)
			}
			v, err := d.value()
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	}
}

var timeLayouts = []string{
	"20060102T15:04:05",
	"20060102T15:04:05Z07:00",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04:05Z07:00",
	"20060102T150405",
	"20060102T150405Z07:00",
}

func parseTime(s string) (time.Time, error) {
	var err error
	for _, layout := range timeLayouts {
		var t time.Time
		if t, err = time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, err
}

func isSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

func stripSpace(b []byte) []byte {
	if isSpace(b) {
		return nil
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			out = append(out, c)
		}
	}
	return out
}

// clip shortens bad input for an error message.
func clip(b []byte) string {
	const n = 40
	if len(b) <= n {
		return string(b)
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return string(b[:cut]) + "..."
}

// charsetReader accepts the single-byte encodings a client may declare.
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "us-ascii", "ascii", "iso-8859-1", "latin1", "latin-1", "iso8859-1":
		return &latin1Reader{r: in}, nil
	}
	return nil, fmt.Errorf("unsupported encoding %q", label)
}

// latin1Reader turns ISO-8859-1 into UTF-8.
type latin1Reader struct {
	r   io.Reader
	buf []byte
	out []byte
}

func (l *latin1Reader) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		if cap(l.buf) == 0 {
			l.buf = make([]byte, 4096)
		}
		n, err := l.r.Read(l.buf[:cap(l.buf)])
		l.out = l.out[:0]
		for _, c := range l.buf[:n] {
			l.out = utf8.AppendRune(l.out, rune(c))
		}
		if n == 0 && err != nil {
			return 0, err
		}
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}
