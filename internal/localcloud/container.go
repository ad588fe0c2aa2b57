package localcloud

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// Isolation is how an execution environment runs (LOCALCLOUD_ISOLATION).
type Isolation string

const (
	// IsolationContainer runs each environment in its own hardened container
	// with no network: function code reaches nothing of ours.
	IsolationContainer Isolation = "container"
	// IsolationUnsafeProcess runs each environment as a bare process of
	// localcloud's user, on localcloud's network, without limits. Unsafe for
	// untrusted code; for tests on a host without Docker.
	IsolationUnsafeProcess Isolation = "unsafe-process"
)

// Labels of environment containers. LabelInstance scopes them to one
// localcloud (LOCALCLOUD_INSTANCE), which removes its own leftovers at start
// and at Close.
const (
	LabelInstance = "spillway.localcloud"
	LabelFunction = "spillway.localcloud.function"
)

// Inside the environment image (the worker image by default).
const (
	envTaskDir = "/var/task"
	envUser    = "10001:10001" // the worker image's unprivileged user
	envUID     = 10001
	// envPython runs the bootstrap; the worker image links it on any base.
	envPython = "/usr/bin/python3"
	// runtimeAPIStdio is AWS_LAMBDA_RUNTIME_API in a container: the Runtime
	// API is the container's stdin and stdout (bootstrap.py).
	runtimeAPIStdio = "stdio"
)

// Defaults of the container limits.
const (
	DefaultInstance  = "localcloud"
	DefaultImage     = "spillway-worker:latest"
	DefaultPidsLimit = 256
	DefaultCPUs      = 1.0
	// DefaultMaxMemoryMB caps an environment's memory (LOCALCLOUD_MAX_MEMORY).
	DefaultMaxMemoryMB = 512
	envTmpfsSize       = 64 << 20
	// dockerCallTimeout bounds one Docker call that is not part of a start.
	dockerCallTimeout = 30 * time.Second
)

// engine is the part of the Docker Engine API localcloud uses;
// *client.Client implements it.
type engine interface {
	ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	CopyToContainer(ctx context.Context, id string, opts client.CopyToContainerOptions) (client.CopyToContainerResult, error)
	ContainerAttach(ctx context.Context, id string, opts client.ContainerAttachOptions) (client.ContainerAttachResult, error)
	ContainerStart(ctx context.Context, id string, opts client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerRemove(ctx context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	Close() error
}

var _ engine = (*client.Client)(nil)

// openEngine connects to the engine named by the environment (DOCKER_HOST,
// ...) and checks that the environment image is there.
func openEngine(ctx context.Context, image string) (engine, error) {
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("create Docker client (LOCALCLOUD_ISOLATION=container): %w", err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("reach the Docker engine (LOCALCLOUD_ISOLATION=container; unsafe-process runs without it): %w", err)
	}
	if _, err := cli.ImageInspect(ctx, image); err != nil {
		cli.Close()
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("environment image %s (LOCALCLOUD_IMAGE) not found: build it with `make images`", image)
		}
		return nil, fmt.Errorf("inspect environment image %s (LOCALCLOUD_IMAGE): %w", image, err)
	}
	return cli, nil
}

// removeLeftovers removes every environment container of this instance:
// at start, those of a localcloud that crashed; at Close, any a stop missed.
func (s *Server) removeLeftovers(ctx context.Context) error {
	res, err := s.docker.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelInstance+"="+s.cfg.Instance),
	})
	if err != nil {
		return fmt.Errorf("list environment containers of %s: %w", s.cfg.Instance, err)
	}
	var errs []error
	for _, c := range res.Items {
		if _, err := s.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) && !isRemovalInProgress(err) {
			errs = append(errs, fmt.Errorf("remove environment container %s: %w", c.ID[:12], err))
		}
	}
	if len(res.Items) > 0 {
		s.log.Info("localcloud: removed leftover environment containers", "instance", s.cfg.Instance, "count", len(res.Items))
	}
	return errors.Join(errs...)
}

func isRemovalInProgress(err error) bool {
	return cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress")
}

// boxed is the container half of an environment.
type boxed struct {
	docker engine
	id     string
	attach client.ContainerAttachResult
	pipe   net.Conn // localcloud's end of the stdio pipe; the runtime API serves the other
}

// startContainer creates the hardened container of e, copies the function
// in, attaches to its stdio and starts it. It returns the connection the
// Runtime API serves; e.exited closes when the container's output ends.
func (s *Server) startContainer(ctx context.Context, e *environment, env []string) (net.Conn, error) {
	snap := e.snap
	archive, err := snap.code.tarball()
	if err != nil {
		return nil, err
	}
	pids := s.cfg.PidsLimit
	mem := int64(min(snap.memoryMB, s.cfg.MaxMemoryMB)) << 20
	created, err := s.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "localcloud-" + s.cfg.Instance + "-" + e.id,
		Config: &container.Config{
			Image:       s.cfg.Image,
			User:        envUser,
			Env:         env,
			Entrypoint:  []string{envPython},
			Cmd:         []string{"-u", "-c", string(bootstrapPy)},
			WorkingDir:  envTaskDir,
			OpenStdin:   true,
			StdinOnce:   false,
			AttachStdin: true, AttachStdout: true, AttachStderr: true,
			NetworkDisabled: true,
			Labels: map[string]string{
				LabelInstance: s.cfg.Instance,
				LabelFunction: snap.name,
			},
		},
		HostConfig: &container.HostConfig{
			// No network at all: only a loopback of its own. Redis, lb,
			// localcloud's API, the host and every other environment are
			// out of reach; the Runtime API is the container's stdio.
			NetworkMode:    "none",
			RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
			ReadonlyRootfs: true,
			CapDrop:        []string{"ALL"},
			SecurityOpt:    []string{"no-new-privileges:true"},
			Tmpfs: map[string]string{
				"/tmp": fmt.Sprintf("rw,nosuid,nodev,noexec,size=%d,mode=1777,uid=%d,gid=%d", envTmpfsSize, envUID, envUID),
			},
			// /var/task: a fresh anonymous volume (not seeded from the
			// image, so root owns it) that the code is copied into as
			// root-owned, read-only files.
			Mounts: []mount.Mount{{Type: mount.TypeVolume, Target: envTaskDir,
				VolumeOptions: &mount.VolumeOptions{NoCopy: true}}},
			LogConfig: container.LogConfig{Type: "none"},
			Resources: container.Resources{
				Memory:     mem,
				MemorySwap: mem, // no swap on top of the function's memory
				NanoCPUs:   int64(s.cfg.CPUs * 1e9),
				PidsLimit:  &pids,
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create environment container for %s: %w", snap.name, err)
	}
	b := &boxed{docker: s.docker, id: created.ID}
	e.box = b
	fail := func(cause error) (net.Conn, error) {
		b.remove(e)
		return nil, cause
	}
	if _, err := s.docker.CopyToContainer(ctx, created.ID, client.CopyToContainerOptions{
		DestinationPath: envTaskDir,
		Content:         bytes.NewReader(archive),
	}); err != nil {
		return fail(fmt.Errorf("copy the code of %s into its environment: %w", snap.name, err))
	}
	b.attach, err = s.docker.ContainerAttach(ctx, created.ID, client.ContainerAttachOptions{
		Stream: true, Stdin: true, Stdout: true, Stderr: true,
	})
	if err != nil {
		return fail(fmt.Errorf("attach to the environment of %s: %w", snap.name, err))
	}
	// The Runtime API's HTTP connection: localcloud's server reads what
	// the bootstrap writes to stdout and writes to its stdin. stderr (the
	// function's output and the log markers) goes to the log sink.
	serverEnd, ours := net.Pipe()
	b.pipe = ours
	go func() {
		_, err := stdcopy.StdCopy(ours, e.logs, b.attach.Reader)
		ours.Close()
		status := b.exitStatus(err)
		e.exitErr = status
		close(e.exited)
	}()
	go func() {
		_, _ = io.Copy(b.attach.Conn, ours)
		_ = b.attach.CloseWrite()
	}()
	if _, err := s.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		serverEnd.Close()
		return fail(fmt.Errorf("start the environment of %s: %w", snap.name, err))
	}
	return serverEnd, nil
}

// exitStatus describes how the container ended once its output has: the
// exit code and whether the kernel killed it for memory.
func (b *boxed) exitStatus(streamErr error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		res, err := b.docker.ContainerInspect(ctx, b.id, client.ContainerInspectOptions{})
		if err != nil {
			if streamErr != nil {
				return fmt.Errorf("environment output ended: %w", streamErr)
			}
			return errors.New("environment container exited")
		}
		st := res.Container.State
		if st != nil && !st.Running {
			if st.OOMKilled {
				return fmt.Errorf("signal: killed (out of memory: the function's %d MB)", res.Container.HostConfig.Memory>>20)
			}
			if st.ExitCode > 128 {
				return fmt.Errorf("signal %d (exit status %d)", st.ExitCode-128, st.ExitCode)
			}
			return fmt.Errorf("exit status %d", st.ExitCode)
		}
		select {
		case <-ctx.Done():
			return errors.New("environment container stopped answering")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// remove force-removes the container with its /var/task volume and closes
// the stdio connection. A container already gone is not an error.
func (b *boxed) remove(e *environment) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	if _, err := b.docker.ContainerRemove(ctx, b.id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil &&
		!cerrdefs.IsNotFound(err) && !isRemovalInProgress(err) {
		e.log.Warn("localcloud: remove environment container", "container", b.id[:12], "err", err)
	}
	if b.attach.Conn != nil {
		b.attach.Close()
	}
	if b.pipe != nil {
		b.pipe.Close()
	}
}

// tarball is the code as a tar for /var/task: root-owned, read-only to the
// function (directories 0555, files 0444, or 0555 when executable). Built
// once per code version.
func (c *codeVersion) tarball() ([]byte, error) {
	c.tarOnce.Do(func() {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		err := filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(c.dir, path)
			if err != nil || rel == "." {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: info.ModTime(), Format: tar.FormatPAX}
			switch {
			case d.IsDir():
				hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o555
			case info.Mode().IsRegular():
				hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, info.Size(), 0o444
				if info.Mode()&0o111 != 0 {
					hdr.Mode = 0o555
				}
			default:
				return nil // zip.go writes only directories and regular files
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if hdr.Typeflag == tar.TypeReg {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := io.Copy(tw, f); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			err = tw.Close()
		}
		if err != nil {
			c.tarErr = fmt.Errorf("archive the code of %s: %w", c.id, err)
			return
		}
		c.tar = buf.Bytes()
	})
	return c.tar, c.tarErr
}

// containerEnv is the environment of the bootstrap in a container: Lambda's
// reserved variables with the container's paths, plus the function's own.
func (s *Server) containerEnv(snap envSnapshot) []string {
	return s.lambdaEnv(snap, map[string]string{
		"PATH":                   "/usr/local/bin:/usr/bin:/bin",
		"HOME":                   "/tmp",
		"TMPDIR":                 "/tmp",
		"PYTHONPATH":             envTaskDir,
		"LAMBDA_TASK_ROOT":       envTaskDir,
		"LAMBDA_RUNTIME_DIR":     "/var/runtime",
		"AWS_LAMBDA_RUNTIME_API": runtimeAPIStdio,
	})
}

// oneConnListener hands one connection to http.Server.Serve, then blocks
// until closed.
type oneConnListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{conns: make(chan net.Conn, 1), closed: make(chan struct{}), addr: stdioAddr{}}
	l.conns <- c
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		select {
		case c := <-l.conns:
			c.Close()
		default:
		}
	})
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return runtimeAPIStdio }
