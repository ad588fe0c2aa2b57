package lambdawrap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// DecodeResult decodes a function result the shim sent as JSON, in a worker or
// in Lambda, into the types XML-RPC carries: integers in int64 range become
// int64, other numbers float64, objects map[string]any, arrays []any. Both
// routes use it, so a call answers the same types wherever it ran. An empty
// input is nil.
func DecodeResult(raw []byte) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode result: %w", err)
	}
	return normalize(v), nil
}

func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if !strings.ContainsAny(s, ".eE") {
			if i, err := x.Int64(); err == nil {
				return i
			}
		}
		f, err := x.Float64()
		if err != nil {
			return s // out of float64's range: XML-RPC has no infinity, keep the digits
		}
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	}
	return v
}
