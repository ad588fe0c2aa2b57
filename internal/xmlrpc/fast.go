package xmlrpc

import (
	"bytes"
	"unicode/utf8"
)

// The fast decoder reads the documents XML-RPC clients actually send (ours,
// Python's xmlrpc.client, the usual libraries) in one pass over the bytes,
// without encoding/xml's tokens and their allocations. It accepts a strict
// subset of XML: an optional <?xml version="1.0"?> declaration (encoding
// UTF-8 or none), elements without attributes or namespace prefixes, the
// five predefined entities and character references, UTF-8 text. On
// anything else (comments, CDATA, a DOCTYPE, \r, attributes, another
// encoding) and on every error it gives up, and the full decoder
// (decoder, on encoding/xml) decodes the document again: so what the fast
// decoder returns is always what the full one would return, and every error
// is worded by the full one. FuzzFastDecoder checks the first half.

// fastDecoder is one pass over body. A zero value plus body and maxElements
// is ready.
type fastDecoder struct {
	b           []byte
	i           int
	elements    int
	maxElements int
	depth       int
	pending     []byte // name of the end element a self-closing tag owes
	text        []byte // decoded character data of the last text token
}

type fastKind uint8

const (
	fastStart fastKind = iota + 1
	fastEnd
	fastText
)

// fastCall is DecodeCall's fast path; ok=false means decode with the full
// decoder.
func fastCall(body []byte) (method string, params []any, ok bool) {
	f := fastDecoder{b: body, maxElements: defaultMaxElements}
	if !f.prolog() {
		return "", nil, false
	}
	if !f.startNamed("methodCall") {
		return "", nil, false
	}
	haveMethod := false
	for {
		name, more, ok := f.startOrEnd("methodCall")
		if !ok {
			return "", nil, false
		}
		if !more {
			break
		}
		switch string(name) {
		case "methodName":
			if haveMethod {
				return "", nil, false
			}
			b, ok := f.textUntil("methodName")
			if !ok {
				return "", nil, false
			}
			b = bytes.TrimSpace(b)
			if len(b) == 0 || len(b) > maxMethodName {
				return "", nil, false
			}
			method, haveMethod = string(b), true
		case "params":
			if params != nil {
				return "", nil, false
			}
			if params, ok = f.params(); !ok {
				return "", nil, false
			}
		default:
			return "", nil, false
		}
	}
	if !haveMethod || !f.eof() {
		return "", nil, false
	}
	return method, params, true
}

// fastResponse is DecodeResponse's fast path.
func fastResponse(body []byte) (any, error, bool) {
	f := fastDecoder{b: body, maxElements: responseMaxElements}
	if !f.prolog() || !f.startNamed("methodResponse") {
		return nil, nil, false
	}
	name, more, ok := f.startOrEnd("methodResponse")
	if !ok || !more {
		return nil, nil, false
	}
	var (
		result any
		fault  *Fault
	)
	switch string(name) {
	case "params":
		params, ok := f.params()
		if !ok || len(params) > 1 {
			return nil, nil, false
		}
		if len(params) == 1 {
			result = params[0]
		}
	case "fault":
		v, ok := f.wrapped("fault")
		if !ok {
			return nil, nil, false
		}
		var err error
		if fault, err = faultFromValue(v); err != nil {
			return nil, nil, false
		}
	default:
		return nil, nil, false
	}
	if !f.end("methodResponse") || !f.eof() {
		return nil, nil, false
	}
	if fault != nil {
		return nil, &remoteFault{fault}, true
	}
	return result, nil, true
}

// prolog skips an XML declaration at the very start, of version 1.0 and
// with no encoding or UTF-8.
func (f *fastDecoder) prolog() bool {
	if !bytes.HasPrefix(f.b, []byte("<?xml")) {
		return true
	}
	end := bytes.Index(f.b, []byte("?>"))
	if end < 0 {
		return false
	}
	decl := f.b[len("<?xml"):end]
	f.i = end + 2
	// version first, then an optional encoding, nothing else.
	version, rest, ok := fastAttr(decl, "version")
	if !ok || string(version) != "1.0" {
		return false
	}
	if len(bytes.TrimLeft(rest, " \t\n")) > 0 {
		enc, rest, ok := fastAttr(rest, "encoding")
		if !ok || !bytes.EqualFold(enc, []byte("utf-8")) || len(bytes.TrimLeft(rest, " \t\n")) > 0 {
			return false
		}
	}
	return true
}

// fastAttr reads white space and name="value" or name='value' from the
// front of s.
func fastAttr(s []byte, name string) (value, rest []byte, ok bool) {
	t := bytes.TrimLeft(s, " \t\n")
	if len(t) == len(s) || !bytes.HasPrefix(t, []byte(name)) {
		return nil, nil, false
	}
	t = t[len(name):]
	if len(t) < 2 || t[0] != '=' || t[1] != '"' && t[1] != '\'' {
		return nil, nil, false
	}
	q := t[1]
	t = t[2:]
	j := bytes.IndexByte(t, q)
	if j < 0 {
		return nil, nil, false
	}
	return t[:j], t[j+1:], true
}

func (f *fastDecoder) skipSpace() {
	for f.i < len(f.b) {
		switch f.b[f.i] {
		case ' ', '\t', '\n':
			f.i++
		default:
			return
		}
	}
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
}

// next reads one token: a start or end element (name aliases the body) or
// text (decoded into f.text).
func (f *fastDecoder) next() (fastKind, []byte, bool) {
	if f.pending != nil {
		name := f.pending
		f.pending = nil
		return fastEnd, name, true
	}
	if f.i >= len(f.b) {
		return 0, nil, false
	}
	if f.b[f.i] != '<' {
		return fastText, nil, f.readText()
	}
	j := f.i + 1
	kind := fastStart
	if j < len(f.b) && f.b[j] == '/' {
		kind = fastEnd
		j++
	}
	start := j
	for j < len(f.b) && isNameByte(f.b[j]) {
		j++
	}
	if j == start || j >= len(f.b) {
		return 0, nil, false
	}
	if c := f.b[start]; c >= '0' && c <= '9' || c == '-' || c == '.' {
		return 0, nil, false
	}
	name := f.b[start:j]
	switch {
	case f.b[j] == '>':
		f.i = j + 1
	case kind == fastStart && f.b[j] == '/' && j+1 < len(f.b) && f.b[j+1] == '>':
		f.i = j + 2
		f.pending = name
	default:
		return 0, nil, false
	}
	if kind == fastStart {
		if f.elements++; f.elements > f.maxElements {
			return 0, nil, false
		}
	}
	return kind, name, true
}

// readText decodes character data up to the next '<' into f.text.
func (f *fastDecoder) readText() bool {
	f.text = f.text[:0]
	b := f.b
	i := f.i
	last := i
	for i < len(b) {
		c := b[i]
		switch {
		case c == '<':
			f.text = append(f.text, b[last:i]...)
			f.i = i
			return true
		case c >= 0x20 && c < utf8.RuneSelf && c != '&' && c != '>' || c == '\n' || c == '\t':
			i++
		case c == '&':
			f.text = append(f.text, b[last:i]...)
			n, ok := f.entity(b[i:])
			if !ok {
				return false
			}
			i += n
			last = i
		case c >= utf8.RuneSelf:
			r, w := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && w == 1 || !xmlChar(r) {
				return false
			}
			i += w
		default: // \r (line ends are normalised), other controls, '>'
			return false
		}
	}
	return false // a document never ends in text
}

// entity decodes the reference at the front of s into f.text and returns
// its length.
func (f *fastDecoder) entity(s []byte) (int, bool) {
	end := bytes.IndexByte(s, ';')
	if end < 2 || end > 12 {
		return 0, false
	}
	ref := s[1:end]
	switch string(ref) {
	case "lt":
		f.text = append(f.text, '<')
	case "gt":
		f.text = append(f.text, '>')
	case "amp":
		f.text = append(f.text, '&')
	case "apos":
		f.text = append(f.text, '\'')
	case "quot":
		f.text = append(f.text, '"')
	default:
		if ref[0] != '#' || len(ref) < 2 {
			return 0, false
		}
		digits, base := ref[1:], rune(10)
		if digits[0] == 'x' {
			digits, base = digits[1:], 16
		}
		if len(digits) == 0 || len(digits) > 6 {
			return 0, false
		}
		var r rune
		for _, c := range digits {
			var d rune
			switch {
			case c >= '0' && c <= '9':
				d = rune(c - '0')
			case base == 16 && c >= 'a' && c <= 'f':
				d = rune(c-'a') + 10
			case base == 16 && c >= 'A' && c <= 'F':
				d = rune(c-'A') + 10
			default:
				return 0, false
			}
			r = r*base + d
		}
		if r != '\t' && r != '\n' && r != '\r' && !xmlChar(r) {
			return 0, false
		}
		f.text = utf8.AppendRune(f.text, r)
	}
	return end + 1, true
}

// startNamed reads white space and the start element name.
func (f *fastDecoder) startNamed(name string) bool {
	got, ok := f.start()
	return ok && string(got) == name
}

// start reads white space and a start element.
func (f *fastDecoder) start() ([]byte, bool) {
	for {
		kind, name, ok := f.next()
		switch {
		case !ok:
			return nil, false
		case kind == fastStart:
			return name, true
		case kind == fastText && isSpace(f.text):
		default:
			return nil, false
		}
	}
}

// startOrEnd reads white space and a start element, or </end> (more=false).
func (f *fastDecoder) startOrEnd(end string) (name []byte, more, ok bool) {
	for {
		kind, name, ok := f.next()
		switch {
		case !ok:
			return nil, false, false
		case kind == fastStart:
			return name, true, true
		case kind == fastEnd:
			return nil, false, string(name) == end
		case isSpace(f.text):
		default:
			return nil, false, false
		}
	}
}

// end reads white space and </name>.
func (f *fastDecoder) end(name string) bool {
	_, more, ok := f.startOrEnd(name)
	return ok && !more
}

// textUntil reads character data and </name>; the result aliases f.text.
func (f *fastDecoder) textUntil(name string) ([]byte, bool) {
	kind, got, ok := f.next()
	if !ok {
		return nil, false
	}
	if kind == fastEnd {
		return nil, string(got) == name
	}
	if kind != fastText {
		return nil, false
	}
	kind, got, ok = f.next()
	return f.text, ok && kind == fastEnd && string(got) == name
}

// eof accepts only white space after the root element.
func (f *fastDecoder) eof() bool {
	f.skipSpace()
	return f.pending == nil && f.i == len(f.b)
}

func (f *fastDecoder) params() ([]any, bool) {
	params := make([]any, 0, 1)
	for {
		name, more, ok := f.startOrEnd("params")
		if !ok {
			return nil, false
		}
		if !more {
			return params, true
		}
		if string(name) != "param" {
			return nil, false
		}
		v, ok := f.wrapped("param")
		if !ok {
			return nil, false
		}
		params = append(params, v)
	}
}

// wrapped reads <value>..</value></name>.
func (f *fastDecoder) wrapped(name string) (any, bool) {
	if !f.startNamed("value") {
		return nil, false
	}
	v, ok := f.value()
	if !ok {
		return nil, false
	}
	return v, f.end(name)
}

// value reads a value after its <value>, through </value>.
func (f *fastDecoder) value() (any, bool) {
	kind, name, ok := f.next()
	if !ok {
		return nil, false
	}
	if kind == fastText {
		if !isSpace(f.text) {
			// Untyped text: a string, and nothing else may follow.
			s := string(f.text)
			kind, name, ok = f.next()
			return s, ok && kind == fastEnd && string(name) == "value"
		}
		if kind, name, ok = f.next(); !ok {
			return nil, false
		}
		if kind == fastEnd {
			// White space only: a string of it.
			return string(f.text), string(name) == "value"
		}
	}
	switch kind {
	case fastEnd:
		return "", string(name) == "value"
	case fastStart:
	default:
		return nil, false
	}
	v, ok := f.typed(name)
	if !ok || !f.end("value") {
		return nil, false
	}
	return v, true
}

func (f *fastDecoder) typed(name []byte) (any, bool) {
	switch string(name) {
	case "struct":
		return f.structValue()
	case "array":
		return f.arrayValue()
	case "nil":
		return nil, f.end("nil")
	case "string":
		b, ok := f.textUntil("string")
		if !ok {
			return nil, false
		}
		return string(b), true
	}
	tname := scalarName(name)
	if tname == "" {
		return nil, false
	}
	b, ok := f.textUntil(tname)
	if !ok {
		return nil, false
	}
	v, err := scalar(tname, b)
	return v, err == nil
}

func (f *fastDecoder) structValue() (any, bool) {
	if f.depth++; f.depth > MaxDepth {
		return nil, false
	}
	defer func() { f.depth-- }()
	m := make(map[string]any)
	for {
		el, more, ok := f.startOrEnd("struct")
		if !ok {
			return nil, false
		}
		if !more {
			return m, true
		}
		if string(el) != "member" {
			return nil, false
		}
		var (
			name            string
			v               any
			haveName, haveV bool
		)
		for {
			el, more, ok := f.startOrEnd("member")
			if !ok {
				return nil, false
			}
			if !more {
				break
			}
			switch {
			case string(el) == "name" && !haveName:
				b, ok := f.textUntil("name")
				if !ok {
					return nil, false
				}
				name, haveName = string(b), true
			case string(el) == "value" && !haveV:
				if v, ok = f.value(); !ok {
					return nil, false
				}
				haveV = true
			default:
				return nil, false
			}
		}
		if !haveName || !haveV {
			return nil, false
		}
		m[name] = v
	}
}

func (f *fastDecoder) arrayValue() (any, bool) {
	if f.depth++; f.depth > MaxDepth {
		return nil, false
	}
	defer func() { f.depth-- }()
	a := []any{}
	for {
		el, more, ok := f.startOrEnd("array")
		if !ok {
			return nil, false
		}
		if !more {
			return a, true
		}
		if string(el) != "data" {
			return nil, false
		}
		for {
			el, more, ok := f.startOrEnd("data")
			if !ok {
				return nil, false
			}
			if !more {
				break
			}
			if string(el) != "value" {
				return nil, false
			}
			v, ok := f.value()
			if !ok {
				return nil, false
			}
			a = append(a, v)
		}
	}
}

// scalarName is name as a constant string (no allocation), or "" when it
// names no scalar type.
func scalarName(name []byte) string {
	for _, n := range scalarNames {
		if string(name) == n {
			return n
		}
	}
	return ""
}

var scalarNames = [...]string{"int", "i4", "i8", "i2", "i1", "boolean", "double", "dateTime.iso8601", "base64"}
