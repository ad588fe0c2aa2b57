package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/testutil"
)

// renderIn copies the renderer and its inputs into a directory of its own
// (so a stack another test runs keeps its .cache/compose) and renders there
// with env on top of a clean environment. It returns the directory.
func renderIn(t *testing.T, env ...string) string {
	t.Helper()
	return renderArgs(t, nil, env...)
}

// renderArgs is renderIn with arguments for the renderer (--stack).
func renderArgs(t *testing.T, args []string, env ...string) string {
	t.Helper()
	_, err := exec.LookPath("envsubst")
	testutil.Require(t, err == nil, "envsubst (gettext-base)")
	root := testutil.RepoRoot(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"scripts/lib.sh", "scripts/render-compose.sh", "compose.tmpl.yml", "stack.tmpl.yml", ".env.example"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(dir, "scripts", "render-compose.sh")}, args...)...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render-compose.sh: %v\n%s", err, out)
	}
	return dir
}

func readEnvFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ".cache", "compose", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRenderKeepsShellKeysOutOfLocalCloud: with CLOUD=local, real AWS keys
// exported in the shell never reach lb.env. Protection off: with CLOUD=aws
// the same shell's keys are passed (as they must be), and the same check
// sees them.
func TestRenderKeepsShellKeysOutOfLocalCloud(t *testing.T) {
	shell := []string{"AWS_ACCESS_KEY_ID=AKIAREALSHELLKEY", "AWS_SECRET_ACCESS_KEY=real-secret", "AWS_SESSION_TOKEN=real-token",
		"REDIS_PASSWORD=pw123", "POOL_NAME=rendertest"}
	leaks := func(lbEnv string) []string {
		var out []string
		for _, s := range []string{"AKIAREALSHELLKEY", "real-secret", "real-token"} {
			if strings.Contains(lbEnv, s) {
				out = append(out, s)
			}
		}
		return out
	}
	local := readEnvFile(t, renderIn(t, append(shell, "CLOUD=local")...), "lb.env")
	if l := leaks(local); len(l) > 0 {
		t.Errorf("CLOUD=local: lb.env carries the shell's %v:\n%s", l, local)
	}
	if !strings.Contains(local, "AWS_ACCESS_KEY_ID=localcloud\n") {
		t.Errorf("CLOUD=local: lb.env lacks the dummy key:\n%s", local)
	}
	aws := readEnvFile(t, renderIn(t, append(shell, "CLOUD=aws", "AWS_ROLE=arn:aws:iam::1:role/x")...), "lb.env")
	if l := leaks(aws); len(l) != 3 {
		t.Errorf("protection off (CLOUD=aws): the check found %v in lb.env, want all three keys", l)
	}
}

// TestRenderSecurityDefaults: compose's lb accepts anonymous callers only
// when no token is set and nobody said otherwise; Redis gets its password
// through an env file, not the compose file; the workers' network carries
// inhibit_ipv4, as docker-compose itself reads it.
func TestRenderSecurityDefaults(t *testing.T) {
	dir := renderIn(t, "REDIS_PASSWORD=pw123", "POOL_NAME=rendertest")
	if lb := readEnvFile(t, dir, "lb.env"); !strings.Contains(lb, "LB_ALLOW_ANONYMOUS=true\n") || !strings.Contains(lb, "REDIS_PASSWORD=pw123\n") {
		t.Errorf("lb.env without a token:\n%s", lb)
	}
	if r := readEnvFile(t, dir, "redis.env"); r != "REDIS_PASSWORD=pw123\nREDISCLI_AUTH=pw123\n" {
		t.Errorf("redis.env = %q", r)
	}
	compose, err := os.ReadFile(filepath.Join(dir, "compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(compose), "pw123") {
		t.Error("compose.yml carries the Redis password")
	}
	for _, env := range [][]string{{"LB_AUTH_TOKEN=tok"}, {"LB_ALLOW_ANONYMOUS=false"}} {
		lb := readEnvFile(t, renderIn(t, append(env, "REDIS_PASSWORD=pw123", "POOL_NAME=rendertest")...), "lb.env")
		if strings.Contains(lb, "LB_ALLOW_ANONYMOUS=true") {
			t.Errorf("%v: lb.env allows anonymous callers:\n%s", env, lb)
		}
	}

	tool := []string{"docker-compose"}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		tool = []string{"docker", "compose"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool[0], append(tool[1:], "-f", filepath.Join(dir, "compose.yml"), "config")...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		testutil.Require(t, false, "docker compose or docker-compose: "+err.Error()+"\n"+string(out))
	}
	if !strings.Contains(string(out), "com.docker.network.bridge.inhibit_ipv4: 'true'") &&
		!strings.Contains(string(out), `com.docker.network.bridge.inhibit_ipv4: "true"`) {
		t.Errorf("%v config lacks inhibit_ipv4 on the workers' network:\n%s", tool, out)
	}
}

// TestRenderReplicas: LB_REPLICAS=2 renders two lb services, replica i on
// LOAD_BALANCER_PORT+i-1 published on 127.0.0.1, each with its LB_ID, and
// the compose tool accepts the file.
func TestRenderReplicas(t *testing.T) {
	dir := renderIn(t, "REDIS_PASSWORD=pw123", "POOL_NAME=rendertest", "LB_REPLICAS=2", "LOAD_BALANCER_PORT=18100")
	b, err := os.ReadFile(filepath.Join(dir, "compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	compose := string(b)
	for _, want := range []string{
		"\n  lb:\n", "\n  lb-2:\n",
		`LB_ID: "lb-1"`, `LB_ID: "lb-2"`,
		`LOAD_BALANCER_PORT: "18100"`, `LOAD_BALANCER_PORT: "18101"`,
		`ports: ["127.0.0.1:18100:18100"]`, `ports: ["127.0.0.1:18101:18101"]`,
	} {
		if !strings.Contains(compose, want) {
			t.Errorf("compose.yml lacks %q", want)
		}
	}
	if strings.Contains(compose, "\n  lb-3:") || strings.Contains(compose, "${LB_") {
		t.Error("compose.yml has a third replica or an unrendered LB_ variable")
	}
	one, err := os.ReadFile(filepath.Join(renderIn(t, "REDIS_PASSWORD=pw123", "POOL_NAME=rendertest"), "compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(one), "\n  lb-2:") || !strings.Contains(string(one), `ports: ["127.0.0.1:8000:8000"]`) {
		t.Error("the default renders other than one lb on 8000")
	}

	tool := []string{"docker-compose"}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		tool = []string{"docker", "compose"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool[0], append(tool[1:], "-f", filepath.Join(dir, "compose.yml"), "config", "--services")...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		testutil.Require(t, false, "docker compose or docker-compose: "+err.Error()+"\n"+string(out))
	}
	services := strings.Fields(string(out))
	if !slices.Contains(services, "lb") || !slices.Contains(services, "lb-2") {
		t.Errorf("%v config --services = %v, want lb and lb-2", tool, services)
	}
}

// TestRenderStack: --stack renders the swarm stack for a node without
// needing a swarm (SWARM_NODE_ID): two lb services on their ports in host
// mode, dnsrr everywhere, the stack's services pinned to the node, and the
// password and token only as secret files (mode 600) that no rendered file
// carries. docker stack config accepts the file.
func TestRenderStack(t *testing.T) {
	dir := renderArgs(t, []string{"--stack"}, "SWARM_NODE_ID=node1", "REDIS_PASSWORD=pw123", "LB_AUTH_TOKEN=tok456",
		"POOL_NAME=rendertest", "LB_REPLICAS=2", "LOAD_BALANCER_PORT=18100")
	b, err := os.ReadFile(filepath.Join(dir, "stack.yml"))
	if err != nil {
		t.Fatal(err)
	}
	stack := string(b)
	for _, want := range []string{
		"\n  lb:\n", "\n  lb-2:\n", `LB_ID: "lb-1"`, `LB_ID: "lb-2"`,
		"{target: 18100, published: 18100, protocol: tcp, mode: host}",
		"{target: 18101, published: 18101, protocol: tcp, mode: host}",
		`"node.id == node1"`, "name: rendertest-workers", "attachable: true", "internal: true",
		"target: env_REDIS_PASSWORD", "target: env_LB_AUTH_TOKEN",
	} {
		if !strings.Contains(stack, want) {
			t.Errorf("stack.yml lacks %q", want)
		}
	}
	if n := strings.Count(stack, "      endpoint_mode: dnsrr\n"); n != 4 {
		t.Errorf("stack.yml has %d services in dnsrr mode, want 4 (redis, localcloud, lb, lb-2)", n)
	}
	if strings.Contains(stack, "\n  lb-3:") {
		t.Error("stack.yml has a third replica")
	}
	// $${...} is the shell's, for docker stack deploy to turn into ${...}.
	for _, line := range strings.Split(stack, "\n") {
		if code, _, _ := strings.Cut(line, "#"); strings.Contains(strings.ReplaceAll(code, "$${", ""), "${") {
			t.Errorf("stack.yml has an unrendered variable: %s", line)
		}
	}
	for _, f := range []string{"stack.yml", ".cache/stack/lb.env", ".cache/stack/localcloud.env"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"pw123", "tok456"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s carries the secret %q", f, secret)
			}
		}
	}
	for name, want := range map[string]string{"REDIS_PASSWORD": "pw123", "LB_AUTH_TOKEN": "tok456"} {
		p := filepath.Join(dir, ".cache", "stack", "secrets", name)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Errorf("secret file %s = %q, %v; want %q", name, b, err, want)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("secret file %s: %v, %v; want mode 600", name, fi.Mode(), err)
		}
	}
	if lb, _ := os.ReadFile(filepath.Join(dir, ".cache", "stack", "lb.env")); strings.Contains(string(lb), "LB_ALLOW_ANONYMOUS=true") {
		t.Errorf("the stack's lb lets anonymous callers in by default:\n%s", lb)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "stack", "config", "-c", filepath.Join(dir, "stack.yml"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		testutil.Require(t, !strings.Contains(string(out), "unknown"), "docker stack config (docker CLI 23 or later)")
		t.Fatalf("docker stack config: %v\n%s", err, out)
	}
}
