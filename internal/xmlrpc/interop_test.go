package xmlrpc

import (
	"bufio"
	"context"
	"errors"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// Python's own xmlrpc.client against our server: every type, a fault,
// multicall and introspection.
func TestPythonClientAgainstOurServer(t *testing.T) {
	py := testutil.Python(t)
	s, hs := newTestServer(t)
	s.Register("big", "", func(context.Context, []any) (any, error) { return int64(1) << 40, nil })
	s.Register("invoke", "", func(context.Context, []any) (any, error) {
		return map[string]any{"result": "832040\n", "route": spillway.RouteLocal, "worker": "w1",
			"reason": spillway.ReasonNone, "duration_ms": 1.5, "cold_start": false}, nil
	})
	s.Register("call_faas", "", func(_ context.Context, params []any) (any, error) {
		if _, err := Params(params).String(0); err != nil {
			return nil, err
		}
		return "832040\n", nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "testdata/pyclient.py", hs.URL+"/RPC2").CombinedOutput()
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
}

// Our Client against Python's SimpleXMLRPCServer.
func TestOurClientAgainstPythonServer(t *testing.T) {
	py := testutil.Python(t)
	port := testutil.FreePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/pyserver.py", strconv.Itoa(port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start python server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("python server did not start: %q %v", line, err)
	}
	c := NewClient("http://127.0.0.1:"+strconv.Itoa(port)+"/", nil)

	when := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"string", "a & <b>", "a & <b>"},
		{"empty string", "", ""},
		{"int", 5, int64(5)},
		{"bool", true, true},
		{"double", 2.5, 2.5},
		{"time", when, when},
		{"bytes", []byte{0, 255}, []byte{0, 255}},
		{"nil", nil, nil},
		{"empty array", []any{}, []any{}},
		{"empty struct", map[string]any{}, map[string]any{}},
		{"nested", map[string]any{"a": []any{nil, "", map[string]any{"b": 1.5}}},
			map[string]any{"a": []any{nil, "", map[string]any{"b": 1.5}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got any
			if err := c.Call(ctx, "echo", []any{tt.in}, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("-want %#v +got %#v", tt.want, got)
			}
		})
	}
	t.Run("fault", func(t *testing.T) {
		err := c.Call(ctx, "fail", nil, nil)
		var f *Fault
		if !errors.As(err, &f) || !strings.Contains(f.String, "division by zero") {
			t.Errorf("err %v, want a fault about division by zero", err)
		}
	})
	t.Run("typed reply", func(t *testing.T) {
		var got struct {
			Int   int     `xmlrpc:"int"`
			Str   string  `xmlrpc:"str"`
			Float float64 `xmlrpc:"float"`
			Bool  bool    `xmlrpc:"bool"`
		}
		if err := c.Call(ctx, "types", nil, &got); err != nil {
			t.Fatal(err)
		}
		if got.Int != 1 || got.Str != "" || got.Float != 0.5 || !got.Bool {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("multicall and listMethods", func(t *testing.T) {
		var got any
		err := c.Call(ctx, "system.multicall", []any{[]any{
			map[string]any{"methodName": "echo", "params": []any{"x"}},
			map[string]any{"methodName": "fail", "params": []any{}},
		}}, &got)
		if err != nil {
			t.Fatal(err)
		}
		res, ok := got.([]any)
		if !ok || len(res) != 2 || !reflect.DeepEqual(res[0], []any{"x"}) {
			t.Fatalf("multicall = %#v", got)
		}
		if m, ok := res[1].(map[string]any); !ok || m["faultCode"] == nil {
			t.Errorf("multicall fault = %#v", res[1])
		}
		var names []string
		if err := c.Call(ctx, "system.listMethods", nil, &names); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(names, ","), "echo") {
			t.Errorf("listMethods = %v", names)
		}
	})
}
