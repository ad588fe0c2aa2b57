package pysource_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/pysource"
	"github.com/spillway-faas/spillway/internal/testutil"
)

func checker(t *testing.T) pysource.Checker {
	t.Helper()
	return pysource.Checker{Python: testutil.Python(t)}
}

func TestCheckValidSources(t *testing.T) {
	c := checker(t)
	tests := []struct {
		name     string
		src      string
		handler  string
		want     spillway.Style
		wantArgs int
	}{
		{"fibonacci script", "import sys\n\ndef fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n\nprint(fib(int(sys.argv[1])))\n", "", spillway.StyleScript, 0},
		{"lambda handler", "def handler(event, context):\n    return event\n", "", spillway.StyleHandler, 2},
		{"named handler", "def main(event, context):\n    return 1\n", "main", spillway.StyleHandler, 2},
		{"named handler absent, default present", "def handler(e, c):\n    return 1\n", "main", spillway.StyleScript, 0},
		{"nested handler is not top level", "def outer():\n    def handler(e, c):\n        pass\n", "", spillway.StyleScript, 0},
		{"method named handler is not top level", "class A:\n    def handler(self, e, c):\n        pass\n", "", spillway.StyleScript, 0},
		{"handler inside if __main__ guard is not top level", "if __name__ == '__main__':\n    def handler(e, c):\n        pass\n", "", spillway.StyleScript, 0},
		{"handler plus main guard", "import sys\ndef handler(event, context):\n    return 2\nif __name__ == '__main__':\n    print(handler(sys.argv[1], None))\n", "", spillway.StyleHandler, 2},
		{"utf-8 with BOM and non-ASCII", "\ufeff# -*- coding: utf-8 -*-\nprint('héllo ✓')\n", "", spillway.StyleScript, 0},
		{"crlf line endings", "def handler(event, context):\r\n    return 1\r\n", "", spillway.StyleHandler, 2},
		{"python 3.8+ syntax", "def handler(event, context, /):\n    if (n := 3) > 2:\n        return f'{n=}'\n", "", spillway.StyleHandler, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := c.Check(context.Background(), []byte(tc.src), tc.handler)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if a.Detected != tc.want || a.HandlerArgs != tc.wantArgs {
				t.Errorf("Check = %+v, want style %s with %d args", a, tc.want, tc.wantArgs)
			}
		})
	}
}

func TestCheckRejects(t *testing.T) {
	c := checker(t)
	c.MaxBytes = 1000
	tests := []struct {
		name    string
		src     string
		handler string
		want    []string // substrings of the one-line error
	}{
		{"empty", "", "", []string{"source is empty"}},
		{"whitespace only", " \n\t\n", "", []string{"source is empty"}},
		{"oversize", "x = 1\n" + strings.Repeat("#", 1000) + "\n", "", []string{"over the 1000-byte limit"}},
		{"not utf-8", "print('\xff')\n", "", []string{"not valid UTF-8", "offset 7"}},
		{"nul byte", "print(1)\x00\n", "", []string{"NUL byte"}},
		{"syntax error", "def f(:\n    pass\n", "", []string{"SyntaxError", "line 1"}},
		{"syntax error later", "x = 1\ny = 2\nz = (\n", "", []string{"SyntaxError", "line 3"}},
		{"indentation", "def f():\nreturn 1\n", "", []string{"IndentationError", "line 2"}},
		{"tabs and spaces", "if True:\n\tx = 1\n        y = 2\n", "", []string{"line 3"}},
		{"return outside function (compile, not parse)", "return 5\n", "", []string{"SyntaxError", "line 1", "outside function"}},
		{"python 2 print", "print 'hi'\n", "", []string{"SyntaxError", "line 1"}},
		{"bad handler name", "x = 1\n", "not-an-id", []string{"not a Python identifier"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Check(context.Background(), []byte(tc.src), tc.handler)
			if !errors.Is(err, pysource.ErrInvalid) {
				t.Fatalf("Check error = %v, want ErrInvalid", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestCheckDefaultLimitIsMaxSize(t *testing.T) {
	c := checker(t)
	line := "x = 1\n"
	at := strings.Repeat(line, pysource.MaxSize/len(line))
	if _, err := c.Check(context.Background(), []byte(at), ""); err != nil {
		t.Fatalf("source of %d bytes rejected: %v", len(at), err)
	}
	over := at + strings.Repeat("#", pysource.MaxSize-len(at)+1)
	if _, err := c.Check(context.Background(), []byte(over), ""); !errors.Is(err, pysource.ErrInvalid) {
		t.Fatalf("source of %d bytes: err = %v, want ErrInvalid", len(over), err)
	}
}

func TestCheckerFailuresAreNotInvalidSource(t *testing.T) {
	c := pysource.Checker{Python: "/nonexistent/python3"}
	_, err := c.Check(context.Background(), []byte("print(1)\n"), "")
	if err == nil || errors.Is(err, pysource.ErrInvalid) {
		t.Fatalf("err = %v, want a checker failure that is not ErrInvalid", err)
	}

	// A hung interpreter is cut off by the timeout.
	hang := filepath.Join(t.TempDir(), "python3")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c = pysource.Checker{Python: hang, Timeout: 200 * time.Millisecond}
	start := time.Now()
	_, err = c.Check(context.Background(), []byte("print(1)\n"), "")
	if err == nil || errors.Is(err, pysource.ErrInvalid) || time.Since(start) > 3*time.Second {
		t.Fatalf("err = %v after %s, want a prompt checker failure", err, time.Since(start))
	}
}

func TestResolve(t *testing.T) {
	withHandler := pysource.Analysis{Handler: "handler", HasHandler: true, HandlerArgs: 2, Detected: spillway.StyleHandler}
	script := pysource.Analysis{Handler: "handler", Detected: spillway.StyleScript}
	tests := []struct {
		name      string
		a         pysource.Analysis
		requested string
		want      spillway.Style
		wantErr   bool
	}{
		{"auto handler", withHandler, "auto", spillway.StyleHandler, false},
		{"empty is auto", script, "", spillway.StyleScript, false},
		{"force script on handler source", withHandler, "script", spillway.StyleScript, false},
		{"force handler on handler source", withHandler, "handler", spillway.StyleHandler, false},
		{"handler asked, none defined", script, "handler", "", true},
		{"unknown style", script, "lambda", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pysource.Resolve(tc.a, tc.requested)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Resolve = %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
			if err != nil && !errors.Is(err, pysource.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}
