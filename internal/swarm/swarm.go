// Package swarm runs Spillway's workers as Docker Swarm services: a
// pool.ServiceBackend for POOL_BACKEND=swarm, where Swarm places the
// workers on any node of the swarm.
//
// A function's workers are the replicas of one service, <pool>-<function>,
// labelled with the pool, function and version, endpoint mode dnsrr (this
// machine's kernel has no IPVS, so a Swarm VIP would not route), on the
// pool's internal attachable overlay network <pool>-workers. lb dials each
// task's address on that network. The pool sets the replica count and the
// version (Apply); Swarm starts, places and restarts the tasks, and rolls
// them to a new version one at a time, the new task started first. A
// scale-down stops tasks Swarm picks: a stopped worker keeps serving for
// WORKER_STOP_DELAY, long enough for every lb to see it stopping in the
// task list and send it nothing more, then finishes its calls and exits.
//
// The function's code is a Swarm config <pool>-<function>-v<version>,
// mounted read-only at the function path; a config no service and no live
// task mounts is removed.
package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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

// The workers' labels are pool's (pool.LabelPool, ...), shared by both
// backends; a function's service carries one more.
const (
	// LabelSpec, on a function's service, digests what its workers run
	// (Backend.specDigest): Apply rolls the service when it differs.
	LabelSpec = "spillway.spec"
)

// Identity inside the worker image (see build/worker.Dockerfile).
const (
	WorkerUID = 10001
	WorkerGID = 10001
)

// Defaults of the knobs no variable sets (zero values of Config).
const (
	DefaultTmpfsSize = 64 << 20
	// DefaultStopGrace is what a stopped worker's grace adds to its stop
	// delay and LOCAL_TIMEOUT, for its runners to exit.
	DefaultStopGrace = 2 * time.Second
	// DefaultStopDelay (WORKER_STOP_DELAY of the workers) is how long a
	// stopped worker keeps serving: more than lb's task-list period
	// (pool.DefaultFollowInterval, 500 ms; each poll costs the manager
	// about 1 ms of CPU, BENCHMARKS.md "Swarm") plus the time a list takes
	// on a busy manager.
	DefaultStopDelay = 1500 * time.Millisecond
	// DefaultRestartDelay is how soon Swarm starts a task again after its
	// worker exited or was killed.
	DefaultRestartDelay = time.Second
)

// Config describes the worker services of one function of a pool.
type Config struct {
	Pool     string // POOL_NAME: label value and service-name prefix
	Function string // the function served; "" for every function's workers
	Image    string // WORKER_IMAGE: present on every node
	// NetworkName (DOCKER_NETWORK) is the pool's overlay network; empty
	// means <Pool>-workers.
	NetworkName string
	ServerPort  int           // SERVER_PORT inside the worker
	Memory      int64         // WORKER_MEMORY in bytes; 0 means no limit
	NanoCPUs    int64         // WORKER_CPUS × 1e9; 0 means no limit
	PidsLimit   int64         // WORKER_PIDS_LIMIT; <= 0 means no limit
	TmpfsSize   int64         // /tmp tmpfs in bytes; 0 means DefaultTmpfsSize
	StopGrace   time.Duration // added to a stopped worker's grace; 0 means DefaultStopGrace
	StopDelay   time.Duration // WORKER_STOP_DELAY of the workers; 0 means DefaultStopDelay
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
	if c.StopDelay == 0 {
		c.StopDelay = DefaultStopDelay
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
	// mounted are the code configs the function's live tasks mounted at
	// the last List (under mu): when they change, unused ones are removed.
	mounted []string
}

var (
	_                   pool.ServiceBackend = (*Backend)(nil)
	errNotSwarm                             = errors.New("this Docker engine is not a swarm manager: run `docker swarm init` (or SWARM_INIT=1 make up)")
	errNoNetworkAddress                     = errors.New("no address on the pool network")
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
		Labels: map[string]string{pool.LabelPool: b.cfg.Pool},
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
	if res.Network.Labels[pool.LabelPool] != b.cfg.Pool {
		return nil
	}
	if _, err := b.cli.NetworkRemove(ctx, res.Network.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s: %w", b.cfg.Network(), err)
	}
	return nil
}

func (b *Backend) poolFilter() client.Filters {
	return make(client.Filters).Add("label", pool.LabelPool+"="+b.cfg.Pool).Add("label", pool.LabelFunction)
}

func (b *Backend) workerFilter() client.Filters {
	if b.cfg.Function == "" {
		return b.poolFilter()
	}
	return make(client.Filters).Add("label", pool.LabelPool+"="+b.cfg.Pool).Add("label", pool.LabelFunction+"="+b.cfg.Function)
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
			if res.Config.Spec.Labels[pool.LabelSHA256] == fn.SHA256 {
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
				pool.LabelPool: b.cfg.Pool, pool.LabelFunction: fn.Name,
				pool.LabelVersion: strconv.FormatInt(fn.Version, 10), pool.LabelSHA256: fn.SHA256,
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

// ServiceName is the function's service: <pool>-<function>.
func (b *Backend) ServiceName() string { return b.cfg.Pool + "-" + b.cfg.Function }

// Start is refused: a function's workers are its service's replicas, set
// with Apply (the pool uses Apply on a pool.ServiceBackend).
func (b *Backend) Start(context.Context, pool.WorkerSpec) (pool.Worker, error) {
	return pool.Worker{}, errors.New("swarm: a function's workers are its service's replicas: set them with Apply")
}

// Apply makes the function's service run replicas workers of spec. It
// creates the service, or changes its replica count, or, when what the
// workers run differs (code, style, handler, concurrency, timeout, result
// limit, placement), updates the service to spec: Swarm then replaces the
// tasks one at a time, each new task started before the old one stops. It
// does not wait for the tasks.
func (b *Backend) Apply(ctx context.Context, spec pool.WorkerSpec, replicas int) error {
	fn := spec.Function
	if b.cfg.Function == "" || fn.Name != b.cfg.Function {
		return fmt.Errorf("apply a service of %q on the backend of %q: wrong backend", fn.Name, b.cfg.Function)
	}
	if replicas < 0 {
		return fmt.Errorf("apply %d replicas: negative", replicas)
	}
	name := b.ServiceName()
	digest := b.specDigest(spec)
	b.mu.Lock()
	defer b.mu.Unlock()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var res client.ServiceInspectResult
		res, err = b.cli.ServiceInspect(ctx, name, client.ServiceInspectOptions{})
		if cerrdefs.IsNotFound(err) {
			var code swarm.Config
			if code, err = b.ensureConfig(ctx, fn); err != nil {
				return err
			}
			_, err = b.cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: b.serviceSpec(spec, digest, replicas, code)})
			if err != nil {
				return fmt.Errorf("create service %s: %w", name, err)
			}
			b.log.Info("service created", "service", name, "version", fn.Version, "replicas", replicas)
			return nil
		}
		if err != nil {
			return fmt.Errorf("inspect service %s: %w", name, err)
		}
		svc := res.Service
		next := svc.Spec
		rolled := svc.Spec.Labels[LabelSpec] != digest
		if rolled {
			code, err := b.ensureConfig(ctx, fn)
			if err != nil {
				return err
			}
			next = b.serviceSpec(spec, digest, replicas, code)
		} else {
			if m := svc.Spec.Mode.Replicated; m != nil && m.Replicas != nil && *m.Replicas == uint64(replicas) {
				return nil
			}
			n := uint64(replicas)
			next.Mode = swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &n}}
		}
		_, err = b.cli.ServiceUpdate(ctx, svc.ID, client.ServiceUpdateOptions{Version: svc.Version, Spec: next})
		if err == nil {
			if rolled {
				b.log.Info("service updated", "service", name, "version", fn.Version, "replicas", replicas)
			}
			return nil
		}
		// Another writer moved the service's version since the inspect:
		// read it again.
		if !strings.Contains(err.Error(), "out of sequence") {
			return fmt.Errorf("update service %s: %w", name, err)
		}
	}
	return fmt.Errorf("update service %s: %w", name, err)
}

// specDigest names what the workers run and how they are placed: a
// service whose LabelSpec differs is rolled. The version number is not in
// it: the same code published again needs no new workers.
func (b *Backend) specDigest(spec pool.WorkerSpec) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n%s\n%d\n%s\n%s\n%d %d %d\n%s\n", pool.Key(spec.Function), spec.Concurrency, spec.LocalTimeout,
		spec.MaxResultBytes, b.cfg.Image, strings.Join(b.cfg.Constraints, ","), b.cfg.Memory, b.cfg.NanoCPUs, b.cfg.PidsLimit, b.cfg.StopDelay)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// workerLabels are the labels of the function's service and of each of
// its containers: a task's own labels say which version it runs while a
// roll has tasks of two.
func workerLabels(poolName string, fn spillway.Function) map[string]string {
	l := map[string]string{
		pool.LabelPool: poolName, pool.LabelFunction: fn.Name, pool.LabelVersion: strconv.FormatInt(fn.Version, 10),
		pool.LabelSHA256: fn.SHA256, pool.LabelStyle: string(fn.Style), pool.LabelHandler: fn.HandlerName(),
	}
	if fn.ReuseProcess && fn.Style == spillway.StyleScript {
		l[pool.LabelReuseProcess] = "1"
	}
	return l
}

// serviceSpec is the function's service: replicas hardened workers of spec.
func (b *Backend) serviceSpec(spec pool.WorkerSpec, digest string, replicas int, code swarm.Config) swarm.ServiceSpec {
	fn := spec.Function
	n := uint64(replicas)
	// A stopped worker serves StopDelay, then finishes its calls (at most
	// LOCAL_TIMEOUT), then its runners: the grace covers all three.
	grace := b.cfg.StopDelay + max(spec.LocalTimeout, 0) + b.cfg.StopGrace
	restartDelay := DefaultRestartDelay
	env := workerapi.Env{
		Port: b.cfg.ServerPort, FunctionPath: workerapi.FunctionPath, Style: fn.Style, Handler: fn.HandlerName(),
		ReuseProcess: fn.ReuseProcess && fn.Style == spillway.StyleScript, Version: fn.Version,
		Concurrency: max(spec.Concurrency, 1), LocalTimeout: max(spec.LocalTimeout, 0),
		MaxResultBytes: max(spec.MaxResultBytes, 0), StopDelay: b.cfg.StopDelay,
	}
	limits := &swarm.Limit{NanoCPUs: b.cfg.NanoCPUs, MemoryBytes: b.cfg.Memory}
	if b.cfg.PidsLimit > 0 {
		limits.Pids = b.cfg.PidsLimit
	}
	labels := workerLabels(b.cfg.Pool, fn)
	svcLabels := maps.Clone(labels)
	svcLabels[LabelSpec] = digest
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: b.ServiceName(), Labels: svcLabels},
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
			Resources: &swarm.ResourceRequirements{Limits: limits},
			// A task that exits or is killed is started again in its slot;
			// one the pool asks to replace is killed (Remove).
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, Delay: &restartDelay},
			Placement:     &swarm.Placement{Constraints: slices.Clone(b.cfg.Constraints)},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: b.cfg.Network()}},
			LogDriver:     &swarm.Driver{Name: "json-file", Options: map[string]string{"max-size": "1m", "max-file": "2"}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &n}},
		// A roll replaces every task at once, each new one started before
		// its old one stops (as the docker backend's pool rolls): the pool
		// never has fewer workers than it asked for.
		UpdateConfig: &swarm.UpdateConfig{Parallelism: 0, Order: swarm.UpdateOrderStartFirst,
			FailureAction: swarm.UpdateFailureActionContinue, Monitor: 2 * time.Second},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
}

// RemoveService removes the function's service (Swarm stops its tasks with
// their grace) and then the code configs no task uses any more. A service
// that is already gone is not an error.
func (b *Backend) RemoveService(ctx context.Context) error {
	if b.cfg.Function == "" {
		return errors.New("remove a service: the backend serves no one function")
	}
	if _, err := b.cli.ServiceRemove(ctx, b.ServiceName(), client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove service %s: %w", b.ServiceName(), err)
	}
	b.log.Info("service removed", "service", b.ServiceName())
	b.mu.Lock()
	defer b.mu.Unlock()
	// The tasks go with their grace; their configs after them.
	if err := b.removeUnusedConfigs(ctx); err != nil {
		b.log.Debug("code configs left for later", "err", err)
	}
	return nil
}

// Remove has Swarm replace the task id: Swarm cannot remove one chosen
// task of a service, so its container is killed and the service's restart
// policy starts another in its slot. Only a task on this engine's node can
// be killed from here; one on another node is left to Swarm (it replaces
// the task when its worker exits). A task that is gone is not an error.
func (b *Backend) Remove(ctx context.Context, id string) error {
	res, err := b.cli.TaskInspect(ctx, id, client.TaskInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect task %s: %w", id, err)
	}
	task := res.Task
	if ended(task.Status.State) || task.Status.ContainerStatus == nil || task.Status.ContainerStatus.ContainerID == "" {
		return nil
	}
	node, err := b.nodeID(ctx)
	if err != nil {
		return err
	}
	if task.NodeID != node {
		return fmt.Errorf("replace task %s: it runs on node %s, whose engine lb does not reach; Swarm replaces it when its worker exits", id, task.NodeID)
	}
	if _, err := b.cli.ContainerKill(ctx, task.Status.ContainerStatus.ContainerID, client.ContainerKillOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("kill task %s's container: %w", id, err)
	}
	b.log.Info("task killed to be replaced", "task", id)
	return nil
}

// nodeID is the swarm node of this engine.
func (b *Backend) nodeID(ctx context.Context) (string, error) {
	info, err := b.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", fmt.Errorf("read this engine's swarm node: %w", err)
	}
	return info.Info.Swarm.NodeID, nil
}

// removeUnusedConfigs removes this backend's code configs that neither a
// service nor a task that has not ended mounts: a roll's old tasks keep
// their config until they stop. Swarm refuses to remove a config a service
// uses, so a race with another pool only costs an error here.
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
	mounts := func(cs *swarm.ContainerSpec) {
		if cs != nil {
			for _, c := range cs.Configs {
				used[c.ConfigID] = true
			}
		}
	}
	f := make(client.Filters)
	for _, s := range svcs.Items {
		mounts(s.Spec.TaskTemplate.ContainerSpec)
		f = f.Add("service", s.ID)
	}
	if len(svcs.Items) > 0 {
		tasks, err := b.cli.TaskList(ctx, client.TaskListOptions{Filters: f})
		if err != nil {
			return fmt.Errorf("list tasks: %w", err)
		}
		for _, t := range tasks.Items {
			if !ended(t.Status.State) {
				mounts(t.Spec.ContainerSpec)
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

// ended reports whether a task in state st has stopped for good.
func ended(st swarm.TaskState) bool {
	switch st {
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed,
		swarm.TaskStateRejected, swarm.TaskStateRemove, swarm.TaskStateOrphaned:
		return true
	}
	return false
}

// List returns the tasks of the function's service that Swarm runs or is
// starting, each as a worker with its own version labels and, once it
// runs, its address; a task Swarm is stopping is Stopping. When the code
// configs its tasks mount change (a roll ended), the unused ones go.
func (b *Backend) List(ctx context.Context) ([]pool.Worker, error) {
	if b.cfg.Function == "" {
		return nil, errors.New("list workers: the backend serves no one function")
	}
	res, err := b.cli.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", b.ServiceName())})
	if cerrdefs.IsNotFound(err) {
		return nil, nil // no service: no workers
	}
	if err != nil {
		return nil, fmt.Errorf("list tasks of service %s: %w", b.ServiceName(), err)
	}
	var out []pool.Worker
	var configs []string
	for _, t := range res.Items {
		if ended(t.Status.State) || t.ServiceID == "" {
			continue
		}
		cs := t.Spec.ContainerSpec
		if cs == nil || cs.Labels[pool.LabelPool] != b.cfg.Pool {
			continue // a service of that name that is not this pool's
		}
		for _, c := range cs.Configs {
			configs = append(configs, c.ConfigID)
		}
		l := cs.Labels
		version, _ := strconv.ParseInt(l[pool.LabelVersion], 10, 64)
		w := pool.Worker{ID: t.ID, Name: fmt.Sprintf("%s.%d.%s", b.ServiceName(), t.Slot, t.ID),
			Function: l[pool.LabelFunction], Version: version, SHA256: l[pool.LabelSHA256], Style: spillway.Style(l[pool.LabelStyle]),
			Handler: l[pool.LabelHandler], ReuseProcess: l[pool.LabelReuseProcess] == "1", Created: t.Meta.CreatedAt}
		if t.Status.State == swarm.TaskStateRunning {
			w.Running = true
			w.Stopping = t.DesiredState != swarm.TaskStateRunning
			w.Addr, _ = b.address(t)
		} else if t.DesiredState != swarm.TaskStateRunning {
			continue // stopped before it ran
		}
		out = append(out, w)
	}
	slices.Sort(configs)
	configs = slices.Compact(configs)
	b.mu.Lock()
	changed := !slices.Equal(configs, b.mounted)
	b.mounted = configs
	if changed {
		if err := b.removeUnusedConfigs(ctx); err != nil {
			b.log.Debug("code configs left for later", "err", err)
		}
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(x, y pool.Worker) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
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

// PoolFunctions returns the functions that have a service in this pool,
// sorted.
func (b *Backend) PoolFunctions(ctx context.Context) ([]string, error) {
	svcs, err := b.cli.ServiceList(ctx, client.ServiceListOptions{Filters: b.poolFilter()})
	if err != nil {
		return nil, fmt.Errorf("list worker services of pool %s: %w", b.cfg.Pool, err)
	}
	var out []string
	for _, s := range svcs.Items {
		if fn := s.Spec.Labels[pool.LabelFunction]; fn != "" && !slices.Contains(out, fn) {
			out = append(out, fn)
		}
	}
	slices.Sort(out)
	return out, nil
}
