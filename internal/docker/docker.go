// Package docker runs Spillway's worker containers on the Docker Engine API.
// It implements pool.Backend: start a hardened worker with the function
// copied in, list the workers of a pool by label, and remove them.
package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

// Labels every worker container carries. A restarted lb finds its pool's
// leftovers by LabelPool and decides from LabelSHA256 whether to keep them.
const (
	LabelPool     = "spillway.pool"
	LabelFunction = "spillway.function"
	LabelVersion  = "spillway.version"
	LabelSHA256   = "spillway.sha256"
	LabelStyle    = "spillway.style"
	LabelHandler  = "spillway.handler"
	// LabelReuseProcess is "1" on a worker that runs a script in its warm
	// runner (the record's reuse_process), absent otherwise.
	LabelReuseProcess = "spillway.reuse_process"
)

// Paths and identity inside the worker image (see build/worker.Dockerfile).
const (
	TaskDir      = workerapi.TaskDir      // an anonymous volume, the function copied in
	FunctionFile = workerapi.FunctionFile // the function's file in TaskDir
	WorkerUID    = 10001
	WorkerGID    = 10001
)

// AddressMode says how lb reaches a worker (WORKER_ADDRESS).
type AddressMode string

const (
	// AddressAuto picks AddressName when this process runs in a container
	// attached to the pool network, AddressIP otherwise.
	AddressAuto AddressMode = "auto"
	// AddressIP dials the container's IP on the pool network (lb on the host:
	// a Docker `internal` bridge network is reachable from the host).
	AddressIP AddressMode = "ip"
	// AddressName dials the container name, resolved by Docker's DNS on the
	// pool network (lb inside compose, on the same network).
	AddressName AddressMode = "name"
)

// ParseAddressMode accepts auto, ip or name.
func ParseAddressMode(s string) (AddressMode, error) {
	switch m := AddressMode(strings.ToLower(strings.TrimSpace(s))); m {
	case AddressAuto, AddressIP, AddressName:
		return m, nil
	}
	return "", fmt.Errorf("WORKER_ADDRESS=%q: want auto, ip or name", s)
}

// OptionInhibitIPv4 is the bridge driver option that leaves the host
// without an address on the network.
const OptionInhibitIPv4 = "com.docker.network.bridge.inhibit_ipv4"

// Defaults of the knobs no variable sets (zero values of Config).
const (
	DefaultTmpfsSize = 64 << 20
	DefaultStopGrace = time.Second
)

// Config describes the worker containers of one pool. internal/config
// builds it (config.Config.DockerConfig) from the variables named here.
type Config struct {
	Pool       string        // POOL_NAME: label value and container-name prefix
	Image      string        // WORKER_IMAGE
	Network    string        // DOCKER_NETWORK: created as an internal bridge when missing
	Address    AddressMode   // WORKER_ADDRESS: auto, ip or name
	ServerPort int           // SERVER_PORT inside the worker
	Memory     int64         // WORKER_MEMORY in bytes; 0 means no limit
	NanoCPUs   int64         // WORKER_CPUS × 1e9; 0 means no limit
	PidsLimit  int64         // WORKER_PIDS_LIMIT: processes per worker; <= 0 means no limit
	TmpfsSize  int64         // size of the /tmp tmpfs in bytes; 0 means DefaultTmpfsSize
	StopGrace  time.Duration // SIGTERM grace before SIGKILL on Remove; 0 means 1s
}

var poolNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (c Config) withDefaults() Config {
	if c.TmpfsSize == 0 {
		c.TmpfsSize = DefaultTmpfsSize
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	return c
}

// Validate names the variable of the first bad value.
func (c Config) Validate() error {
	switch {
	case !poolNameRE.MatchString(c.Pool):
		return fmt.Errorf("POOL_NAME=%q: want letters, digits, '_', '.', '-'", c.Pool)
	case c.Image == "":
		return errors.New("WORKER_IMAGE is empty")
	case !poolNameRE.MatchString(c.Network):
		return fmt.Errorf("DOCKER_NETWORK=%q: want letters, digits, '_', '.', '-'", c.Network)
	case c.ServerPort < 1 || c.ServerPort > 65535:
		return fmt.Errorf("SERVER_PORT=%d: out of range", c.ServerPort)
	case c.Memory < 0:
		return fmt.Errorf("WORKER_MEMORY=%d: negative", c.Memory)
	case c.Memory > 0 && c.Memory < 6<<20:
		return fmt.Errorf("WORKER_MEMORY=%d: Docker needs at least 6 MiB", c.Memory)
	case c.NanoCPUs < 0:
		return fmt.Errorf("WORKER_CPUS: negative")
	}
	if _, err := ParseAddressMode(string(c.Address)); err != nil {
		return err
	}
	return nil
}

// Backend is pool.Backend on the Docker Engine API.
type Backend struct {
	cfg  Config
	cli  *client.Client
	log  *slog.Logger
	mode AddressMode // resolved: AddressIP or AddressName
}

var _ pool.Backend = (*Backend)(nil)

// Open connects to the engine named by the environment (DOCKER_HOST, ...),
// makes sure the pool network exists and resolves the address mode.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Backend, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("create Docker client: %w", err)
	}
	b := &Backend{cfg: cfg, cli: cli, log: logger.With("component", "docker", "pool", cfg.Pool)}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("reach the Docker engine: %w", err)
	}
	if err := b.EnsureNetwork(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	mode, err := b.resolveMode(ctx)
	if err != nil {
		cli.Close()
		return nil, err
	}
	b.mode = mode
	b.log.Info("docker backend ready", "network", cfg.Network, "image", cfg.Image, "address", mode)
	return b, nil
}

// Close releases the engine connection. Containers are left alone.
func (b *Backend) Close() error { return b.cli.Close() }

// AddressMode is the resolved mode (ip or name).
func (b *Backend) AddressMode() AddressMode { return b.mode }

// CheckImage reports a clear error when the worker image is missing.
func (b *Backend) CheckImage(ctx context.Context) error {
	_, err := b.cli.ImageInspect(ctx, b.cfg.Image)
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("worker image %s not found: build it with `make images` (WORKER_IMAGE names it)", b.cfg.Image)
	}
	if err != nil {
		return fmt.Errorf("inspect worker image %s: %w", b.cfg.Image, err)
	}
	return nil
}

// EnsureNetwork creates the pool network when it does not exist: a bridge
// marked internal (no route out, no published ports) and labelled with
// the pool. An existing network is used as it is.
func (b *Backend) EnsureNetwork(ctx context.Context) error {
	res, err := b.cli.NetworkInspect(ctx, b.cfg.Network, client.NetworkInspectOptions{})
	if err == nil {
		if !res.Network.Internal {
			b.log.Warn("pool network is not internal: workers have a route out", "network", b.cfg.Network)
		}
		if b.cfg.Address == AddressName && res.Network.Options[OptionInhibitIPv4] != "true" {
			b.log.Warn("pool network lacks "+OptionInhibitIPv4+": workers can reach host services through its gateway",
				"network", b.cfg.Network)
		}
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", b.cfg.Network, err)
	}
	opts := client.NetworkCreateOptions{
		Driver:   "bridge",
		Internal: true,
		Labels:   map[string]string{LabelPool: b.cfg.Pool},
	}
	if b.cfg.Address == AddressName {
		// lb reaches workers over the bridge from its own container, so the
		// host needs no address on it. Without one, workers cannot reach
		// the host either (an internal bridge still lets them reach host
		// services listening on all addresses through its gateway).
		opts.Options = map[string]string{OptionInhibitIPv4: "true"}
	}
	_, err = b.cli.NetworkCreate(ctx, b.cfg.Network, opts)
	if err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("create internal network %s: %w", b.cfg.Network, err)
	}
	b.log.Info("created internal pool network", "network", b.cfg.Network)
	return nil
}

// Subnets returns the address ranges of the pool network (its IPAM
// configuration): the sources function code in a worker can have.
func (b *Backend) Subnets(ctx context.Context) ([]netip.Prefix, error) {
	res, err := b.cli.NetworkInspect(ctx, b.cfg.Network, client.NetworkInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("inspect network %s: %w", b.cfg.Network, err)
	}
	var out []netip.Prefix
	for _, c := range res.Network.IPAM.Config {
		if c.Subnet.IsValid() {
			out = append(out, c.Subnet)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("network %s has no subnet in its IPAM configuration", b.cfg.Network)
	}
	return out, nil
}

// RemoveNetwork removes the pool network if this pool created it (its
// label names the pool). Use after every worker is gone.
func (b *Backend) RemoveNetwork(ctx context.Context) error {
	res, err := b.cli.NetworkInspect(ctx, b.cfg.Network, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", b.cfg.Network, err)
	}
	if res.Network.Labels[LabelPool] != b.cfg.Pool {
		return nil
	}
	if _, err := b.cli.NetworkRemove(ctx, b.cfg.Network, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s: %w", b.cfg.Network, err)
	}
	return nil
}

// resolveMode turns auto into ip or name: name when this process runs in a
// container attached to the pool network (Docker's DNS resolves worker
// names there), ip otherwise.
func (b *Backend) resolveMode(ctx context.Context) (AddressMode, error) {
	if b.cfg.Address != AddressAuto {
		return b.cfg.Address, nil
	}
	if _, err := os.Stat("/.dockerenv"); err != nil {
		return AddressIP, nil
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return AddressIP, nil
	}
	res, err := b.cli.NetworkInspect(ctx, b.cfg.Network, client.NetworkInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspect network %s: %w", b.cfg.Network, err)
	}
	for id, ep := range res.Network.Containers {
		if ep.Name == host || strings.HasPrefix(id, host) {
			return AddressName, nil
		}
	}
	return AddressIP, nil
}

// Start creates a hardened worker container, copies the function into its
// /var/task volume, starts it and returns its address. On failure nothing
// is left behind.
func (b *Backend) Start(ctx context.Context, spec pool.WorkerSpec) (pool.Worker, error) {
	fn := spec.Function
	name, err := b.containerName(fn.Version)
	if err != nil {
		return pool.Worker{}, err
	}
	labels := map[string]string{
		LabelPool:     b.cfg.Pool,
		LabelFunction: fn.Name,
		LabelVersion:  strconv.FormatInt(fn.Version, 10),
		LabelSHA256:   fn.SHA256,
		LabelStyle:    string(fn.Style),
		LabelHandler:  fn.HandlerName(),
	}
	reuse := fn.ReuseProcess && fn.Style == spillway.StyleScript
	if reuse {
		labels[LabelReuseProcess] = "1"
	}
	created, err := b.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:             name,
		Config:           b.containerConfig(spec, labels),
		HostConfig:       b.hostConfig(),
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{b.cfg.Network: {}}},
	})
	if err != nil {
		return pool.Worker{}, fmt.Errorf("create worker container %s: %w", name, err)
	}
	w := pool.Worker{ID: created.ID, Name: name, Function: fn.Name, Version: fn.Version, SHA256: fn.SHA256,
		Style: fn.Style, Handler: fn.HandlerName(), ReuseProcess: reuse}
	cleanup := func(cause error) (pool.Worker, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := b.Remove(rctx, created.ID); err != nil {
			b.log.Error("remove half-started worker", "worker", name, "err", err)
		}
		return pool.Worker{}, cause
	}
	archive, err := functionTar(fn)
	if err != nil {
		return cleanup(err)
	}
	if _, err := b.cli.CopyToContainer(ctx, created.ID, client.CopyToContainerOptions{
		DestinationPath: TaskDir,
		Content:         bytes.NewReader(archive),
	}); err != nil {
		return cleanup(fmt.Errorf("copy function into worker %s: %w", name, err))
	}
	if _, err := b.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return cleanup(fmt.Errorf("start worker %s: %w", name, err))
	}
	ins, err := b.cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		return cleanup(fmt.Errorf("inspect worker %s: %w", name, err))
	}
	w.Running = ins.Container.State != nil && ins.Container.State.Running
	var nets map[string]*network.EndpointSettings
	if ins.Container.NetworkSettings != nil {
		nets = ins.Container.NetworkSettings.Networks
	}
	w.Addr, err = b.address(name, nets)
	if err != nil {
		return cleanup(err)
	}
	b.log.Debug("worker started", "worker", name, "addr", w.Addr)
	return w, nil
}

// Remove stops the container with a short grace, then force-removes it with
// its anonymous volumes. A container that is already gone is not an error.
func (b *Backend) Remove(ctx context.Context, id string) error {
	grace := int(b.cfg.StopGrace / time.Second)
	_, err := b.cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &grace})
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		b.log.Debug("stop worker before removal", "worker", id, "err", err)
	}
	_, err = b.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		if cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
			return nil
		}
		return fmt.Errorf("remove worker %s: %w", id, err)
	}
	return nil
}

// List returns every container labelled with this pool, running or not.
func (b *Backend) List(ctx context.Context) ([]pool.Worker, error) {
	res, err := b.cli.ContainerList(ctx, client.ContainerListOptions{
		All: true,
		// Both labels: other containers of a stack may carry the pool label,
		// and only workers carry a function.
		Filters: make(client.Filters).Add("label", LabelPool+"="+b.cfg.Pool).Add("label", LabelFunction),
	})
	if err != nil {
		return nil, fmt.Errorf("list workers of pool %s: %w", b.cfg.Pool, err)
	}
	out := make([]pool.Worker, 0, len(res.Items))
	for _, c := range res.Items {
		name := c.ID
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		version, _ := strconv.ParseInt(c.Labels[LabelVersion], 10, 64)
		w := pool.Worker{
			ID:           c.ID,
			Name:         name,
			Function:     c.Labels[LabelFunction],
			Version:      version,
			SHA256:       c.Labels[LabelSHA256],
			Style:        spillway.Style(c.Labels[LabelStyle]),
			Handler:      c.Labels[LabelHandler],
			ReuseProcess: c.Labels[LabelReuseProcess] == "1",
			Running:      c.State == container.StateRunning,
		}
		if w.Running {
			var nets map[string]*network.EndpointSettings
			if c.NetworkSettings != nil {
				nets = c.NetworkSettings.Networks
			}
			if addr, err := b.address(name, nets); err == nil {
				w.Addr = addr
			}
		}
		out = append(out, w)
	}
	return out, nil
}

func (b *Backend) address(name string, nets map[string]*network.EndpointSettings) (string, error) {
	port := strconv.Itoa(b.cfg.ServerPort)
	if b.mode == AddressName {
		return net.JoinHostPort(name, port), nil
	}
	ep := nets[b.cfg.Network]
	if ep == nil || !ep.IPAddress.IsValid() {
		return "", fmt.Errorf("worker %s has no address on network %s", name, b.cfg.Network)
	}
	return net.JoinHostPort(ep.IPAddress.String(), port), nil
}

func (b *Backend) containerName(version int64) (string, error) {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("random container name: %w", err)
	}
	return fmt.Sprintf("%s-worker-%d-%s", b.cfg.Pool, version, hex.EncodeToString(r[:])), nil
}

// containerConfig is the portable part: image, user, environment, labels.
// The environment is exactly the worker's own settings (workerapi.Env);
// nothing of lb's environment (cloud credentials, Redis) is passed on.
func (b *Backend) containerConfig(spec pool.WorkerSpec, labels map[string]string) *container.Config {
	return &container.Config{
		Image:  b.cfg.Image,
		User:   fmt.Sprintf("%d:%d", WorkerUID, WorkerGID),
		Env:    b.workerEnv(spec).Env(),
		Labels: labels,
	}
}

// workerEnv is what the worker of spec is told.
func (b *Backend) workerEnv(spec pool.WorkerSpec) workerapi.Env {
	fn := spec.Function
	return workerapi.Env{
		Port:           b.cfg.ServerPort,
		FunctionPath:   workerapi.FunctionPath,
		Style:          fn.Style,
		Handler:        fn.HandlerName(),
		ReuseProcess:   fn.ReuseProcess && fn.Style == spillway.StyleScript,
		Version:        fn.Version,
		Concurrency:    max(spec.Concurrency, 1),
		LocalTimeout:   max(spec.LocalTimeout, 0),
		MaxResultBytes: max(spec.MaxResultBytes, 0),
	}
}

// hostConfig is the hardening: read-only root with a size-limited tmpfs,
// an anonymous volume for the function, no capabilities, no privilege
// gain, pids/memory/CPU limits, the internal pool network, no restarts.
func (b *Backend) hostConfig() *container.HostConfig {
	pids := b.cfg.PidsLimit
	if pids <= 0 {
		pids = -1 // Docker's "unlimited"
	}
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(b.cfg.Network),
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		AutoRemove:     false,
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true"},
		Tmpfs: map[string]string{
			// uid/gid: on some engines (this one: fuse-overlayfs, cgroup v1)
			// mode=1777 alone leaves /tmp unwritable for a non-root user.
			"/tmp": fmt.Sprintf("rw,nosuid,nodev,noexec,size=%d,mode=1777,uid=%d,gid=%d", b.cfg.TmpfsSize, WorkerUID, WorkerGID),
		},
		Mounts: []mount.Mount{{Type: mount.TypeVolume, Target: TaskDir}},
		LogConfig: container.LogConfig{
			Type:   "json-file",
			Config: map[string]string{"max-size": "1m", "max-file": "2"},
		},
		Resources: container.Resources{
			Memory:    b.cfg.Memory,
			NanoCPUs:  b.cfg.NanoCPUs,
			PidsLimit: &pids,
		},
	}
	if b.cfg.Memory > 0 {
		hc.Resources.MemorySwap = b.cfg.Memory // no swap on top of the limit
	}
	return hc
}

// functionTar is a one-file archive: function.py owned by root, mode 0444.
// The worker image makes /var/task root's and 0555 (the anonymous volume
// starts as a copy of it; Docker does not apply an archive's entry for the
// destination directory itself). The function runs as WorkerUID without
// capabilities, so it can neither change, replace nor chmod its own code,
// nor add files beside it, and health's sha256 stays true.
func functionTar(fn spillway.Function) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := fn.UpdatedAt
	if mod.IsZero() {
		mod = time.Unix(0, 0)
	}
	hdr := &tar.Header{
		Name:     FunctionFile,
		Mode:     0o444,
		Size:     int64(len(fn.Code)),
		ModTime:  mod,
		Typeflag: tar.TypeReg,
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("tar function header: %w", err)
	}
	if _, err := tw.Write([]byte(fn.Code)); err != nil {
		return nil, fmt.Errorf("tar function: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close function tar: %w", err)
	}
	return buf.Bytes(), nil
}

var _ pool.ExitWatcher = (*Backend)(nil)

// Watch calls died with the id of every container of this pool that
// exits (Docker's "die" event), until ctx ends or the event stream fails.
func (b *Backend) Watch(ctx context.Context, died func(id string)) error {
	res := b.cli.Events(ctx, client.EventsListOptions{
		Filters: make(client.Filters).
			Add("type", "container").
			Add("event", "die").
			Add("label", LabelPool+"="+b.cfg.Pool),
	})
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-res.Err:
			return fmt.Errorf("docker events: %w", err)
		case msg, ok := <-res.Messages:
			if !ok {
				return errors.New("docker events: stream closed")
			}
			if msg.Actor.ID != "" {
				died(msg.Actor.ID)
			}
		}
	}
}
