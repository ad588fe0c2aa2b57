package docker

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/spillway-faas/spillway/internal/pool"
)

// TestFunctionsShareAPool: two functions' backends of one pool (one opened
// on its own, one made with For) each start, list and watch only their
// own function's workers, named <pool>-<function>-<version>-… and
// labelled with pool, function and version; PoolFunctions sees both; the
// shared network survives the removal of one function's workers and goes
// with the last.
func TestFunctionsShareAPool(t *testing.T) {
	image := fakeWorkerImage(t)
	faas := openTestBackend(t, image, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cfg := faas.cfg
	cfg.Function = "hello"
	hello, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Open the second function's backend: %v", err)
	}
	defer hello.Close()
	other, err := faas.For("other")
	if err != nil {
		t.Fatal(err)
	}
	if other.Function() != "other" || hello.Function() != "hello" || faas.Function() != "faas" {
		t.Fatalf("functions %q %q %q", faas.Function(), hello.Function(), other.Function())
	}

	faasFn := testFunction() // faas, version 7
	helloFn := testFunction()
	helloFn.Name, helloFn.Version = "hello", 3
	if _, err := faas.Start(ctx, pool.WorkerSpec{Function: helloFn}); err == nil || !strings.Contains(err.Error(), "wrong backend") {
		t.Fatalf("faas's backend started hello: %v", err)
	}

	// Each backend watches only its own function's exits.
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards died
	died := map[string][]string{}
	for _, b := range []*Backend{faas, hello} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = b.Watch(watchCtx, func(id string) {
				mu.Lock()
				defer mu.Unlock()
				died[b.Function()] = append(died[b.Function()], id)
			})
		}()
	}
	defer func() { stopWatch(); wg.Wait() }()

	fw, err := faas.Start(ctx, pool.WorkerSpec{Function: faasFn})
	if err != nil {
		t.Fatalf("start faas: %v", err)
	}
	hw, err := hello.Start(ctx, pool.WorkerSpec{Function: helloFn})
	if err != nil {
		t.Fatalf("start hello: %v", err)
	}
	for _, tc := range []struct {
		b      *Backend
		w      pool.Worker
		prefix string
		labels map[string]string
	}{
		{faas, fw, cfg.Pool + "-faas-7-", map[string]string{pool.LabelPool: cfg.Pool, pool.LabelFunction: "faas", pool.LabelVersion: "7"}},
		{hello, hw, cfg.Pool + "-hello-3-", map[string]string{pool.LabelPool: cfg.Pool, pool.LabelFunction: "hello", pool.LabelVersion: "3"}},
	} {
		if !strings.HasPrefix(tc.w.Name, tc.prefix) {
			t.Errorf("worker name %q, want prefix %q", tc.w.Name, tc.prefix)
		}
		ins, err := tc.b.cli.ContainerInspect(ctx, tc.w.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.labels {
			if got := ins.Container.Config.Labels[k]; got != v {
				t.Errorf("%s: label %s=%q, want %q", tc.w.Name, k, got, v)
			}
		}
		list, err := tc.b.List(ctx)
		if err != nil || len(list) != 1 || list[0].ID != tc.w.ID || list[0].Function != tc.b.Function() {
			t.Errorf("%s's List = %+v, %v; want its one worker %s", tc.b.Function(), list, err, tc.w.Name)
		}
	}
	if list, err := other.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("a third function's List = %+v, %v; want nothing", list, err)
	}
	for _, b := range []*Backend{faas, hello, other} {
		if fns, err := b.PoolFunctions(ctx); err != nil || !slices.Equal(fns, []string{"faas", "hello"}) {
			t.Errorf("%s's PoolFunctions = %v, %v; want [faas hello]", b.Function(), fns, err)
		}
	}

	// faas's worker exits: only faas's watch hears it.
	if out, err := exec.CommandContext(ctx, "docker", "kill", fw.ID).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	waitFor(t, 30*time.Second, "faas's watch to see its worker die", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(died["faas"], fw.ID)
	})

	// faas's workers go; the network stays for hello's, which still answers.
	if err := faas.Remove(ctx, fw.ID); err != nil {
		t.Fatal(err)
	}
	if err := faas.RemoveNetwork(ctx); err != nil {
		t.Fatalf("RemoveNetwork with hello's worker left: %v", err)
	}
	if _, err := faas.cli.NetworkInspect(ctx, cfg.Network, client.NetworkInspectOptions{}); err != nil {
		t.Fatalf("the network went while hello's worker uses it: %v", err)
	}
	waitHealthz(t, hw.Addr, 30*time.Second)
	if fns, err := hello.PoolFunctions(ctx); err != nil || !slices.Equal(fns, []string{"hello"}) {
		t.Errorf("PoolFunctions after faas's removal = %v, %v; want [hello]", fns, err)
	}

	if err := hello.Remove(ctx, hw.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "hello's watch to see its worker die", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(died["hello"], hw.ID)
	})
	mu.Lock()
	if slices.Contains(died["faas"], hw.ID) || slices.Contains(died["hello"], fw.ID) {
		t.Errorf("a watch heard another function's worker: %v", died)
	}
	mu.Unlock()
	if err := hello.RemoveNetwork(ctx); err != nil {
		t.Fatalf("RemoveNetwork after the last worker: %v", err)
	}
	if _, err := faas.cli.NetworkInspect(ctx, cfg.Network, client.NetworkInspectOptions{}); err == nil {
		t.Fatalf("network %s survives the last function's workers", cfg.Network)
	}
	if fns, err := hello.PoolFunctions(ctx); err != nil || len(fns) != 0 {
		t.Errorf("PoolFunctions with no worker = %v, %v", fns, err)
	}
}

// TestBackendsOpenedAtOnceShareOneNetwork: the backends of several
// functions opened at the same moment end with one pool network, however
// the engine handles two creations of one name.
func TestBackendsOpenedAtOnceShareOneNetwork(t *testing.T) {
	image := fakeWorkerImage(t)
	name := "spwtest-" + randomSuffix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const n = 4
	backends := make([]*Backend, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			backends[i], errs[i] = Open(ctx, Config{Pool: name, Function: "f" + string(rune('0'+i)), Image: image,
				Network: name + "-net", Address: AddressAuto, ServerPort: 8001}, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open backend %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		removePool(t, backends[0])
		for _, b := range backends {
			b.Close()
		}
	})
	res, err := backends[0].cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", name+"-net")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 {
		t.Fatalf("%d networks named %s-net, want one", len(res.Items), name)
	}
	// Every backend starts a worker on it.
	for i, b := range backends {
		fn := testFunction()
		fn.Name = b.Function()
		w, err := b.Start(ctx, pool.WorkerSpec{Function: fn})
		if err != nil {
			t.Fatalf("backend %d Start: %v", i, err)
		}
		if w.Addr == "" {
			t.Errorf("backend %d: worker %s without an address", i, w.Name)
		}
	}
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
