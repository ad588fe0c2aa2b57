// Package swarm runs Spillway's workers as Docker Swarm services: a
// pool.Backend for POOL_BACKEND=swarm, where Swarm places the workers on
// any node of the swarm.
//
// One worker is one service of one replica, named like a docker-backend
// container: <pool>-<function>-<version>-<random>, labelled with the pool,
// function and version, endpoint mode dnsrr (this machine's kernel has no
// IPVS, so a Swarm VIP would not route), on the pool's internal attachable
// overlay network <pool>-workers. The pool's model is per worker: it drains
// and removes one particular worker (unhealthy, idle or of an old version).
// A replicated service cannot lose one chosen task (scaling down lets Swarm
// pick which one goes, maybe one with calls in flight), so each worker is
// its own service and Remove removes exactly it. Swarm still places,
// starts and addresses every task, delivers the code as a config, and
// enforces constraints; the pool's health, retry, replace, roll (start
// first) and adoption work unchanged. The service's restart policy is
// none: a task that dies is reported by Watch, and the pool replaces it
// with a task Swarm places on a live node.
//
// The function's code is a Swarm config <pool>-<function>-v<version>,
// mounted read-only at the function path; a config no service of the
// function uses any more is removed when a worker is removed.
package swarm

import (
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
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

// Labels every worker carries (pool's, shared by both backends).
const (
	LabelPool         = pool.LabelPool
	LabelFunction     = pool.LabelFunction
	LabelVersion      = pool.LabelVersion
	LabelSHA256       = pool.LabelSHA256
	LabelStyle        = pool.LabelStyle
	LabelHandler      = pool.LabelHandler
	LabelReuseProcess = pool.LabelReuseProcess
)

// Identity inside the worker image (see build/worker.Dockerfile).
const (
	WorkerUID = 10001
	WorkerGID = 10001
)

// Defaults of the knobs no variable sets (zero values of Config).
const (
	DefaultTmpfsSize = 64 << 20
	DefaultStopGrace = time.Second
	// DefaultPoll is how often Watch reads the task list: each function's
	// backend costs the manager a service list and a task list (about 3 ms
	// of its CPU, BENCHMARKS.md "Swarm") per period.
	DefaultPoll = 500 * time.Millisecond
	// startPoll is how often Start reads its new task's state.
	startPoll = 100 * time.Millisecond
)

// Config describes the worker services of one function of a pool.
type Config struct {
	Pool     string // POOL_NAME: label value and service-name prefix
	Function string // the function served; "" for every function's workers
	Image    string // WORKER_IMAGE: present on every node
	// NetworkName (DOCKER_NETWORK) is the pool's overlay network; empty
	// means <Pool>-workers.
	NetworkName string
	ServerPort  int   // SERVER_PORT inside the worker
	Memory      int64 // WORKER_MEMORY in bytes; 0 means no limit
	NanoCPUs    int64 // WORKER_CPUS × 1e9; 0 means no limit
	PidsLimit   int64 // WORKER_PIDS_LIMIT; <= 0 means no limit
	TmpfsSize   int64 // /tmp tmpfs in bytes; 0 means DefaultTmpfsSize
	StopGrace   time.Duration
	Poll        time.Duration // Watch's task-list period; 0 means DefaultPoll
	// Constraints are Swarm placement constraints (addfaas --constraint),
	// e.g. node.labels.gpu==true.
	Constraints []string
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (c Config) withDefaults() Config {
	if c.TmpfsSize == 0 {
		c.TmpfsSize = DefaultTmpfsSize
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	return c
}

// Network is the pool's overlay network: NetworkName, or <pool>-workers.
func (c Config) Network() string {
	if c.NetworkName != "" {
		return c.NetworkName
	}
	return c.Pool + "-workers"
}

// Validate names the variable of the first bad value.
func (c Config) Validate() error {
	switch {
	case !nameRE.MatchString(c.Pool):
		return fmt.Errorf("POOL_NAME=%q: want letters, digits, '_', '.', '-'", c.Pool)
	case c.Function != "" && !nameRE.MatchString(c.Function):
		return fmt.Errorf("function name %q: want letters, digits, '_', '.', '-'", c.Function)
	case c.Image == "":
		return errors.New("WORKER_IMAGE is empty")
	case c.NetworkName != "" && !nameRE.MatchString(c.NetworkName):
		return fmt.Errorf("DOCKER_NETWORK=%q: want letters, digits, '_', '.', '-'", c.NetworkName)
	case c.ServerPort < 1 || c.ServerPort > 65535:
		return fmt.Errorf("SERVER_PORT=%d: out of range", c.ServerPort)
	case c.Memory < 0 || c.NanoCPUs < 0:
		return errors.New("WORKER_MEMORY or WORKER_CPUS: negative")
	}
	return nil
}

// Backend is pool.Backend on Swarm services, for one function of a pool.
type Backend struct {
	cfg    Config
	cli    *client.Client
	log    *slog.Logger
	base   *slog.Logger
	shared bool
	// mu serialises making a code config and a service that uses it with
	// removing the configs no service uses: a config is never removed
	// between its creation and the service that mounts it.
	mu *sync.Mutex
}

var (
	_                   pool.Backend     = (*Backend)(nil)
	_                   pool.ExitWatcher = (*Backend)(nil)
	errNotSwarm                          = errors.New("this Docker engine is not a swarm manager: run `docker swarm init` (or SWARM_INIT=1 make up)")
	errNoNetworkAddress                  = errors.New("no address on the pool network")
)

// Open connects to the engine named by the environment, checks that it is
// a swarm manager and makes sure the pool's overlay network exists.
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
	b := &Backend{cfg: cfg, cli: cli, log: backendLogger(logger, cfg), base: logger, mu: &sync.Mutex{}}
	if err := b.open(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	b.log.Info("swarm backend ready", "network", cfg.Network(), "image", cfg.Image)
	return b, nil
}

func (b *Backend) open(ctx context.Context) error {
	if _, err := b.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("reach the Docker engine: %w", err)
	}
	if _, err := b.cli.SwarmInspect(ctx, client.SwarmInspectOptions{}); err != nil {
		return fmt.Errorf("%w (%v)", errNotSwarm, err)
	}
	return b.EnsureNetwork(ctx)
}

func backendLogger(l *slog.Logger, cfg Config) *slog.Logger {
	l = l.With("component", "swarm", "pool", cfg.Pool)
	if cfg.Function != "" {
		l = l.With("function", cfg.Function)
	}
	return l
}

// For returns the backend of function on b's engine connection; Close of
// the result does nothing.
func (b *Backend) For(function string, constraints []string) (*Backend, error) {
	cfg := b.cfg
	cfg.Function = function
	cfg.Constraints = slices.Clone(constraints)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, cli: b.cli, log: backendLogger(b.base, cfg), base: b.base, shared: true, mu: b.mu}, nil
}

// Close releases the engine connection (unless b came from For).
func (b *Backend) Close() error {
	if b.shared {
		return nil
	}
	return b.cli.Close()
}

// CheckImage reports a clear error when the worker image is missing here.
// Other nodes need it too: Swarm rejects a task on a node without it.
func (b *Backend) CheckImage(ctx context.Context) error {
	if _, err := b.cli.ImageInspect(ctx, b.cfg.Image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("worker image %s not found: build it with `make images` (WORKER_IMAGE names it)", b.cfg.Image)
		}
		return fmt.Errorf("inspect worker image %s: %w", b.cfg.Image, err)
	}
	return nil
}

// EnsureNetwork creates <pool>-workers when missing: an overlay network,
// internal (no route out) and attachable (lb's container joins it).
func (b *Backend) EnsureNetwork(ctx context.Context) error {
	name := b.cfg.Network()
	_, err := b.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", name, err)
	}
	_, err = b.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
		Driver: "overlay", Internal: true, Attachable: true,
		Labels: map[string]string{LabelPool: b.cfg.Pool},
	})
	if err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("create overlay network %s: %w", name, err)
	}
	b.log.Info("created internal overlay network", "network", name)
	return nil
}

// Subnets returns the address ranges of the pool network.
func (b *Backend) Subnets(ctx context.Context) ([]netip.Prefix, error) {
	res, err := b.cli.NetworkInspect(ctx, b.cfg.Network(), client.NetworkInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("inspect network %s: %w", b.cfg.Network(), err)
	}
	var out []netip.Prefix
	for _, c := range res.Network.IPAM.Config {
		if c.Subnet.IsValid() {
			out = append(out, c.Subnet)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("network %s has no subnet", b.cfg.Network())
	}
	return out, nil
}

// JoinNetwork attaches the container this process runs in to the pool
// network, so that it can dial the tasks' addresses (the host cannot: an
// overlay network is only reachable from its members). Outside a container
// it returns an error saying so.
func (b *Backend) JoinNetwork(ctx context.Context) error {
	if _, err := os.Stat("/.dockerenv"); err != nil {
		return fmt.Errorf("lb runs outside a container, where the overlay network %s does not reach: run lb in the swarm (POOL_BACKEND=swarm make up)", b.cfg.Network())
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("hostname, to find lb's container: %w", err)
	}
	// A stack attaches lb's task to the network already.
	res, err := b.cli.NetworkInspect(ctx, b.cfg.Network(), client.NetworkInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", b.cfg.Network(), err)
	}
	for id, ep := range res.Network.Containers {
		if ep.Name == host || strings.HasPrefix(id, host) {
			return nil
		}
	}
	_, err = b.cli.NetworkConnect(ctx, b.cfg.Network(), client.NetworkConnectOptions{Container: host})
	if err != nil && !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("attach lb's container %s to network %s: %w", host, b.cfg.Network(), err)
	}
	return nil
}

// RemoveNetwork removes the pool network when no worker service of the
// pool is left and the network is the pool's (by label).
func (b *Backend) RemoveNetwork(ctx context.Context) error {
	left, err := b.cli.ServiceList(ctx, client.ServiceListOptions{Filters: b.poolFilter()})
	if err != nil {
		return fmt.Errorf("list worker services of pool %s: %w", b.cfg.Pool, err)
	}
	if len(left.Items) > 0 {
		return nil
	}
	res, err := b.cli.NetworkInspect(ctx, b.cfg.Network(), client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", b.cfg.Network(), err)
	}
	if res.Network.Labels[LabelPool] != b.cfg.Pool {
		return nil
	}
	if _, err := b.cli.NetworkRemove(ctx, res.Network.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s: %w", b.cfg.Network(), err)
	}
	return nil
}

func (b *Backend) poolFilter() client.Filters {
	return make(client.Filters).Add("label", LabelPool+"="+b.cfg.Pool).Add("label", LabelFunction)
}

func (b *Backend) workerFilter() client.Filters {
	if b.cfg.Function == "" {
		return b.poolFilter()
	}
	return make(client.Filters).Add("label", LabelPool+"="+b.cfg.Pool).Add("label", LabelFunction+"="+b.cfg.Function)
}

// configName is <pool>-<function>-v<version>.
func (b *Backend) configName(fn spillway.Function) string {
	return fmt.Sprintf("%s-%s-v%d", b.cfg.Pool, fn.Name, fn.Version)
}

// ensureConfig makes the code config of fn, or reuses it when it holds the
// same code. One of the same name but other code (an earlier pool's) is
// replaced when no service uses it.
func (b *Backend) ensureConfig(ctx context.Context, fn spillway.Function) (swarm.Config, error) {
	name := b.configName(fn)
	for range 2 {
		res, err := b.cli.ConfigInspect(ctx, name, client.ConfigInspectOptions{})
		if err == nil {
			if res.Config.Spec.Labels[LabelSHA256] == fn.SHA256 {
				return res.Config, nil
			}
			if _, err := b.cli.ConfigRemove(ctx, res.Config.ID, client.ConfigRemoveOptions{}); err != nil {
				return swarm.Config{}, fmt.Errorf("config %s holds other code and cannot be replaced: %w", name, err)
			}
		} else if !cerrdefs.IsNotFound(err) {
			return swarm.Config{}, fmt.Errorf("inspect config %s: %w", name, err)
		}
		_, err = b.cli.ConfigCreate(ctx, client.ConfigCreateOptions{Spec: swarm.ConfigSpec{
			Annotations: swarm.Annotations{Name: name, Labels: map[string]string{
				LabelPool: b.cfg.Pool, LabelFunction: fn.Name,
				LabelVersion: strconv.FormatInt(fn.Version, 10), LabelSHA256: fn.SHA256,
			}},
			Data: []byte(fn.Code),
		}})
		if err != nil && !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "already exists") {
			return swarm.Config{}, fmt.Errorf("create config %s: %w", name, err)
		}
	}
	res, err := b.cli.ConfigInspect(ctx, name, client.ConfigInspectOptions{})
	if err != nil {
		return swarm.Config{}, fmt.Errorf("inspect config %s: %w", name, err)
	}
	return res.Config, nil
}

// Start creates the worker's service and returns once Swarm runs its task
// with an address on the pool network. On failure the service is removed.
func (b *Backend) Start(ctx context.Context, spec pool.WorkerSpec) (pool.Worker, error) {
	fn := spec.Function
	if b.cfg.Function != "" && fn.Name != b.cfg.Function {
		return pool.Worker{}, fmt.Errorf("start a worker of %q on the backend of %q: wrong backend", fn.Name, b.cfg.Function)
	}
	if !nameRE.MatchString(fn.Name) {
		return pool.Worker{}, fmt.Errorf("function name %q cannot name a service", fn.Name)
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return pool.Worker{}, fmt.Errorf("random service name: %w", err)
	}
	name := fmt.Sprintf("%s-%s-%d-%s", b.cfg.Pool, fn.Name, fn.Version, hex.EncodeToString(r[:]))
	reuse := fn.ReuseProcess && fn.Style == spillway.StyleScript
	labels := map[string]string{
		LabelPool: b.cfg.Pool, LabelFunction: fn.Name, LabelVersion: strconv.FormatInt(fn.Version, 10),
		LabelSHA256: fn.SHA256, LabelStyle: string(fn.Style), LabelHandler: fn.HandlerName(),
	}
	if reuse {
		labels[LabelReuseProcess] = "1"
	}

	b.mu.Lock()
	cfgRef, err := b.ensureConfig(ctx, fn)
	var created client.ServiceCreateResult
	if err == nil {
		created, err = b.cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: b.serviceSpec(name, spec, labels, cfgRef)})
		if err != nil {
			err = fmt.Errorf("create worker service %s: %w", name, err)
		}
	}
	b.mu.Unlock()
	if err != nil {
		return pool.Worker{}, err
	}
	w := pool.Worker{ID: created.ID, Name: name, Function: fn.Name, Version: fn.Version, SHA256: fn.SHA256,
		Style: fn.Style, Handler: fn.HandlerName(), ReuseProcess: reuse}
	addr, err := b.waitTask(ctx, created.ID)
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if rerr := b.Remove(rctx, created.ID); rerr != nil {
			b.log.Error("remove half-started worker", "worker", name, "err", rerr)
		}
		return pool.Worker{}, fmt.Errorf("start worker %s: %w", name, err)
	}
	w.Addr, w.Running = addr, true
	b.log.Debug("worker started", "worker", name, "addr", addr)
	return w, nil
}

// waitTask polls the service's tasks until one runs with an address.
func (b *Backend) waitTask(ctx context.Context, serviceID string) (string, error) {
	t := time.NewTicker(startPoll)
	defer t.Stop()
	for {
		res, err := b.cli.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", serviceID)})
		if err != nil {
			return "", fmt.Errorf("list tasks: %w", err)
		}
		for _, task := range res.Items {
			switch task.Status.State {
			case swarm.TaskStateRunning:
				addr, err := b.address(task)
				if err != nil {
					return "", err
				}
				return addr, nil
			case swarm.TaskStateFailed, swarm.TaskStateRejected, swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateOrphaned:
				return "", fmt.Errorf("task %s %s: %s", task.ID, task.Status.State, task.Status.Err)
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for the task to run: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// address is the task's IP on the pool network and the worker's port.
func (b *Backend) address(task swarm.Task) (string, error) {
	for _, na := range task.NetworksAttachments {
		if na.Network.Spec.Name != b.cfg.Network() {
			continue
		}
		for _, a := range na.Addresses {
			if a.IsValid() {
				return net.JoinHostPort(a.Addr().String(), strconv.Itoa(b.cfg.ServerPort)), nil
			}
		}
	}
	return "", fmt.Errorf("task %s: %w %s", task.ID, errNoNetworkAddress, b.cfg.Network())
}

// serviceSpec is one replica of the hardened worker.
func (b *Backend) serviceSpec(name string, spec pool.WorkerSpec, labels map[string]string, code swarm.Config) swarm.ServiceSpec {
	one := uint64(1)
	grace := b.cfg.StopGrace
	fn := spec.Function
	env := workerapi.Env{
		Port: b.cfg.ServerPort, FunctionPath: workerapi.FunctionPath, Style: fn.Style, Handler: fn.HandlerName(),
		ReuseProcess: fn.ReuseProcess && fn.Style == spillway.StyleScript, Version: fn.Version,
		Concurrency: max(spec.Concurrency, 1), LocalTimeout: max(spec.LocalTimeout, 0),
		MaxResultBytes: max(spec.MaxResultBytes, 0),
	}
	limits := &swarm.Limit{NanoCPUs: b.cfg.NanoCPUs, MemoryBytes: b.cfg.Memory}
	if b.cfg.PidsLimit > 0 {
		limits.Pids = b.cfg.PidsLimit
	}
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:    b.cfg.Image,
				Labels:   labels,
				Env:      env.Env(),
				User:     fmt.Sprintf("%d:%d", WorkerUID, WorkerGID),
				ReadOnly: true,
				// Privileges.NoNewPrivileges is not sent: this engine's API
				// (1.41) has no such field and ignores it. Without
				// capabilities a setuid binary gains nothing anyway.
				CapabilityDrop: []string{"ALL"},
				Mounts: []mount.Mount{{
					// No uid/gid options before API 1.46: mode 1777 only.
					Type: mount.TypeTmpfs, Target: "/tmp",
					TmpfsOptions: &mount.TmpfsOptions{SizeBytes: b.cfg.TmpfsSize, Mode: 0o1777},
				}},
				Configs: []*swarm.ConfigReference{{
					ConfigID: code.ID, ConfigName: code.Spec.Name,
					File: &swarm.ConfigReferenceFileTarget{Name: workerapi.FunctionPath, UID: "0", GID: "0", Mode: 0o444},
				}},
				StopGracePeriod: &grace,
			},
			Resources:     &swarm.ResourceRequirements{Limits: limits},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone},
			Placement:     &swarm.Placement{Constraints: slices.Clone(b.cfg.Constraints)},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: b.cfg.Network()}},
			LogDriver:     &swarm.Driver{Name: "json-file", Options: map[string]string{"max-size": "1m", "max-file": "2"}},
		},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
}

// Remove removes the worker's service (Swarm stops its task with the stop
// grace) and then the function's code configs no service uses any more.
// A service that is already gone is not an error.
func (b *Backend) Remove(ctx context.Context, id string) error {
	if _, err := b.cli.ServiceRemove(ctx, id, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove worker service %s: %w", id, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.removeUnusedConfigs(ctx); err != nil {
		b.log.Warn("remove unused code configs", "err", err)
	}
	return nil
}

// removeUnusedConfigs removes this backend's code configs that no service
// mounts. Swarm refuses to remove a config in use, so a race with another
// pool only costs an error here.
func (b *Backend) removeUnusedConfigs(ctx context.Context) error {
	cfgs, err := b.cli.ConfigList(ctx, client.ConfigListOptions{Filters: b.workerFilter()})
	if err != nil {
		return fmt.Errorf("list code configs: %w", err)
	}
	if len(cfgs.Items) == 0 {
		return nil
	}
	svcs, err := b.cli.ServiceList(ctx, client.ServiceListOptions{Filters: b.workerFilter()})
	if err != nil {
		return fmt.Errorf("list worker services: %w", err)
	}
	used := map[string]bool{}
	for _, s := range svcs.Items {
		if cs := s.Spec.TaskTemplate.ContainerSpec; cs != nil {
			for _, c := range cs.Configs {
				used[c.ConfigID] = true
			}
		}
	}
	var errs []error
	for _, c := range cfgs.Items {
		if used[c.ID] {
			continue
		}
		if _, err := b.cli.ConfigRemove(ctx, c.ID, client.ConfigRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove config %s: %w", c.Spec.Name, err))
			continue
		}
		b.log.Debug("removed unused code config", "config", c.Spec.Name)
	}
	return errors.Join(errs...)
}

// List returns this backend's workers: each service with its newest task,
// running or not, and the task's address when it runs.
func (b *Backend) List(ctx context.Context) ([]pool.Worker, error) {
	ws, _, err := b.list(ctx)
	return ws, err
}

// ended reports whether a task in state st has stopped for good.
func ended(st swarm.TaskState) bool {
	switch st {
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed,
		swarm.TaskStateRejected, swarm.TaskStateRemove, swarm.TaskStateOrphaned:
		return true
	}
	return false
}

// list is List with the state of each worker's newest task, by service id.
func (b *Backend) list(ctx context.Context) ([]pool.Worker, map[string]swarm.TaskState, error) {
	svcs, err := b.cli.ServiceList(ctx, client.ServiceListOptions{Filters: b.workerFilter()})
	if err != nil {
		return nil, nil, fmt.Errorf("list worker services of pool %s: %w", b.cfg.Pool, err)
	}
	if len(svcs.Items) == 0 {
		return nil, nil, nil
	}
	f := make(client.Filters)
	for _, s := range svcs.Items {
		f = f.Add("service", s.ID)
	}
	tasks, err := b.cli.TaskList(ctx, client.TaskListOptions{Filters: f})
	if err != nil {
		return nil, nil, fmt.Errorf("list tasks of pool %s: %w", b.cfg.Pool, err)
	}
	newest := map[string]swarm.Task{}
	for _, t := range tasks.Items {
		if cur, ok := newest[t.ServiceID]; !ok || t.Meta.CreatedAt.After(cur.Meta.CreatedAt) {
			newest[t.ServiceID] = t
		}
	}
	out := make([]pool.Worker, 0, len(svcs.Items))
	states := make(map[string]swarm.TaskState, len(svcs.Items))
	for _, s := range svcs.Items {
		l := s.Spec.Labels
		version, _ := strconv.ParseInt(l[LabelVersion], 10, 64)
		w := pool.Worker{ID: s.ID, Name: s.Spec.Name, Function: l[LabelFunction], Version: version,
			SHA256: l[LabelSHA256], Style: spillway.Style(l[LabelStyle]), Handler: l[LabelHandler],
			ReuseProcess: l[LabelReuseProcess] == "1"}
		if t, ok := newest[s.ID]; ok {
			states[s.ID] = t.Status.State
			if t.Status.State == swarm.TaskStateRunning {
				w.Running = true
				w.Addr, _ = b.address(t)
			}
		}
		out = append(out, w)
	}
	return out, states, nil
}

// PoolFunctions returns the functions that have worker services in this
// pool, sorted.
func (b *Backend) PoolFunctions(ctx context.Context) ([]string, error) {
	svcs, err := b.cli.ServiceList(ctx, client.ServiceListOptions{Filters: b.poolFilter()})
	if err != nil {
		return nil, fmt.Errorf("list worker services of pool %s: %w", b.cfg.Pool, err)
	}
	var out []string
	for _, s := range svcs.Items {
		if fn := s.Spec.Labels[LabelFunction]; fn != "" && !slices.Contains(out, fn) {
			out = append(out, fn)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Watch calls died, once, with the id of every worker whose task stopped
// (exited, killed, its node lost), read from the task list every Poll:
// Swarm has no event for a task's state. A task seen running that is no
// longer running counts, and so does one that ended before any poll saw
// it run; a task still starting does not. It returns when ctx ends or the
// task list fails three times in a row.
func (b *Backend) Watch(ctx context.Context, died func(id string)) error {
	t := time.NewTicker(b.cfg.Poll)
	defer t.Stop()
	running := map[string]bool{}  // services seen running, not yet reported
	reported := map[string]bool{} // services reported, while they exist
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		ws, states, err := b.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if fails++; fails >= 3 {
				return fmt.Errorf("watch tasks: %w", err)
			}
			continue
		}
		fails = 0
		seen := map[string]bool{}
		for _, w := range ws {
			seen[w.ID] = true
			switch {
			case w.Running:
				running[w.ID] = true
			case reported[w.ID]:
			case running[w.ID] || ended(states[w.ID]):
				delete(running, w.ID)
				reported[w.ID] = true
				died(w.ID)
			}
		}
		for id := range running {
			if !seen[id] {
				delete(running, id) // removed: the pool knows
			}
		}
		for id := range reported {
			if !seen[id] {
				delete(reported, id)
			}
		}
	}
}
