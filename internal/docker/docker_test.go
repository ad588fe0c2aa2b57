package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/testutil"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

// RealWorkerImage is the image `make images` builds.
var RealWorkerImage = testutil.Image("worker")

func TestParseAddressMode(t *testing.T) {
	tests := []struct {
		in      string
		want    AddressMode
		wantErr bool
	}{
		{"", "", true},
		{"auto", AddressAuto, false},
		{"IP", AddressIP, false},
		{" name ", AddressName, false},
		{"published", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddressMode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseAddressMode(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Pool: "spillway", Image: "img", Network: "spillway-net", Address: AddressAuto, ServerPort: 8001}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantVar string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"empty pool", func(c *Config) { c.Pool = "" }, "POOL_NAME"},
		{"pool with slash", func(c *Config) { c.Pool = "a/b" }, "POOL_NAME"},
		{"no image", func(c *Config) { c.Image = "" }, "WORKER_IMAGE"},
		{"no network", func(c *Config) { c.Network = "" }, "DOCKER_NETWORK"},
		{"tiny memory", func(c *Config) { c.Memory = 1 << 20 }, "WORKER_MEMORY"},
		{"negative cpus", func(c *Config) { c.NanoCPUs = -1 }, "WORKER_CPUS"},
		{"bad address", func(c *Config) { c.Address = "x" }, "WORKER_ADDRESS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.withDefaults().Validate()
			if tt.wantVar == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantVar) {
				t.Fatalf("Validate = %v; want an error naming %s", err, tt.wantVar)
			}
		})
	}
}

func TestFunctionTar(t *testing.T) {
	b, err := functionTar(spillway.Function{Code: "print(1)\n"})
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(tr)
	if hdr.Name != "function.py" || hdr.Uid != 0 || hdr.Gid != 0 || hdr.Mode != 0o444 || string(body) != "print(1)\n" {
		t.Fatalf("got %+v %q", hdr, body)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("want one entry, next: %v", err)
	}
}

// fakeWorkerImage builds testdata/fakeworker into a scratch image and
// removes it when the test ends.
func fakeWorkerImage(t *testing.T) string {
	t.Helper()
	testutil.Docker(t)
	bin := filepath.Join(t.TempDir(), "fakeworker")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./testdata/fakeworker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fakeworker: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var rootfs bytes.Buffer
	tw := tar.NewWriter(&rootfs)
	for _, d := range []struct {
		name string
		uid  int
		mode int64
	}{{"tmp/", 0, 0o755}, {"var/", 0, 0o755}, {"var/task/", 0, 0o555}} { // as build/worker.Dockerfile
		_ = tw.WriteHeader(&tar.Header{Name: d.name, Typeflag: tar.TypeDir, Mode: d.mode, Uid: d.uid, Gid: d.uid})
	}
	_ = tw.WriteHeader(&tar.Header{Name: "fakeworker", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(exe))})
	_, _ = tw.Write(exe)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	ref := "spillway-test-fakeworker:" + randomSuffix(t)
	imp := exec.CommandContext(ctx, "docker", "import", "-c", `ENTRYPOINT ["/fakeworker"]`, "-", ref)
	imp.Stdin = &rootfs
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = exec.CommandContext(ctx, "docker", "rmi", "-f", ref).Run()
	})
	return ref
}

func randomSuffix(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// openTestBackend opens the backend of function faas on a unique pool and
// network; cleanup removes every container of the pool and the network.
func openTestBackend(t *testing.T, image string, mutate func(*Config)) *Backend {
	t.Helper()
	name := "spwtest-" + randomSuffix(t)
	cfg := Config{Pool: name, Function: "faas", Image: image, Network: name + "-net", Address: AddressAuto, ServerPort: 8001,
		Memory: 128 << 20, NanoCPUs: 500_000_000, PidsLimit: 256}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		removePool(t, b)
		b.Close()
	})
	return b
}

// removePool removes the workers of every function of b's pool, then the
// pool network.
func removePool(t *testing.T, b *Backend) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all, err := b.For("") // every function's workers
	if err != nil {
		t.Fatal(err)
	}
	ws, err := all.List(ctx)
	if err != nil {
		t.Errorf("cleanup list: %v", err)
	}
	for _, w := range ws {
		if err := all.Remove(ctx, w.ID); err != nil {
			t.Errorf("cleanup remove %s: %v", w.Name, err)
		}
	}
	if err := all.RemoveNetwork(ctx); err != nil {
		t.Errorf("cleanup network: %v", err)
	}
}

type insideFacts struct {
	UID          int      `json:"uid"`
	GID          int      `json:"gid"`
	SHA256       string   `json:"sha256"`
	FileUID      int      `json:"file_uid"`
	FileMode     string   `json:"file_mode"`
	Env          []string `json:"env"`
	RootWritable bool     `json:"root_writable"`
	TmpWritable  bool     `json:"tmp_writable"`
	TaskWritable bool     `json:"task_writable"`
	FileWritable bool     `json:"file_writable"`
	DefaultRoute bool     `json:"default_route"`
}

// waitHealthz polls http://addr/healthz until 200 or the deadline; it
// returns the body.
func waitHealthz(t *testing.T, addr string, within time.Duration) []byte {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return body
			}
			last = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("worker at %s not healthy within %v: %v", addr, within, last)
	return nil
}

func testFunction() spillway.Function {
	code := "import sys\nprint('hello', sys.argv[1:])\n"
	sum := sha256.Sum256([]byte(code))
	return spillway.Function{Name: "faas", Code: code, Style: spillway.StyleScript, SHA256: hex.EncodeToString(sum[:]), Version: 7}
}

func TestStartHardenedWorker(t *testing.T) {
	image := fakeWorkerImage(t)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
	t.Setenv("AWS_ACCESS_KEY_ID", "must-not-leak")
	b := openTestBackend(t, image, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if b.AddressMode() != AddressIP && b.AddressMode() != AddressName {
		t.Fatalf("address mode not resolved: %q", b.AddressMode())
	}
	if err := b.CheckImage(ctx); err != nil {
		t.Fatalf("CheckImage: %v", err)
	}
	fn := testFunction()
	w, err := b.Start(ctx, pool.WorkerSpec{Function: fn, Concurrency: 2, LocalTimeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if want := b.cfg.Pool + "-faas-7-"; !strings.HasPrefix(w.Name, want) {
		t.Errorf("name %q, want prefix %q", w.Name, want)
	}
	if !w.Running || w.Addr == "" || w.SHA256 != fn.SHA256 || w.Version != 7 || w.Function != "faas" {
		t.Errorf("worker %+v", w)
	}

	var f insideFacts
	if err := json.Unmarshal(waitHealthz(t, w.Addr, 20*time.Second), &f); err != nil {
		t.Fatal(err)
	}
	t.Run("inside", func(t *testing.T) {
		if f.UID != WorkerUID || f.GID != WorkerGID {
			t.Errorf("runs as %d:%d, want %d:%d", f.UID, f.GID, WorkerUID, WorkerGID)
		}
		if f.SHA256 != fn.SHA256 {
			t.Errorf("function sha256 inside = %q, want %q (copy-in failed?)", f.SHA256, fn.SHA256)
		}
		if f.FileUID != 0 || f.FileMode != "-r--r--r--" {
			t.Errorf("function.py owner %d mode %s, want root -r--r--r--", f.FileUID, f.FileMode)
		}
		if f.TaskWritable || f.FileWritable {
			t.Errorf("the function can change its directory (%v) or its file (%v)", f.TaskWritable, f.FileWritable)
		}
		if f.RootWritable {
			t.Error("root filesystem is writable")
		}
		if !f.TmpWritable {
			t.Error("/tmp is not writable")
		}
		wantEnv := []string{
			"FUNCTION_HANDLER=handler", "FUNCTION_PATH=/var/task/function.py", "FUNCTION_STYLE=script",
			"FUNCTION_VERSION=7", "LOCAL_TIMEOUT=3s", "SERVER_PORT=8001", "WORKER_CONCURRENCY=2",
		}
		for _, e := range f.Env {
			if strings.HasPrefix(e, "AWS_") || strings.HasPrefix(e, "REDIS") {
				t.Errorf("worker sees %s", e)
			}
		}
		for _, e := range wantEnv {
			if !slices.Contains(f.Env, e) {
				t.Errorf("worker env lacks %s; has %v", e, f.Env)
			}
		}
		// What the worker sees decodes to what lb meant (workerapi.Env).
		got, err := workerapi.FromEnv(f.Env)
		want := workerapi.Env{Port: 8001, FunctionPath: workerapi.FunctionPath, Style: fn.Style, Handler: "handler",
			Version: 7, Concurrency: 2, LocalTimeout: 3 * time.Second}
		if err != nil || got != want {
			t.Errorf("worker env decodes to %+v, %v; want %+v", got, err, want)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		ins, err := b.cli.ContainerInspect(ctx, w.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := ins.Container
		hc := c.HostConfig
		checks := []struct {
			what string
			ok   bool
		}{
			{"label pool", c.Config.Labels[pool.LabelPool] == b.cfg.Pool},
			{"label function", c.Config.Labels[pool.LabelFunction] == "faas"},
			{"label version", c.Config.Labels[pool.LabelVersion] == "7"},
			{"label sha256", c.Config.Labels[pool.LabelSHA256] == fn.SHA256},
			{"label style", c.Config.Labels[pool.LabelStyle] == "script"},
			{"label handler", c.Config.Labels[pool.LabelHandler] == "handler"},
			{"user", c.Config.User == "10001:10001"},
			{"read-only root", hc.ReadonlyRootfs},
			{"cap drop ALL", slices.Equal(hc.CapDrop, []string{"ALL"})},
			{"no-new-privileges", slices.Contains(hc.SecurityOpt, "no-new-privileges:true")},
			{"pids limit", hc.PidsLimit != nil && *hc.PidsLimit == 256},
			{"memory", hc.Memory == 128<<20},
			{"cpus", hc.NanoCPUs == 500_000_000},
			{"tmpfs", strings.Contains(hc.Tmpfs["/tmp"], "size=")},
			{"restart no", string(hc.RestartPolicy.Name) == "no"},
			{"no auto-remove", !hc.AutoRemove},
			{"network", string(hc.NetworkMode) == b.cfg.Network},
			{"no published ports", len(hc.PortBindings) == 0},
		}
		for _, ck := range checks {
			if !ck.ok {
				t.Errorf("%s: host config %+v", ck.what, hc)
			}
		}
		net, err := b.cli.NetworkInspect(ctx, b.cfg.Network, client.NetworkInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !net.Network.Internal || net.Network.Labels[pool.LabelPool] != b.cfg.Pool {
			t.Errorf("network internal=%v labels=%v", net.Network.Internal, net.Network.Labels)
		}
	})

	var volumes []string
	ins, err := b.cli.ContainerInspect(ctx, w.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ins.Container.Mounts {
		if m.Destination == TaskDir {
			volumes = append(volumes, m.Name)
		}
	}
	if len(volumes) != 1 {
		t.Fatalf("want one volume at %s, mounts %+v", TaskDir, ins.Container.Mounts)
	}

	// A container of the same stack that is no worker (compose's redis, say)
	// carries the pool label but no function: List must leave it alone.
	stackName := b.cfg.Pool + "-not-a-worker"
	if out, err := exec.CommandContext(ctx, "docker", "create", "--name", stackName,
		"--label", pool.LabelPool+"="+b.cfg.Pool, image).CombinedOutput(); err != nil {
		t.Fatalf("docker create: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", "-v", stackName).Run() })

	list, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != w.ID || list[0].Addr != w.Addr || list[0].Key() != w.Key() || list[0].Key() != pool.Key(fn) || !list[0].Running {
		t.Fatalf("List = %+v, want the one worker %+v", list, w)
	}

	if err := b.Remove(ctx, w.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := b.Remove(ctx, w.ID); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if list, err := b.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("after Remove, List = %+v, %v", list, err)
	}
	if _, err := b.cli.VolumeInspect(ctx, volumes[0], client.VolumeInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Fatalf("volume %s survives removal: %v", volumes[0], err)
	}
}

func TestStartFailureLeavesNothing(t *testing.T) {
	testutil.Docker(t)
	b := openTestBackend(t, "spillway-test-no-such-image:never", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.CheckImage(ctx)
	if err == nil || !strings.Contains(err.Error(), "make images") {
		t.Fatalf("CheckImage = %v, want a hint to run make images", err)
	}
	if _, err := b.Start(ctx, pool.WorkerSpec{Function: testFunction()}); err == nil {
		t.Fatal("Start with a missing image succeeded")
	}
	if list, err := b.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("List = %+v, %v; want nothing left", list, err)
	}
}

// TestRealWorkerImage starts the image `make images` builds and checks it
// comes up healthy with the function copied in under the read-only root.
func TestRealWorkerImage(t *testing.T) {
	testutil.DockerImage(t, RealWorkerImage)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
	b := openTestBackend(t, RealWorkerImage, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := b.Start(ctx, pool.WorkerSpec{Function: testFunction(), Concurrency: 1, LocalTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitHealthz(t, w.Addr, 30*time.Second)
	exec1 := func(script string) (string, error) {
		out, err := exec.CommandContext(ctx, "docker", "exec", w.ID, "sh", "-c", script).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	checks := []struct {
		script  string
		want    string // exact output; "" with wantErr
		wantErr bool
	}{
		{script: "id -u; id -g", want: "10001\n10001"},
		{script: "stat -c '%u %a' /var/task/function.py", want: "0 444"},
		{script: "stat -c '%u %a' /var/task", want: "0 555"},
		{script: "touch /should-fail", wantErr: true},
		{script: "touch /var/task/new.py", wantErr: true},
		{script: "echo x >> /var/task/function.py", wantErr: true},
		{script: "chmod 666 /var/task/function.py", wantErr: true},
		{script: "mv /var/task/function.py /tmp/f.py", wantErr: true},
		{script: "touch /tmp/ok && echo ok", want: "ok"},
		{script: "env | grep -c -E '^(AWS_|REDIS)' || true", want: "0"},
		{script: "grep -c . /var/task/function.py", want: "2"},
	}
	for _, ck := range checks {
		t.Run(ck.script, func(t *testing.T) {
			out, err := exec1(ck.script)
			if ck.wantErr {
				if err == nil {
					t.Fatalf("succeeded: %s", out)
				}
				return
			}
			if err != nil || out != ck.want {
				t.Fatalf("= %q, %v; want %q", out, err, ck.want)
			}
		})
	}
	// Protection off: the same container with /var/task and the file
	// loosened by their owner (root) lets the worker user write there, so
	// the refusals above come from the ownership and modes alone.
	t.Run("protection off", func(t *testing.T) {
		if out, err := exec.CommandContext(ctx, "docker", "exec", "-u", "0", w.ID, "chmod", "0777", "/var/task").CombinedOutput(); err != nil {
			t.Fatalf("loosen /var/task as root: %v %s", err, out)
		}
		if out, err := exec1("touch /var/task/new.py && echo ok"); err != nil || out != "ok" {
			t.Fatalf("with /var/task 0777 the worker user still cannot write there: %q, %v", out, err)
		}
	})
	if err := b.Remove(ctx, w.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if list, err := b.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("List after Remove = %+v, %v", list, err)
	}
}

// TestNameModeIsolatesTheHost: with WORKER_ADDRESS=name the pool network is
// created without a host address, workers are addressed by name, and a
// container on that network (where lb runs in compose) reaches them by
// name with Python's own XML-RPC client.
func TestNameModeIsolatesTheHost(t *testing.T) {
	testutil.DockerImage(t, RealWorkerImage)
	b := openTestBackend(t, RealWorkerImage, func(c *Config) { c.Address = AddressName })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if b.AddressMode() != AddressName {
		t.Fatalf("mode %q", b.AddressMode())
	}
	net, err := b.cli.NetworkInspect(ctx, b.cfg.Network, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !net.Network.Internal || net.Network.Options[OptionInhibitIPv4] != "true" {
		t.Fatalf("network internal=%v options=%v", net.Network.Internal, net.Network.Options)
	}
	fn := testFunction()
	w, err := b.Start(ctx, pool.WorkerSpec{Function: fn})
	if err != nil {
		t.Fatal(err)
	}
	if w.Addr != w.Name+":8001" {
		t.Fatalf("addr %q, want %s:8001", w.Addr, w.Name)
	}
	probe := fmt.Sprintf(`import time, xmlrpc.client
p = xmlrpc.client.ServerProxy("http://%s/")
for _ in range(100):
    try:
        h = p.health()
        if h.get("ready"):
            print(h["sha256"]); break
    except OSError:
        pass
    time.sleep(0.2)
`, w.Addr)
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", b.cfg.Network, "--read-only",
		"--entrypoint", "/usr/bin/python3", RealWorkerImage, "-c", probe).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != fn.SHA256 {
		t.Fatalf("health() by name from the pool network = %q, %v; want sha256 %s", out, err, fn.SHA256)
	}

	// A host service listening on every address is out of reach through
	// the network's gateway. Protection off: the network an lb on the host
	// gets (ip mode: internal, but with a host address) reaches it.
	port := hostListener(t)
	if got := connectFrom(ctx, t, b.cfg.Network, port); !strings.HasPrefix(got, "blocked") {
		t.Errorf("from the name-mode network, the host service at the gateway: %s", got)
	}
	ipMode := openTestBackend(t, RealWorkerImage, func(c *Config) { c.Address = AddressIP })
	if got := connectFrom(ctx, t, ipMode.cfg.Network, port); got != "connected" {
		t.Errorf("protection off (no %s): the host service at the gateway: %s, want connected", OptionInhibitIPv4, got)
	}
}

// hostListener accepts (and closes) connections on every address of the
// host; it returns the port.
func hostListener(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().(*net.TCPAddr).Port
}

// connectFrom runs a container on network that opens a TCP connection to
// the network's gateway at port: "connected" or "blocked: <error>".
func connectFrom(ctx context.Context, t *testing.T, network string, port int) string {
	t.Helper()
	gw, err := exec.CommandContext(ctx, "docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", network).Output()
	if err != nil || len(strings.TrimSpace(string(gw))) == 0 {
		t.Fatalf("gateway of %s: %q, %v", network, gw, err)
	}
	probe := fmt.Sprintf(`import socket
try:
    socket.create_connection((%q, %d), timeout=5).close()
    print("connected")
except OSError as e:
    print("blocked:", type(e).__name__)
`, strings.TrimSpace(string(gw)), port)
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", network, "--read-only", "--user", "10001",
		"--entrypoint", "/usr/bin/python3", RealWorkerImage, "-c", probe).CombinedOutput()
	if err != nil {
		t.Fatalf("probe on %s: %v %s", network, err, out)
	}
	return strings.TrimSpace(string(out))
}
