package lambdawrap

import (
	"reflect"
	"testing"
)

func TestDecodeResult(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{``, nil},
		{`null`, nil},
		{`42`, int64(42)},
		{`-7`, int64(-7)},
		{`1.0`, 1.0},
		{`1e3`, 1000.0},
		{`1180591620717411303424`, 1180591620717411303424.0}, // 2**70: past int64
		{`1e400`, "1e400"}, // past float64: the digits, not an infinity
		{`"text\n"`, "text\n"},
		{`{"a": [1, 2.5, {"b": true}]}`, map[string]any{"a": []any{int64(1), 2.5, map[string]any{"b": true}}}},
	}
	for _, tt := range tests {
		got, err := DecodeResult([]byte(tt.in))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("DecodeResult(%s) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
	if _, err := DecodeResult([]byte(`{`)); err == nil {
		t.Error("DecodeResult of broken JSON succeeded")
	}
}
