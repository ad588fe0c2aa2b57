package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/spillway-faas/spillway/internal/testutil"
)

// BenchmarkSwarmAPI measures what a controller on Swarm pays the engine: a
// poll of one function's service's task list (lb's List, every 500 ms per
// function), an inspect, a service update that only writes the spec (a
// label; a replica count is the same write), a rolling update that
// replaces every task (start-first, all at once, as the swarm backend
// rolls), and a scale-up by one task, each until Swarm reports the tasks
// running. Besides the wall time per operation it reports
// dockerd's CPU per operation (user + system from /proc), the cost each
// further node and function adds to the manager. The service runs sleep in
// the worker image, REPLICAS tasks (SPILLWAY_BENCH_SWARM_REPLICAS, default
// 4), on a one-node swarm the benchmark starts when none is active.
//
//	SPILLWAY_INTEGRATION=1 go test -run '^$' -bench SwarmAPI -benchtime 200x ./test/e2e
func BenchmarkSwarmAPI(b *testing.B) {
	img := testutil.Image("worker")
	testutil.DockerImage(b, img)
	testutil.Swarm(b)
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()

	replicas := uint64(4)
	if v, err := strconv.Atoi(os.Getenv("SPILLWAY_BENCH_SWARM_REPLICAS")); err == nil && v > 0 {
		replicas = uint64(v)
	}
	name := fmt.Sprintf("spwbench-%d", os.Getpid())
	grace := time.Second
	init := true
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{"spillway.bench": name}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:           img,
				Command:         []string{"sleep", "86400"},
				Env:             []string{"BENCH_ROUND=0"},
				Init:            &init,
				StopGracePeriod: &grace,
			},
		},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		UpdateConfig: &swarm.UpdateConfig{Parallelism: 0, Order: swarm.UpdateOrderStartFirst},
	}
	created, err := cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec})
	if err != nil {
		b.Fatalf("create service %s: %v", name, err)
	}
	id := created.ID
	b.Cleanup(func() {
		if _, err := cli.ServiceRemove(context.Background(), id, client.ServiceRemoveOptions{}); err != nil {
			b.Errorf("remove service %s: %v", name, err)
		}
		// The swarm may be left next: wait for the tasks' containers to go.
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=com.docker.swarm.service.id="+id).Output()
			if len(strings.TrimSpace(string(out))) == 0 {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	start := time.Now()
	waitTasks(b, cli, id, int(replicas), "BENCH_ROUND=0")
	b.Logf("%d tasks running %.2fs after the service was created", replicas, time.Since(start).Seconds())

	// lb's poll of a function's workers (swarm.Backend.List): every task of
	// its service, those ended included.
	tasksFilter := make(client.Filters).Add("service", id)
	dockerd := dockerdPID(b)
	round := 0
	update := func(change func(*swarm.ServiceSpec)) {
		s, err := cli.ServiceInspect(ctx, id, client.ServiceInspectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		sp := s.Service.Spec
		change(&sp)
		if _, err := cli.ServiceUpdate(ctx, id, client.ServiceUpdateOptions{Version: s.Service.Version, Spec: sp}); err != nil {
			b.Fatal(err)
		}
	}
	cases := []struct {
		name string
		op   func(b *testing.B)
	}{
		{"TaskList", func(b *testing.B) {
			res, err := cli.TaskList(ctx, client.TaskListOptions{Filters: tasksFilter})
			if err != nil || len(res.Items) < int(replicas) {
				b.Fatalf("task list: %d tasks, %v", len(res.Items), err)
			}
		}},
		{"ServiceInspect", func(b *testing.B) {
			if _, err := cli.ServiceInspect(ctx, id, client.ServiceInspectOptions{}); err != nil {
				b.Fatal(err)
			}
		}},
		{"ServiceUpdateLabel", func(b *testing.B) {
			round++
			update(func(sp *swarm.ServiceSpec) { sp.Labels["spillway.bench.round"] = strconv.Itoa(round) })
		}},
		{"ServiceUpdateRolling", func(b *testing.B) {
			round++
			env := "BENCH_ROUND=" + strconv.Itoa(round)
			update(func(sp *swarm.ServiceSpec) { sp.TaskTemplate.ContainerSpec.Env = []string{env} })
			waitTasks(b, cli, id, int(replicas), env)
		}},
		{"ScaleUpOne", func(b *testing.B) {
			n := replicas + 1
			env := ""
			update(func(sp *swarm.ServiceSpec) {
				sp.Mode.Replicated.Replicas = &n
				env = sp.TaskTemplate.ContainerSpec.Env[0]
			})
			waitTasks(b, cli, id, int(n), env)
			b.StopTimer()
			update(func(sp *swarm.ServiceSpec) { sp.Mode.Replicated.Replicas = &replicas })
			waitTasks(b, cli, id, int(replicas), env)
			b.StartTimer()
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			// dockerd's CPU without these operations (other users of the
			// engine, the swarm's own ticks), taken out of the figure.
			idle0, t0 := cpuTicks(b, dockerd), time.Now()
			time.Sleep(time.Second)
			idleRate := float64(cpuTicks(b, dockerd)-idle0) / time.Since(t0).Seconds()
			cpu0, t1 := cpuTicks(b, dockerd), time.Now()
			b.ResetTimer()
			for range b.N {
				c.op(b)
			}
			b.StopTimer()
			// Clock ticks are 10 ms: read the CPU over many operations.
			ticks := float64(cpuTicks(b, dockerd)-cpu0) - idleRate*time.Since(t1).Seconds()
			b.ReportMetric(max(ticks, 0)*1e4/float64(b.N), "dockerd-cpu-µs/op")
			b.ReportMetric(idleRate*1e4, "dockerd-idle-cpu-µs/s")
		})
	}
}

// waitTasks waits until exactly n tasks of the service are meant to run,
// every one of them running with env in its spec.
func waitTasks(b *testing.B, cli *client.Client, id string, n int, env string) {
	b.Helper()
	f := make(client.Filters).Add("service", id).Add("desired-state", "running")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		res, err := cli.TaskList(context.Background(), client.TaskListOptions{Filters: f})
		if err != nil {
			b.Fatal(err)
		}
		ready := 0
		for _, t := range res.Items {
			if t.Status.State == swarm.TaskStateRunning && slices.Contains(t.Spec.ContainerSpec.Env, env) {
				ready++
			}
		}
		if ready == n && len(res.Items) == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("service %s: %d of %d tasks running with %s after 2m (%d meant to run)", id, ready, n, env, len(res.Items))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dockerdPID(b *testing.B) int {
	b.Helper()
	out, err := exec.Command("pidof", "dockerd").Output()
	fields := strings.Fields(string(out))
	if err != nil || len(fields) != 1 {
		b.Skipf("no single dockerd process to read the CPU of (%q, %v)", out, err)
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		b.Fatal(err)
	}
	return pid
}

// cpuTicks is the user + system time of a process, in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// After the command: state is field 3 of stat, utime 14, stime 15.
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}
