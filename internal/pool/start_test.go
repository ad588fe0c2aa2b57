package pool_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/docker"
	"github.com/spillway-faas/spillway/internal/pool"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// startPhases is where one worker start spent its time, create to first
// healthy health(). The engine calls run one after the other; the worker's
// own boot overlaps the end of start and inspect (it begins when the engine
// has started the process), so the phases add up to a little more than
// Total.
//
// A start that thaws the pool's frozen spare (Config.Spare) has only Thaw
// and Probe: the rest happened before the pool needed the worker.
type startPhases struct {
	Thaw                         time.Duration // the spare unpaused (docker.Backend.Thaw)
	Create, Copy, Start, Inspect time.Duration // engine API calls (docker.Backend.Start)
	Boot                         time.Duration // process started → runners starting (init, the Go worker, the shim written)
	Runners                      time.Duration // Python runners started and the function imported
	Listen                       time.Duration // runners ready → listening
	Probe                        time.Duration // listening (or thawed) → the pool's first healthy health() answered
	Total                        time.Duration // the pool's startup time (OnWorkerReady)
}

// phaseNames orders the phases for reports.
var phaseNames = []string{"thaw", "create", "copy", "start", "inspect", "boot", "runners", "listen", "probe", "total"}

func (s startPhases) get(name string) time.Duration {
	return map[string]time.Duration{"thaw": s.Thaw, "create": s.Create, "copy": s.Copy, "start": s.Start, "inspect": s.Inspect,
		"boot": s.Boot, "runners": s.Runners, "listen": s.Listen, "probe": s.Probe, "total": s.Total}[name]
}

// recordLog is a slog destination the test reads back: JSON lines.
type recordLog struct {
	buf testutil.SyncBuffer
}

func (r *recordLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&r.buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// find returns the attributes of the last record with message msg and
// attribute key=value.
func (r *recordLog) find(msg, key, value string) (map[string]any, bool) {
	var found map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.buf.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		if rec["msg"] == msg && fmt.Sprint(rec[key]) == value {
			found = rec
		}
	}
	return found, found != nil
}

func nanos(rec map[string]any, key string) time.Duration {
	f, _ := rec[key].(float64) // slog's JSON writes a Duration as nanoseconds
	return time.Duration(f)
}

// openTimedDocker is openDocker with the backend's debug log recorded.
func openTimedDocker(t testing.TB, rec *recordLog) *docker.Backend {
	t.Helper()
	testutil.DockerImage(t, workerImage)
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := "spwstart-" + hex.EncodeToString(r[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := docker.Open(ctx, docker.Config{Pool: name, Image: workerImage, Network: name + "-net",
		Address: docker.AddressAuto, ServerPort: 8001, Memory: 256 << 20, PidsLimit: 256}, rec.logger())
	if err != nil {
		t.Fatalf("docker.Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ws, err := b.List(ctx)
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, w := range ws {
			t.Errorf("container %s left behind", w.Name)
			_ = b.Remove(ctx, w.ID)
		}
		if err := b.RemoveNetwork(ctx); err != nil {
			t.Errorf("cleanup network: %v", err)
		}
		b.Close()
	})
	return b
}

var runnersOpenRE = regexp.MustCompile(`runners_open=(\S+)`)

// workerLog is what the engine knows of a worker's boot: when its process
// started, when the runners were open and when it listened (the engine's
// timestamps of the worker's log lines), and the runners' start time the
// worker logged.
type workerLog struct {
	started, opened, listening time.Time
	runners                    time.Duration
}

func workerTimes(ctx context.Context, name string) (workerLog, error) {
	var w workerLog
	out, err := exec.CommandContext(ctx, "docker", "inspect", "--format", "{{.State.StartedAt}}", name).Output()
	if err != nil {
		return w, fmt.Errorf("inspect %s: %w", name, err)
	}
	if w.started, err = time.Parse(time.RFC3339Nano, strings.TrimSpace(string(out))); err != nil {
		return w, fmt.Errorf("StartedAt of %s: %w", name, err)
	}
	out, err = exec.CommandContext(ctx, "docker", "logs", "--timestamps", name).CombinedOutput()
	if err != nil {
		return w, fmt.Errorf("logs of %s: %w: %s", name, err, out)
	}
	for line := range strings.Lines(string(out)) {
		var at *time.Time
		switch {
		case strings.Contains(line, `msg="runner pool open"`):
			at = &w.opened
		case strings.Contains(line, `msg="worker listening"`):
			at = &w.listening
			if m := runnersOpenRE.FindStringSubmatch(line); m != nil {
				w.runners, _ = time.ParseDuration(m[1])
			}
		default:
			continue
		}
		ts, _, _ := strings.Cut(line, " ")
		if *at, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return w, fmt.Errorf("log timestamp of %s: %w", name, err)
		}
	}
	if w.opened.IsZero() || w.listening.IsZero() {
		return w, fmt.Errorf("worker %s never logged that its runners are open and it listens:\n%s", name, out)
	}
	return w, nil
}

// measureStarts starts n workers of fn one after the other on a pool of
// min 0 (each from zero: scale to 1, wait until ready, scale back to 0 and
// wait until it is gone) and returns where each start spent its time.
// With spare, the pool keeps a frozen spare, and each start waits first
// until the spare is there, as it is for a function idle a while.
func measureStarts(t testing.TB, n int, fn spillway.Function, spare bool) []startPhases {
	t.Helper()
	var rec recordLog
	b := openTimedDocker(t, &rec)
	p := pool.New(b, pool.Config{Min: 0, Max: 1, Concurrency: 1, LocalTimeout: 5 * time.Second, Spare: spare})
	p.Logger = rec.logger()
	var mu sync.Mutex // guards startups, readyAt
	var startups []time.Duration
	var readyAt []time.Time
	p.OnWorkerReady = func(d time.Duration) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		startups = append(startups, d)
		readyAt = append(readyAt, now)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*30*time.Second)
	defer cancel()
	if err := p.Open(ctx, fn); err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	var out []startPhases
	for i := range n {
		if spare {
			if err := waitSpare(ctx, p); err != nil {
				t.Fatalf("start %d: %v", i, err)
			}
		}
		p.Scale(1)
		if err := p.WaitReady(ctx, 1); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		snap := p.Snapshot()
		if len(snap.Members) != 1 {
			t.Fatalf("start %d: %d members, want 1", i, len(snap.Members))
		}
		name := snap.Members[0].Name
		// OnWorkerReady runs just after the member turns ready.
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := len(startups)
			mu.Unlock()
			if got > i {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("start %d: OnWorkerReady not called", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if spare {
			thaw, ok := rec.find("worker thawed", "worker", snap.Members[0].ID)
			if !ok {
				t.Fatalf("start %d: %s was not thawed from the spare", i, name)
			}
			mu.Lock()
			ph := startPhases{Thaw: nanos(thaw, "thaw"), Total: startups[i]}
			mu.Unlock()
			ph.Probe = ph.Total - ph.Thaw
			out = append(out, ph)
		} else {
			out = append(out, coldPhases(t, ctx, &rec, name, startups[i], readyAt[i]))
		}
		p.Scale(0)
		if err := waitMembers(ctx, p, 0); err != nil {
			t.Fatalf("scale %d back to zero: %v", i, err)
		}
	}
	return out
}

// coldPhases reads the phases of the start of worker name, which became
// ready at readyAt after startup, from the backend's log and the engine.
func coldPhases(t testing.TB, ctx context.Context, rec *recordLog, name string, startup time.Duration, readyAt time.Time) startPhases {
	t.Helper()
	api, ok := rec.find("worker started", "worker", name)
	if !ok {
		t.Fatalf("the backend logged no phases for %s", name)
	}
	wl, err := workerTimes(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return startPhases{
		Create: nanos(api, "create"), Copy: nanos(api, "copy"), Start: nanos(api, "start"), Inspect: nanos(api, "inspect"),
		Boot:    wl.opened.Add(-wl.runners).Sub(wl.started),
		Runners: wl.runners,
		Listen:  wl.listening.Sub(wl.opened),
		Probe:   readyAt.Sub(wl.listening),
		Total:   startup,
	}
}

// waitSpare polls until the pool has a frozen spare.
func waitSpare(ctx context.Context, p *pool.Pool) error {
	for p.Snapshot().Spare == "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the spare worker: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// waitMembers polls until the pool has n members.
func waitMembers(ctx context.Context, p *pool.Pool, n int) error {
	for {
		if got := len(p.Snapshot().Members); got == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d members (have %d): %w", n, len(p.Snapshot().Members), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// quantile is the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// phaseReport is one line per phase: median and p90 over the starts.
func phaseReport(starts []startPhases) string {
	var b strings.Builder
	for _, name := range phaseNames {
		ds := make([]time.Duration, len(starts))
		for i, s := range starts {
			ds[i] = s.get(name)
		}
		if !slices.ContainsFunc(ds, func(d time.Duration) bool { return d != 0 }) {
			continue
		}
		fmt.Fprintf(&b, "  %-8s p50 %6.1f ms  p90 %6.1f ms\n", name,
			float64(quantile(ds, 0.5))/1e6, float64(quantile(ds, 0.9))/1e6)
	}
	return b.String()
}

// TestDockerWorkerStartTime starts ten workers one after the other, each
// from zero as a min-0 function does, with the pool's frozen spare, and
// requires the median time from the pool's start to the first healthy
// health() to be under half a second.
func TestDockerWorkerStartTime(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name string
		fn   spillway.Function
	}{
		{"script", scriptFunction(1, "import sys\nprint('ok', sys.argv[1])\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			starts := measureStarts(t, n, tc.fn, true)
			t.Logf("%d starts of a %s worker from its frozen spare, to the first healthy health():\n%s", n, tc.name, phaseReport(starts))
			totals := make([]time.Duration, n)
			for i, s := range starts {
				totals[i] = s.Total
			}
			if p50 := quantile(totals, 0.5); p50 >= 500*time.Millisecond {
				t.Errorf("start time p50 %v, want under 500ms", p50)
			}
		})
	}
}

// BenchmarkDockerWorkerStart starts b.N workers one after the other from
// zero, without a spare (create, copy, start, boot) and from the frozen
// spare, and reports each phase's median (ms) and the p90 of the total.
func BenchmarkDockerWorkerStart(b *testing.B) {
	fn := scriptFunction(1, "import sys\nprint('ok', sys.argv[1])\n")
	for _, mode := range []struct {
		name  string
		spare bool
	}{{"cold", false}, {"spare", true}} {
		b.Run(mode.name, func(b *testing.B) {
			starts := measureStarts(b, max(b.N, 5), fn, mode.spare)
			b.Logf("%d starts (%s):\n%s", len(starts), mode.name, phaseReport(starts))
			for _, name := range phaseNames {
				ds := make([]time.Duration, len(starts))
				for i, s := range starts {
					ds[i] = s.get(name)
				}
				if q := quantile(ds, 0.5); q != 0 {
					b.ReportMetric(float64(q)/1e6, name+"-p50-ms")
				}
			}
			totals := make([]time.Duration, len(starts))
			for i, s := range starts {
				totals[i] = s.Total
			}
			b.ReportMetric(float64(quantile(totals, 0.9))/1e6, "total-p90-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// paused asks the engine whether container name is paused.
func paused(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("docker", "inspect", "--format", "{{.State.Paused}}", name).Output()
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return strings.TrimSpace(string(out)) == "true"
}

// TestDockerSpareWorker: a pool with Spare keeps one frozen worker that is
// no member, that another lb replica (a follower) neither adopts nor
// calls, that the next start takes, and that a roll replaces; Close
// removes it (openDocker's cleanup finds nothing left).
func TestDockerSpareWorker(t *testing.T) {
	b := openDocker(t)
	fn := scriptFunction(1, "import sys\nprint('v1', sys.argv[1])\n")
	p := pool.New(b, pool.Config{Min: 0, Max: 1, Concurrency: 1, LocalTimeout: 5 * time.Second, Spare: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := p.Open(ctx, fn); err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if err := waitSpare(ctx, p); err != nil {
		t.Fatal(err)
	}
	snap := p.Snapshot()
	spareName := snap.Spare
	if len(snap.Members) != 0 || !paused(t, spareName) {
		t.Fatalf("members %d, spare %s paused %v; want no member and a paused spare", len(snap.Members), spareName, paused(t, spareName))
	}
	var spareID string
	ws, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Name == spareName {
			spareID = w.ID
			if w.Running {
				t.Errorf("the backend lists the frozen spare as running")
			}
		}
	}

	// Another replica follows the same pool: the frozen spare is not a
	// worker it may serve.
	f := pool.New(b, pool.Config{Min: 0, Max: 1, Concurrency: 1, LocalTimeout: 5 * time.Second, Spare: true,
		HealthInterval: 100 * time.Millisecond})
	f.SetController(false)
	if err := f.Open(ctx, fn); err != nil {
		t.Fatalf("follower Open: %v", err)
	}
	defer func() {
		if err := f.Leave(ctx); err != nil {
			t.Errorf("follower Leave: %v", err)
		}
	}()
	time.Sleep(time.Second) // ten follow rounds
	if got := f.Snapshot(); len(got.Members) != 0 || got.Spare != "" {
		t.Fatalf("follower: %d members, spare %q; want none of either", len(got.Members), got.Spare)
	}
	// Without the freeze the follower would serve it: thawed, it is adopted.
	if err := b.Thaw(ctx, spareID); err != nil {
		t.Fatal(err)
	}
	if err := waitMembers(ctx, f, 1); err != nil {
		t.Fatalf("follower never adopted the thawed spare: %v", err)
	}
	if err := b.Freeze(ctx, spareID); err != nil {
		t.Fatal(err)
	}
	if err := waitMembers(ctx, f, 0); err != nil {
		t.Fatalf("follower kept the refrozen spare: %v", err)
	}

	// The next start is the spare, and another spare follows.
	p.Scale(1)
	if err := p.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := p.Snapshot().Members[0].Name; got != spareName {
		t.Errorf("started %s, want the spare %s", got, spareName)
	}
	if v, err := callWithRetry(ctx, p, "a"); err != nil || v != "v1 a\n" {
		t.Errorf("call on the thawed spare = %q, %v", v, err)
	}
	waitNewSpare := func(old, version string) string {
		t.Helper()
		for {
			if s := p.Snapshot().Spare; s != "" && s != old && strings.Contains(s, "-faas-"+version+"-") {
				return s
			}
			select {
			case <-ctx.Done():
				t.Fatalf("no new spare of version %s after %s (have %q)", version, old, p.Snapshot().Spare)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	next := waitNewSpare(spareName, "1")

	// A roll replaces the spare with one of the new version.
	v2 := scriptFunction(2, "import sys\nprint('v2', sys.argv[1])\n")
	if err := p.Roll(ctx, v2); err != nil {
		t.Fatalf("Roll: %v", err)
	}
	waitNewSpare(next, "2")
	if v, err := callWithRetry(ctx, p, "b"); err != nil || v != "v2 b\n" {
		t.Errorf("call after the roll = %q, %v", v, err)
	}
}
