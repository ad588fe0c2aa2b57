// Package docker runs Spillway's worker containers on the Docker Engine API.
// It implements pool.Backend: start a hardened worker with the function
// copied in, list the workers of a pool by label, and remove them.
//
// A pool serves many functions: one Backend per function (Config.Function),
// each starting, listing and watching only that function's containers, all
// of them on the pool's one network.
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
	"slices"
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

// Config describes the worker containers of one function of a pool.
// internal/config builds it (config.Config.DockerConfigFor) from the
// variables named here.
type Config struct {
	Pool string // POOL_NAME: label value and container-name prefix
	// Function is the function whose workers this backend starts, lists
	// and watches: containers <Pool>-<Function>-<version>-<random>,
	// labelled spillway.function=<Function>. Empty means every function's
	// workers of the pool (the one-function lb before issue 12); Start
	// then names a worker after the function it runs.
	Function   string
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
	case c.Function != "" && !poolNameRE.MatchString(c.Function):
		return fmt.Errorf("function name %q: want letters, digits, '_', '.', '-'", c.Function)
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

// Backend is pool.Backend on the Docker Engine API, for one function of a
// pool (or, with an empty Config.Function, all of them).
type Backend struct {
	cfg  Config
	cli  *client.Client
	log  *slog.Logger
	mode AddressMode  // resolved: AddressIP or AddressName
	base *slog.Logger // the logger Open was given, for For's backends
	// shared is set on a backend made by For: the engine connection is
	// its parent's, and Close leaves it open.
	shared bool
}

var _ pool.Backend = (*Backend)(nil)

// Open connects to the engine named by the environment (DOCKER_HOST, ...),
// makes sure the pool network exists and resolves the address mode. For a
// pool of many functions, open one backend and make the others with For:
// one engine connection, and no other function's Open racing this one's
// network creation (an older engine briefly holds two networks of one name
// then, and a worker started in that moment fails to find its network).
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
	b := &Backend{cfg: cfg, cli: cli, log: backendLogger(logger, cfg), base: logger}
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

func backendLogger(l *slog.Logger, cfg Config) *slog.Logger {
	l = l.With("component", "docker", "pool", cfg.Pool)
	if cfg.Function != "" {
		l = l.With("function", cfg.Function)
	}
	return l
}

// For returns a backend of the same pool, network, image and limits for
// function, on b's engine connection: one connection serves every
// function's backend. The network exists already (b's Open made it).
// Closing the returned backend does nothing; close b when all are done.
func (b *Backend) For(function string) (*Backend, error) {
	cfg := b.cfg
	cfg.Function = function
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, cli: b.cli, log: backendLogger(b.base, cfg), base: b.base, mode: b.mode, shared: true}, nil
}

// Function is the function this backend serves ("" for every function of
// the pool).
func (b *Backend) Function() string { return b.cfg.Function }

// Close releases the engine connection (unless b came from For).
// Containers are left alone.
func (b *Backend) Close() error {
	if b.shared {
		return nil
	}
	return b.cli.Close()
}

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
// the pool. An existing network is used as it is. Every function's backend
// of a pool calls it, maybe at once: engines before API 1.44 create a
// second network of the same name then, so the pool's duplicates are
// removed, keeping the oldest, which every caller picks alike.
func (b *Backend) EnsureNetwork(ctx context.Context) error {
	nets, err := b.networks(ctx)
	if err != nil {
		return err
	}
	if len(nets) == 0 {
		if err := b.createNetwork(ctx); err != nil {
			return err
		}
		if nets, err = b.networks(ctx); err != nil {
			return err
		}
		if len(nets) == 0 {
			return fmt.Errorf("network %s vanished right after it was created", b.cfg.Network)
		}
	}
	keep := nets[0]
	for _, dup := range nets[1:] {
		if dup.Labels[pool.LabelPool] != b.cfg.Pool {
			continue // not ours to remove
		}
		if _, err := b.cli.NetworkRemove(ctx, dup.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove duplicate network %s (%s): %w", b.cfg.Network, dup.ID, err)
		}
		b.log.Info("removed a duplicate pool network", "network", b.cfg.Network, "id", dup.ID)
	}
	if !keep.Internal {
		b.log.Warn("pool network is not internal: workers have a route out", "network", b.cfg.Network)
	}
	if b.cfg.Address == AddressName && keep.Options[OptionInhibitIPv4] != "true" {
		b.log.Warn("pool network lacks "+OptionInhibitIPv4+": workers can reach host services through its gateway",
			"network", b.cfg.Network)
	}
	return nil
}

// networks lists the networks named exactly b.cfg.Network, oldest first
// (by creation, then id).
func (b *Backend) networks(ctx context.Context) ([]network.Summary, error) {
	res, err := b.cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", b.cfg.Network)})
	if err != nil {
		return nil, fmt.Errorf("list networks named %s: %w", b.cfg.Network, err)
	}
	out := slices.DeleteFunc(res.Items, func(n network.Summary) bool { return n.Name != b.cfg.Network }) // the filter matches substrings
	slices.SortFunc(out, func(x, y network.Summary) int {
		if c := x.Created.Compare(y.Created); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	return out, nil
}

func (b *Backend) createNetwork(ctx context.Context) error {
	opts := client.NetworkCreateOptions{
		Driver:   "bridge",
		Internal: true,
		Labels:   map[string]string{pool.LabelPool: b.cfg.Pool},
	}
	if b.cfg.Address == AddressName {
		// lb reaches workers over the bridge from its own container, so the
		// host needs no address on it. Without one, workers cannot reach
		// the host either (an internal bridge still lets them reach host
		// services listening on all addresses through its gateway).
		opts.Options = map[string]string{OptionInhibitIPv4: "true"}
	}
	_, err := b.cli.NetworkCreate(ctx, b.cfg.Network, opts)
	if cerrdefs.IsConflict(err) {
		return nil // another backend made it first
	}
	if err != nil {
		return fmt.Errorf("create internal network %s: %w", b.cfg.Network, err)
	}
	b.log.Info("created internal pool network", "network", b.cfg.Network)
	return nil
}

// Subnets returns the address ranges of the pool network (its IPAM
// configuration): the sources function code in a worker can have.
func (b *Backend) Subnets(ctx context.Context) ([]netip.Prefix, error) {
	res, err := b.inspectNetwork(ctx)
	if err != nil {
		return nil, err
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

// inspectNetwork inspects the pool network by the id of the oldest network
// of its name: while another backend of the pool creates it at once (see
// EnsureNetwork) the name alone is ambiguous.
func (b *Backend) inspectNetwork(ctx context.Context) (client.NetworkInspectResult, error) {
	nets, err := b.networks(ctx)
	if err != nil {
		return client.NetworkInspectResult{}, err
	}
	if len(nets) == 0 {
		return client.NetworkInspectResult{}, fmt.Errorf("inspect network %s: %w", b.cfg.Network, cerrdefs.ErrNotFound)
	}
	res, err := b.cli.NetworkInspect(ctx, nets[0].ID, client.NetworkInspectOptions{})
	if err != nil {
		return res, fmt.Errorf("inspect network %s: %w", b.cfg.Network, err)
	}
	return res, nil
}

// RemoveNetwork removes the pool network if this pool created it (its
// label names the pool) and no worker of the pool, of any function, is
// left: the network goes with the last function's workers. Use after this
// backend's workers are gone.
func (b *Backend) RemoveNetwork(ctx context.Context) error {
	left, err := b.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: b.poolFilter()})
	if err != nil {
		return fmt.Errorf("list workers of pool %s: %w", b.cfg.Pool, err)
	}
	if len(left.Items) > 0 {
		b.log.Debug("pool network kept: workers remain", "network", b.cfg.Network, "workers", len(left.Items))
		return nil
	}
	res, err := b.inspectNetwork(ctx)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if res.Network.Labels[pool.LabelPool] != b.cfg.Pool {
		return nil
	}
	if _, err := b.cli.NetworkRemove(ctx, res.Network.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
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
	res, err := b.inspectNetwork(ctx)
	if err != nil {
		return "", err
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
	if b.cfg.Function != "" && fn.Name != b.cfg.Function {
		return pool.Worker{}, fmt.Errorf("start a worker of %q on the backend of %q: wrong backend", fn.Name, b.cfg.Function)
	}
	name, err := b.containerName(fn.Name, fn.Version)
	if err != nil {
		return pool.Worker{}, err
	}
	labels := map[string]string{
		pool.LabelPool:     b.cfg.Pool,
		pool.LabelFunction: fn.Name,
		pool.LabelVersion:  strconv.FormatInt(fn.Version, 10),
		pool.LabelSHA256:   fn.SHA256,
		pool.LabelStyle:    string(fn.Style),
		pool.LabelHandler:  fn.HandlerName(),
	}
	reuse := fn.ReuseProcess && fn.Style == spillway.StyleScript
	if reuse {
		labels[pool.LabelReuseProcess] = "1"
	}
	began := time.Now()
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
	createdAt := time.Now()
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
	copiedAt := time.Now()
	if _, err := b.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return cleanup(fmt.Errorf("start worker %s: %w", name, err))
	}
	startedAt := time.Now()
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
	b.log.Debug("worker started", "worker", name, "addr", w.Addr, "create", createdAt.Sub(began),
		"copy", copiedAt.Sub(createdAt), "start", startedAt.Sub(copiedAt), "inspect", time.Since(startedAt))
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

// poolFilter matches the pool's workers of every function. Both labels:
// other containers of a stack may carry the pool label, and only workers
// carry a function.
func (b *Backend) poolFilter() client.Filters {
	return make(client.Filters).Add("label", pool.LabelPool+"="+b.cfg.Pool).Add("label", pool.LabelFunction)
}

// workerFilter matches this backend's workers: its function's, or the
// pool's when it serves every function.
func (b *Backend) workerFilter() client.Filters {
	if b.cfg.Function == "" {
		return b.poolFilter()
	}
	return make(client.Filters).Add("label", pool.LabelPool+"="+b.cfg.Pool).Add("label", pool.LabelFunction+"="+b.cfg.Function)
}

// PoolFunctions returns the functions that have worker containers (running
// or not) in this pool, sorted: lb removes the workers of a function it no
// longer serves with that function's backend (For).
func (b *Backend) PoolFunctions(ctx context.Context) ([]string, error) {
	res, err := b.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: b.poolFilter()})
	if err != nil {
		return nil, fmt.Errorf("list workers of pool %s: %w", b.cfg.Pool, err)
	}
	var out []string
	for _, c := range res.Items {
		if fn := c.Labels[pool.LabelFunction]; fn != "" && !slices.Contains(out, fn) {
			out = append(out, fn)
		}
	}
	slices.Sort(out)
	return out, nil
}

// List returns this backend's worker containers (its function's), running
// or not.
func (b *Backend) List(ctx context.Context) ([]pool.Worker, error) {
	res, err := b.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: b.workerFilter()})
	if err != nil {
		return nil, fmt.Errorf("list workers of pool %s: %w", b.cfg.Pool, err)
	}
	out := make([]pool.Worker, 0, len(res.Items))
	for _, c := range res.Items {
		name := c.ID
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		version, _ := strconv.ParseInt(c.Labels[pool.LabelVersion], 10, 64)
		w := pool.Worker{
			ID:           c.ID,
			Name:         name,
			Function:     c.Labels[pool.LabelFunction],
			Version:      version,
			SHA256:       c.Labels[pool.LabelSHA256],
			Style:        spillway.Style(c.Labels[pool.LabelStyle]),
			Handler:      c.Labels[pool.LabelHandler],
			ReuseProcess: c.Labels[pool.LabelReuseProcess] == "1",
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

// containerName is <pool>-<function>-<version>-<random>.
func (b *Backend) containerName(function string, version int64) (string, error) {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("random container name: %w", err)
	}
	if !poolNameRE.MatchString(function) {
		return "", fmt.Errorf("function name %q cannot name a container: want letters, digits, '_', '.', '-'", function)
	}
	return fmt.Sprintf("%s-%s-%d-%s", b.cfg.Pool, function, version, hex.EncodeToString(r[:])), nil
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

// Watch calls died with the id of every worker of this backend (its
// function's) that exits (Docker's "die" event), until ctx ends or the
// event stream fails.
func (b *Backend) Watch(ctx context.Context, died func(id string)) error {
	f := b.workerFilter().Add("type", "container").Add("event", "die")
	res := b.cli.Events(ctx, client.EventsListOptions{Filters: f})
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

var _ pool.Freezer = (*Backend)(nil)

// Freeze pauses the worker's processes (the cgroup freezer): no CPU, no
// answer, its memory kept. The engine lists it as paused, not running.
func (b *Backend) Freeze(ctx context.Context, id string) error {
	if _, err := b.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("pause worker %s: %w", id, err)
	}
	return nil
}

// Thaw resumes a worker Freeze paused.
func (b *Backend) Thaw(ctx context.Context, id string) error {
	began := time.Now()
	if _, err := b.cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("unpause worker %s: %w", id, err)
	}
	b.log.Debug("worker thawed", "worker", id, "thaw", time.Since(began))
	return nil
}
