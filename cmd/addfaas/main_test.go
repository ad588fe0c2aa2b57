package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/spillway-faas/spillway/internal/pysource"
	"github.com/spillway-faas/spillway/internal/registry"
	"github.com/spillway-faas/spillway/internal/testutil"
)

const (
	scriptSrc  = "import sys\n\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint(fib(int(sys.argv[1])))\n"
	handlerSrc = "def handler(event, context):\n    return event['parameter']\n"
)

// cli runs the built addfaas binary in its own empty directory with a clean
// environment (plus env) and returns exit code, stdout and stderr.
type cli struct {
	t      *testing.T
	bin    string
	python string
}

type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

func (c cli) run(dir string, env []string, stdin string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--python", c.python}, args...)...)
	if dir == "" {
		dir = c.t.TempDir()
	}
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run addfaas: %v", err)
	}
	return res
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k == "REDIS_ADDR" || k == "FAAS_FUNCTION_NAME" || k == "REDIS_PASSWORD" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

var outRE = regexp.MustCompile(`(?m)^(name|version|style|handler|sha256|reuse_process):\s+(\S+)$`)

func parseOut(t *testing.T, s string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, g := range outRE.FindAllStringSubmatch(s, -1) {
		m[g[1]] = g[2]
	}
	for _, k := range []string{"name", "version", "style", "sha256"} {
		if m[k] == "" {
			t.Fatalf("output lacks %s:\n%s", k, s)
		}
	}
	return m
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// snapshot is every key in Redis with its type and content.
func snapshot(t *testing.T, rc *redis.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := rc.Keys(ctx, "*").Result() // test-only, tiny keyspace
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "dbsize=%d\n", rc.DBSize(ctx).Val())
	for _, k := range keys {
		d, err := rc.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%x\n", k, d)
	}
	return b.String()
}

func TestAddfaas(t *testing.T) {
	r := testutil.StartRedis(t)
	c := cli{t: t, bin: testutil.BuildBinary(t, "addfaas"), python: testutil.Python(t)}
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := t.TempDir()
	scriptFile := writeFile(t, src, "fib.py", scriptSrc)
	handlerFile := writeFile(t, src, "h.py", handlerSrc)
	redisEnv := []string{"REDIS_ADDR=" + r.Addr}

	t.Run("publish", func(t *testing.T) {
		tests := []struct {
			name    string
			stdin   string
			env     []string
			args    []string
			want    map[string]string
			wantKey string
		}{
			{"script file, default name", "", nil, []string{scriptFile},
				map[string]string{"name": "faas", "version": "1", "style": "script", "sha256": registry.SHA256(scriptSrc)}, "spillway:fn:faas"},
			{"same name again bumps the version", "", nil, []string{scriptFile},
				map[string]string{"name": "faas", "version": "2", "style": "script"}, "spillway:fn:faas"},
			{"handler detected", "", nil, []string{"--name", "h", handlerFile},
				map[string]string{"name": "h", "version": "1", "style": "handler", "handler": "handler", "sha256": registry.SHA256(handlerSrc)}, "spillway:fn:h"},
			{"style override to script", "", nil, []string{"--name", "h2", "--style", "script", handlerFile},
				map[string]string{"name": "h2", "style": "script"}, "spillway:fn:h2"},
			{"flags after SOURCE", "", nil, []string{handlerFile, "--name", "late"},
				map[string]string{"name": "late", "style": "handler"}, "spillway:fn:late"},
			{"stdin with a named handler", "def main(event, context):\n    return 1\n", nil, []string{"--name", "stdin", "--handler", "main", "-"},
				map[string]string{"name": "stdin", "style": "handler", "handler": "main"}, "spillway:fn:stdin"},
			{"FAAS_FUNCTION_NAME", "", []string{"FAAS_FUNCTION_NAME=fromenv"}, []string{scriptFile},
				map[string]string{"name": "fromenv"}, "spillway:fn:fromenv"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res := c.run("", append(redisEnv, tc.env...), tc.stdin, tc.args...)
				if res.code != 0 {
					t.Fatalf("exit %d: %s", res.code, res.stderr)
				}
				got := parseOut(t, res.stdout)
				for k, v := range tc.want {
					if got[k] != v {
						t.Errorf("%s = %q, want %q\n%s", k, got[k], v, res.stdout)
					}
				}
				h := rc.HGetAll(ctx, tc.wantKey).Val()
				if h["version"] != got["version"] || h["sha256"] != got["sha256"] || h["style"] != got["style"] || registry.SHA256(h["code"]) != got["sha256"] {
					t.Errorf("stored %v does not match output %v", h, got)
				}
			})
		}
	})

	t.Run("redis address sources", func(t *testing.T) {
		// .env in the working directory is read; the environment wins over it;
		// --redis wins over both.
		closed := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
		dotenvDir := t.TempDir()
		writeFile(t, dotenvDir, ".env", "REDIS_ADDR="+r.Addr+"\nFAAS_FUNCTION_NAME=dotenv\n")
		badDotenvDir := t.TempDir()
		writeFile(t, badDotenvDir, ".env", "REDIS_ADDR="+closed+"\n")
		tests := []struct {
			name     string
			dir      string
			env      []string
			args     []string
			wantCode int
			wantName string
		}{
			{".env", dotenvDir, nil, nil, 0, "dotenv"},
			{"env over .env", badDotenvDir, redisEnv, nil, 0, "faas"},
			{"--redis over env", "", []string{"REDIS_ADDR=" + closed}, []string{"--redis", r.Addr}, 0, "faas"},
			{"env used", "", []string{"REDIS_ADDR=" + closed}, []string{"--redis-timeout", "300ms"}, 1, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res := c.run(tc.dir, tc.env, "", append(tc.args, scriptFile)...)
				if res.code != tc.wantCode {
					t.Fatalf("exit %d, want %d: %s", res.code, tc.wantCode, res.stderr)
				}
				if tc.wantName != "" && parseOut(t, res.stdout)["name"] != tc.wantName {
					t.Errorf("published as %q, want %q", parseOut(t, res.stdout)["name"], tc.wantName)
				}
			})
		}
	})

	t.Run("bad input exits 2 and writes nothing", func(t *testing.T) {
		dir := t.TempDir()
		big := strings.Repeat("x = 1\n", pysource.MaxSize/6+1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			switch req.URL.Path {
			case "/fib.py":
				fmt.Fprint(w, scriptSrc)
			case "/big.py":
				fmt.Fprint(w, big)
			case "/bad.py":
				fmt.Fprint(w, "def f(:\n")
			default:
				http.NotFound(w, req)
			}
		}))
		defer srv.Close()
		gone := httptest.NewServer(http.NotFoundHandler())
		goneURL := gone.URL + "/fib.py"
		gone.Close()

		sub := rc.Subscribe(ctx, registry.UpdatesChannel)
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		msgs := sub.Channel()
		before := snapshot(t, rc)

		tests := []struct {
			name  string
			stdin string
			args  []string
			want  []string
		}{
			{"invalid python", "", []string{writeFile(t, dir, "bad.py", "def f(:\n    pass\n")}, []string{"SyntaxError", "line 1"}},
			{"invalid python later line", "", []string{writeFile(t, dir, "bad3.py", "import sys\n\nprint(sys.argv[1]\n")}, []string{"line 3"}},
			{"empty file", "", []string{writeFile(t, dir, "empty.py", "")}, []string{"empty"}},
			{"empty stdin", "", []string{"-"}, []string{"empty"}},
			{"oversize file", "", []string{writeFile(t, dir, "big.py", big)}, []string{"limit"}},
			{"not utf-8", "", []string{writeFile(t, dir, "latin1.py", "print('caf\xe9')\n")}, []string{"UTF-8"}},
			{"missing file", "", []string{filepath.Join(dir, "nope.py")}, []string{"no such file"}},
			{"directory", "", []string{dir}, []string{"directory"}},
			{"unreachable URL", "", []string{goneURL}, []string{"fetch source", "refused"}},
			{"URL 404", "", []string{srv.URL + "/missing.py"}, []string{"404"}},
			{"URL oversize", "", []string{srv.URL + "/big.py"}, []string{"limit"}},
			{"URL invalid python", "", []string{srv.URL + "/bad.py"}, []string{"SyntaxError"}},
			{"unsupported scheme", "", []string{"ftp://127.0.0.1/fib.py"}, []string{"http"}},
			{"handler style without handler", "", []string{"--style", "handler", scriptFile}, []string{"def handler"}},
			{"unknown style", "", []string{"--style", "lambda", scriptFile}, []string{"style"}},
			{"bad handler name", "", []string{"--handler", "1x", scriptFile}, []string{"identifier"}},
			{"bad name", "", []string{"--name", "a:b", scriptFile}, []string{"--name"}},
			{"no source", "", nil, []string{"SOURCE"}},
			{"two sources", "", []string{scriptFile, handlerFile}, []string{"SOURCE"}},
			{"unknown flag", "", []string{"--frobnicate", scriptFile}, []string{"frobnicate"}},
			{"--list with a source", "", []string{"--list", scriptFile}, []string{"--list"}},
			{"--delete with a source", "", []string{"--delete", "faas", scriptFile}, []string{"--delete takes no SOURCE"}},
			{"--delete and --show", "", []string{"--delete", "faas", "--show", "faas"}, []string{"--delete and --show are exclusive"}},
			{"--delete with a setting", "", []string{"--delete", "faas", "--max", "3"}, []string{"--max is for publishing"}},
			{"--delete a bad name", "", []string{"--delete", "a:b"}, []string{"--delete", "a:b"}},
			{"--min not a number", "", []string{"--min", "two", scriptFile}, []string{`--min "two"`, "whole number"}},
			{"--min negative", "", []string{"--min", "-1", scriptFile}, []string{"--min -1: must be between 0 and 1000"}},
			{"--max 0", "", []string{"--max", "0", scriptFile}, []string{"--max 0: must be between 1 and 1000"}},
			{"--max below --min", "", []string{"--min", "3", "--max", "2", scriptFile}, []string{"--max 2: must be at least min (3)"}},
			{"--concurrency 0", "", []string{"--concurrency", "0", scriptFile}, []string{"--concurrency 0: must be between 1 and 256"}},
			{"--concurrency 1000", "", []string{"--concurrency", "1000", scriptFile}, []string{"--concurrency 1000"}},
			{"--timeout not a duration", "", []string{"--timeout", "soon", scriptFile}, []string{`--timeout "soon"`, "duration"}},
			{"--timeout 0", "", []string{"--timeout", "0", scriptFile}, []string{"--timeout 0: must be positive"}},
			{"--timeout over 15m", "", []string{"--timeout", "1h", scriptFile}, []string{"--timeout 1h0m0s", "at most 15m"}},
			{"two bad settings", "", []string{"--min", "-1", "--concurrency", "0", scriptFile}, []string{"--min -1", "--concurrency 0"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res := c.run("", redisEnv, tc.stdin, tc.args...)
				if res.code != 2 {
					t.Fatalf("exit %d, want 2; stderr: %s", res.code, res.stderr)
				}
				if res.stdout != "" {
					t.Errorf("stdout = %q, want nothing", res.stdout)
				}
				line := strings.TrimSuffix(res.stderr, "\n")
				if strings.Contains(line, "\n") || !strings.HasPrefix(line, "addfaas: ") {
					t.Errorf("stderr is not one 'addfaas: ...' line: %q", res.stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(strings.ToLower(line), strings.ToLower(w)) {
						t.Errorf("stderr %q lacks %q", line, w)
					}
				}
			})
		}
		if after := snapshot(t, rc); after != before {
			t.Errorf("Redis changed by rejected input:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		select {
		case m := <-msgs:
			t.Errorf("rejected input announced %q", m.Payload)
		case <-time.After(200 * time.Millisecond):
		}

		t.Run("the good URL publishes", func(t *testing.T) {
			res := c.run("", redisEnv, "", "--name", "fromurl", srv.URL+"/fib.py")
			if res.code != 0 || parseOut(t, res.stdout)["sha256"] != registry.SHA256(scriptSrc) {
				t.Fatalf("exit %d: %s%s", res.code, res.stdout, res.stderr)
			}
		})
	})

	t.Run("redis down exits 1 naming the address, in bounded time", func(t *testing.T) {
		closed := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
		silent := silentServer(t) // accepts connections, never answers
		before := snapshot(t, rc)
		tests := []struct {
			name    string
			args    []string
			maxTime time.Duration
		}{
			{"server that never answers", []string{"--redis", silent, "--redis-timeout", "1s", scriptFile}, 4 * time.Second},
			{"default 5s budget", []string{"--redis", closed, scriptFile}, 8 * time.Second},
			{"--redis-timeout", []string{"--redis", closed, "--redis-timeout", "500ms", scriptFile}, 3 * time.Second},
			{"--list", []string{"--redis", closed, "--redis-timeout", "500ms", "--list"}, 3 * time.Second},
			{"--show", []string{"--redis", closed, "--redis-timeout", "500ms", "--show", "faas"}, 3 * time.Second},
			{"--delete", []string{"--redis", closed, "--redis-timeout", "500ms", "--delete", "faas"}, 3 * time.Second},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res := c.run("", nil, "", tc.args...)
				if res.code != 1 {
					t.Fatalf("exit %d, want 1: %s", res.code, res.stderr)
				}
				if addr := tc.args[1]; !strings.Contains(res.stderr, addr) || strings.Count(res.stderr, "\n") != 1 {
					t.Errorf("stderr should be one line naming %s: %q", addr, res.stderr)
				}
				if res.took > tc.maxTime {
					t.Errorf("took %s, want under %s", res.took, tc.maxTime)
				}
			})
		}
		if after := snapshot(t, rc); after != before {
			t.Errorf("Redis changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		// Bad input is reported before Redis is even tried.
		res := c.run("", nil, "", "--redis", closed, writeFile(t, t.TempDir(), "e.py", ""))
		if res.code != 2 || res.took > 3*time.Second {
			t.Errorf("bad input with Redis down: exit %d after %s, want 2 at once", res.code, res.took)
		}
	})

	t.Run("list and show", func(t *testing.T) {
		rc.Set(ctx, "legacy", "print('old')\n", 0)
		res := c.run("", redisEnv, "", "--list")
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		if !strings.HasPrefix(lines[0], "NAME") {
			t.Errorf("no header: %q", lines[0])
		}
		rows := map[string][]string{}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			rows[f[0]] = f
		}
		if f, v := rows["faas"], rc.HGet(ctx, registry.Key("faas"), "version").Val(); len(f) < 3 || f[1] != v || f[2] != "script" {
			t.Errorf("faas row = %v, want version %s, script", f, v)
		}
		if _, ok := rows["legacy"]; ok {
			t.Errorf("legacy plain key listed: %v", rows["legacy"])
		}
		if f := rows["h"]; len(f) < 3 || f[2] != "handler" {
			t.Errorf("h row = %v, want handler", f)
		}

		res = c.run("", redisEnv, "", "--show", "h")
		if res.code != 0 || !strings.Contains(res.stdout, "style:      handler") || !strings.HasSuffix(res.stdout, "\n"+handlerSrc) {
			t.Errorf("--show h: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		res = c.run("", redisEnv, "", "--show", "legacy")
		if res.code != 0 || !strings.Contains(res.stdout, "style:      script") || !strings.Contains(res.stdout, "legacy plain key") {
			t.Errorf("--show legacy: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		res = c.run("", redisEnv, "", "--show", "missing")
		if res.code != 1 || !strings.Contains(res.stderr, "not found") {
			t.Errorf("--show missing: exit %d, stderr %q; want 1, not found", res.code, res.stderr)
		}
	})

	t.Run("concurrent processes get distinct versions", func(t *testing.T) {
		const n = 8
		dir := t.TempDir()
		type pub struct {
			version int
			sha     string
		}
		pubs := make(chan pub, n)
		var wg sync.WaitGroup
		for i := range n {
			f := writeFile(t, dir, fmt.Sprintf("f%d.py", i), fmt.Sprintf("print(%d)\n", i))
			wg.Go(func() {
				res := c.run("", redisEnv, "", "--name", "race", f)
				if res.code != 0 {
					t.Errorf("process %d: exit %d: %s", i, res.code, res.stderr)
					return
				}
				out := parseOut(t, res.stdout)
				v, _ := strconv.Atoi(out["version"])
				pubs <- pub{v, out["sha256"]}
			})
		}
		wg.Wait()
		close(pubs)
		bySHA := map[int]string{}
		for p := range pubs {
			if _, dup := bySHA[p.version]; dup {
				t.Errorf("version %d given twice", p.version)
			}
			bySHA[p.version] = p.sha
		}
		for v := 1; v <= n; v++ {
			if bySHA[v] == "" {
				t.Errorf("version %d missing; got %v", v, bySHA)
			}
		}
		h := rc.HGetAll(ctx, registry.Key("race")).Val()
		if h["version"] != strconv.Itoa(n) || h["sha256"] != bySHA[n] || registry.SHA256(h["code"]) != h["sha256"] || h["style"] != "script" {
			t.Errorf("final record %v is not the intact version %d", h, n)
		}
	})
}

func TestParseArgsEnv(t *testing.T) {
	t.Chdir(t.TempDir()) // no .env here
	tests := []struct {
		name      string
		env       map[string]string
		args      []string
		wantName  string
		wantRedis string
	}{
		{"defaults", nil, []string{"f.py"}, "faas", "127.0.0.1:6379"},
		{"env", map[string]string{"FAAS_FUNCTION_NAME": "x", "REDIS_ADDR": "127.0.0.1:7000"}, []string{"f.py"}, "x", "127.0.0.1:7000"},
		{"flags win", map[string]string{"FAAS_FUNCTION_NAME": "x", "REDIS_ADDR": "127.0.0.1:7000"}, []string{"--name", "y", "--redis", "127.0.0.1:7001", "f.py"}, "y", "127.0.0.1:7001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			cfg, err := parseArgs(tc.args, &bytes.Buffer{}, lookup)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.name != tc.wantName || cfg.redisAddr != tc.wantRedis || cfg.source != "f.py" {
				t.Errorf("cfg = %+v, want name %s redis %s", cfg, tc.wantName, tc.wantRedis)
			}
		})
	}
}

// silentServer listens on loopback, accepts connections and never replies,
// like a hung server; it returns the address.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestAddfaasRedisPassword: against a Redis that requires a password,
// addfaas publishes with the password (flag, environment or .env) and
// without it fails with exit 1 and writes nothing: the protection-off run
// (no password) is the attack a function with a route to Redis would try.
func TestAddfaasRedisPassword(t *testing.T) {
	const pw = "t3st-pass"
	r := testutil.StartRedisAuth(t, pw)
	c := cli{t: t, bin: testutil.BuildBinary(t, "addfaas"), python: testutil.Python(t)}
	rc := redis.NewClient(&redis.Options{Addr: r.Addr, Password: pw})
	t.Cleanup(func() { rc.Close() })
	src := writeFile(t, t.TempDir(), "fib.py", scriptSrc)
	dotenv := t.TempDir()
	writeFile(t, dotenv, ".env", "REDIS_PASSWORD="+pw+"\n")
	tests := []struct {
		name     string
		dir      string
		env      []string
		args     []string
		wantCode int
	}{
		{"no password", "", nil, nil, 1},
		{"wrong password", "", []string{"REDIS_PASSWORD=nope"}, nil, 1},
		{"flag", "", nil, []string{"--redis-password", pw}, 0},
		{"environment", "", []string{"REDIS_PASSWORD=" + pw}, nil, 0},
		{".env", dotenv, nil, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			before := rc.HGet(ctx, "spillway:fn:pw", "version").Val()
			args := append([]string{"--name", "pw", "--redis-timeout", "2s"}, tc.args...)
			res := c.run(tc.dir, append([]string{"REDIS_ADDR=" + r.Addr}, tc.env...), "", append(args, src)...)
			if res.code != tc.wantCode {
				t.Fatalf("exit %d, want %d: %s", res.code, tc.wantCode, res.stderr)
			}
			after := rc.HGet(ctx, "spillway:fn:pw", "version").Val()
			if wrote := after != before; wrote != (tc.wantCode == 0) {
				t.Errorf("version %q -> %q, exit %d", before, after, res.code)
			}
			if tc.wantCode != 0 && strings.Contains(res.stderr, pw) {
				t.Errorf("stderr shows the password: %s", res.stderr)
			}
		})
	}
}

func TestAddfaasReuseProcess(t *testing.T) {
	// --reuse-process is stored in the record (field reuse_process=1) and
	// shown; publishing again without it removes it; a handler-style
	// function refuses it with exit 2 and writes nothing.
	c, rc, env := withRedis(t)
	ctx := ctxT(t, time.Minute)
	src := t.TempDir()
	scriptFile := writeFile(t, src, "fib.py", scriptSrc)
	handlerFile := writeFile(t, src, "h.py", handlerSrc)

	res := c.run("", env, "", "--name", "fast", "--reuse-process", scriptFile)
	if res.code != 0 || parseOut(t, res.stdout)["reuse_process"] != "yes" {
		t.Fatalf("publish with --reuse-process: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if v := rc.HGet(ctx, registry.Key("fast"), "reuse_process").Val(); v != "1" {
		t.Errorf("field reuse_process = %q, want 1", v)
	}
	if res := c.run("", env, "", "--show", "fast"); !strings.Contains(res.stdout, "reuse_process: yes") {
		t.Errorf("--show does not say it:\n%s", res.stdout)
	}
	res = c.run("", env, "", "--name", "fast", scriptFile)
	if res.code != 0 || rc.HExists(ctx, registry.Key("fast"), "reuse_process").Val() {
		t.Errorf("publish without the flag kept reuse_process (exit %d)", res.code)
	}

	before := snapshot(t, rc)
	res = c.run("", env, "", "--name", "h", "--reuse-process", handlerFile)
	if res.code != 2 || !strings.Contains(res.stderr, "--reuse-process is for script-style") {
		t.Errorf("handler with --reuse-process: exit %d, %q; want 2 and the reason", res.code, res.stderr)
	}
	if after := snapshot(t, rc); after != before {
		t.Error("a refused publish wrote to Redis")
	}
}

func TestAddfaasSettings(t *testing.T) {
	// --min, --max, --concurrency and --timeout are stored in the record
	// (fields min, max, concurrency, timeout as a Go duration), printed, and
	// shown by --show and --list; a publish without them removes them, so
	// the function takes lb's .env values again.
	c, rc, env := withRedis(t)
	ctx := ctxT(t, time.Minute)
	scriptFile := writeFile(t, t.TempDir(), "fib.py", scriptSrc)
	settingsOf := func() map[string]string {
		t.Helper()
		got := map[string]string{}
		for _, f := range []string{"min", "max", "concurrency", "timeout", "constraints"} {
			if v, err := rc.HGet(ctx, registry.Key("fib"), f).Result(); err == nil {
				got[f] = v
			}
		}
		return got
	}

	tests := []struct {
		name    string
		args    []string
		want    map[string]string // the fields stored
		wantOut []string          // lines printed
	}{
		{"all four", []string{"--min", "1", "--max", "4", "--concurrency", "2", "--timeout", "45s"},
			map[string]string{"min": "1", "max": "4", "concurrency": "2", "timeout": "45s"},
			[]string{"min: 1", "max: 4", "concurrency: 2", "timeout: 45s"}},
		{"bare seconds and scale to zero", []string{"--min", "0", "--timeout", "90"},
			map[string]string{"min": "0", "timeout": "1m30s"},
			[]string{"min: 0", "timeout: 1m30s"}},
		{"placement constraints, repeatable", []string{"--constraint", "node.labels.gpu==true", "--constraint", "node.role!=manager"},
			map[string]string{"constraints": "node.labels.gpu==true\nnode.role!=manager"},
			[]string{"constraint: node.labels.gpu==true", "constraint: node.role!=manager"}},
		{"none: lb's defaults again", nil, map[string]string{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := c.run("", env, "", append(append([]string{"--name", "fib"}, tc.args...), scriptFile)...)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			if diff := fieldsDiff(tc.want, settingsOf()); diff != "" {
				t.Errorf("stored settings (-want +got):\n%s", diff)
			}
			for _, line := range tc.wantOut {
				if !strings.Contains(res.stdout, "\n"+line+"\n") {
					t.Errorf("output lacks %q:\n%s", line, res.stdout)
				}
			}
			if len(tc.wantOut) == 0 && strings.Contains(res.stdout, "timeout:") {
				t.Errorf("output shows settings that are not set:\n%s", res.stdout)
			}
		})
	}

	res := c.run("", env, "", "--name", "fib", "--max", "3", "--timeout", "2m", scriptFile)
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	res = c.run("", env, "", "--show", "fib")
	if res.code != 0 || !strings.Contains(res.stdout, "\nmax: 3\ntimeout: 2m0s\n") {
		t.Errorf("--show: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = c.run("", env, "", "--list")
	if res.code != 0 || !strings.Contains(res.stdout, "SETTINGS") || !strings.Contains(res.stdout, "max=3 timeout=2m0s") {
		t.Errorf("--list: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

func TestAddfaasDelete(t *testing.T) {
	// --delete removes the record, announces it (so lb drains the function)
	// and prints what it removed; a function that is not there is exit 1.
	c, rc, env := withRedis(t)
	ctx := ctxT(t, time.Minute)
	src := t.TempDir()
	for _, name := range []string{"gone", "kept"} {
		if res := c.run("", env, "", "--name", name, "--max", "3", writeFile(t, src, name+".py", handlerSrc)); res.code != 0 {
			t.Fatalf("publish %s: exit %d: %s", name, res.code, res.stderr)
		}
	}
	sub := rc.Subscribe(ctx, registry.UpdatesChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := sub.Channel()

	res := c.run("", env, "", "--delete", "gone")
	if res.code != 0 {
		t.Fatalf("--delete: exit %d: %s", res.code, res.stderr)
	}
	for _, line := range []string{"deleted: gone\n", "version: 1\n", "style:   handler\n", "sha256:  " + registry.SHA256(handlerSrc) + "\n", "max: 3\n"} {
		if !strings.Contains(res.stdout, line) {
			t.Errorf("output lacks %q:\n%s", line, res.stdout)
		}
	}
	if rc.Exists(ctx, registry.Key("gone")).Val() != 0 {
		t.Error("the record is still in Redis")
	}
	if rc.Exists(ctx, registry.Key("kept")).Val() != 1 {
		t.Error("another function's record went too")
	}
	select {
	case m := <-msgs:
		if m.Payload != "gone" {
			t.Errorf("announced %q, want gone", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Error("the deletion was not announced")
	}

	res = c.run("", env, "", "--delete", "gone")
	if res.code != 1 || !strings.Contains(res.stderr, "not found") || !strings.Contains(res.stderr, "gone") {
		t.Errorf("--delete again: exit %d, stderr %q; want 1 naming the function, not found", res.code, res.stderr)
	}
}

// fieldsDiff is "" when want and got hold the same fields, else a -want +got listing.
func fieldsDiff(want, got map[string]string) string {
	var b strings.Builder
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			fmt.Fprintf(&b, "-%s=%q\n", k, v)
		}
	}
	for k, v := range got {
		if w, ok := want[k]; !ok || w != v {
			fmt.Fprintf(&b, "+%s=%q\n", k, v)
		}
	}
	return b.String()
}

// withRedis starts a Redis server and returns the built addfaas, a client
// of that server to check what is stored, and the environment that points
// addfaas at it.
func withRedis(t *testing.T) (cli, *redis.Client, []string) {
	t.Helper()
	r := testutil.StartRedis(t)
	c := cli{t: t, bin: testutil.BuildBinary(t, "addfaas"), python: testutil.Python(t)}
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rc.Close() })
	return c, rc, []string{"REDIS_ADDR=" + r.Addr}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
