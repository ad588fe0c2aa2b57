package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// render writes a decoded XML-RPC value as an indented listing: struct
// members sorted by name, arrays as "- " items, scalars on the key's line.
func render(w io.Writer, v any) error {
	var b strings.Builder
	renderValue(&b, v, 0)
	_, err := io.WriteString(w, b.String())
	return err
}

func renderValue(b *strings.Builder, v any, indent int) {
	pad := strings.Repeat("  ", indent)
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			b.WriteString(pad + "{}\n")
			return
		}
		keys := make([]string, 0, len(x))
		width := 0
		for k := range x {
			keys = append(keys, k)
			width = max(width, len(k))
		}
		sort.Strings(keys)
		for _, k := range keys {
			if isScalar(x[k]) {
				fmt.Fprintf(b, "%s%-*s  %s\n", pad, width+1, k+":", scalar(x[k]))
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", pad, k)
			renderValue(b, x[k], indent+1)
		}
	case []any:
		if len(x) == 0 {
			b.WriteString(pad + "[]\n")
			return
		}
		for _, e := range x {
			if isScalar(e) {
				fmt.Fprintf(b, "%s- %s\n", pad, scalar(e))
				continue
			}
			fmt.Fprintf(b, "%s-\n", pad)
			renderValue(b, e, indent+1)
		}
	default:
		b.WriteString(pad + scalar(v) + "\n")
	}
}

func isScalar(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return true
}

func scalar(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" || strings.ContainsAny(x, "\n\t") || strings.TrimSpace(x) != x {
			return strconv.Quote(x)
		}
		return x
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case time.Time:
		return x.Format(time.RFC3339)
	case []byte:
		return fmt.Sprintf("base64 %s (%d bytes)", base64.StdEncoding.EncodeToString(x), len(x))
	case map[string]any:
		return "{}"
	case []any:
		return "[]"
	}
	return fmt.Sprint(v)
}
