package lambdawrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ScriptArg is the command-line argument a script-style function gets for a
// call's parameter, given as JSON: what the shim's _argv_param makes of
// json.loads(param). No argument (ok false) for null; a string as it is;
// true and false as Python prints them; a number as Python's str() of the
// int or float json.loads makes of it; an array or object as Python's
// json.dumps writes it (", " and ": " separators, non-ASCII escaped, keys in
// their order). The worker's script zygote gets the argument from here, so
// a script sees the same argv in a worker as in Lambda.
func ScriptArg(param []byte) (arg string, ok bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(param))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return "", false, fmt.Errorf("script argument: %w", err)
	}
	switch v := tok.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, true, nil
	case bool:
		if v {
			return "True", true, nil
		}
		return "False", true, nil
	case json.Number:
		s, err := pyNumber(v)
		return s, err == nil, err
	}
	var b strings.Builder
	if err := pyDumps(&b, dec, tok); err != nil {
		return "", false, fmt.Errorf("script argument: %w", err)
	}
	return b.String(), true, nil
}

// pyDumps writes, as json.dumps(json.loads(...)) would, the value whose first
// token is tok.
func pyDumps(b *strings.Builder, dec *json.Decoder, tok json.Token) error {
	switch v := tok.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case string:
		pyQuote(b, v)
	case json.Number:
		s, err := pyNumber(v)
		if err != nil {
			return err
		}
		switch s { // json.dumps spells the non-finite floats its own way
		case "inf":
			s = "Infinity"
		case "-inf":
			s = "-Infinity"
		}
		b.WriteString(s)
	case json.Delim:
		switch v {
		case '[':
			b.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					b.WriteString(", ")
				}
				t, err := dec.Token()
				if err != nil {
					return err
				}
				if err := pyDumps(b, dec, t); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
			b.WriteByte(']')
		case '{':
			// A repeated key keeps its first place and its last value, as
			// a Python dict does.
			var keys []string
			vals := map[string]string{}
			for dec.More() {
				t, err := dec.Token()
				if err != nil {
					return err
				}
				k, _ := t.(string)
				t, err = dec.Token()
				if err != nil {
					return err
				}
				var vb strings.Builder
				if err := pyDumps(&vb, dec, t); err != nil {
					return err
				}
				if _, seen := vals[k]; !seen {
					keys = append(keys, k)
				}
				vals[k] = vb.String()
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
			b.WriteByte('{')
			for i, k := range keys {
				if i > 0 {
					b.WriteString(", ")
				}
				pyQuote(b, k)
				b.WriteString(": ")
				b.WriteString(vals[k])
			}
			b.WriteByte('}')
		default:
			return fmt.Errorf("unexpected %v", v)
		}
	default:
		return fmt.Errorf("unexpected token %v", tok)
	}
	return nil
}

// pyNumber is Python's str() of json.loads(n): an int when n has no
// fraction or exponent, else a float.
func pyNumber(n json.Number) (string, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		i, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return "", fmt.Errorf("script argument: bad number %q", s)
		}
		return i.String(), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return "", fmt.Errorf("script argument: bad number %q", s)
	}
	return PyFloatRepr(f), nil
}

// PyFloatRepr is Python's repr() of a float: the shortest digits that read
// back the same, in positional notation for 1e-4 <= |f| < 1e16 (with ".0"
// when integral), else as d.ddde±XX.
func PyFloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, exp, _ := strings.Cut(e, "e")
	x, _ := strconv.Atoi(exp)
	digits := strings.Replace(mant, ".", "", 1)
	if f == 0 {
		return sign + "0.0"
	}
	decpt := x + 1 // the value is 0.DIGITS × 10^decpt
	if decpt <= -4 || decpt > 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if x < 0 {
			es, x = "-", -x
		}
		return fmt.Sprintf("%s%se%s%02d", sign, m, es, x)
	}
	switch {
	case decpt <= 0:
		return sign + "0." + strings.Repeat("0", -decpt) + digits
	case decpt >= len(digits):
		return sign + digits + strings.Repeat("0", decpt-len(digits)) + ".0"
	default:
		return sign + digits[:decpt] + "." + digits[decpt:]
	}
}

// pyQuote writes s as Python's json.dumps quotes it: ASCII only, with
// \uXXXX (lower-case hex, surrogate pairs) for the rest.
func pyQuote(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r >= 0x20 && r < 0x7f:
				b.WriteRune(r)
			case r > 0xffff:
				r -= 0x10000
				fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			default:
				fmt.Fprintf(b, `\u%04x`, r)
			}
		}
	}
	b.WriteByte('"')
}

// JSONStringSize is the size of s (valid UTF-8) encoded as Python's
// json.dumps encodes a str, the measure the shim's result cap uses.
func JSONStringSize(s string) int64 {
	n := int64(2)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c >= 0x20 && c < 0x7f:
				n++
			default:
				n += 6
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r > 0xffff {
			n += 12
		} else {
			n += 6
		}
		i += size
	}
	return n
}
