package localcloud_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/localcloud/localcloudtest"
)

// bootstrapProcesses counts live processes running the bootstrap of dir.
func bootstrapProcesses(t *testing.T, dir string) int {
	t.Helper()
	want := filepath.Join(dir, "runtime", "bootstrap.py")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	n := 0
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), want) {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCloseStopsEveryProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1, Dir: dir})
	lc := cloud.Lambda()
	mustCreate(t, ctx, lc, "a", zipOf(t, map[string]string{"app.py": echoPy}), 10, nil)
	mustCreate(t, ctx, lc, "b", zipOf(t, map[string]string{"app.py": echoPy}), 10, nil)
	mustInvoke(t, ctx, lc, "a", map[string]any{})
	mustInvoke(t, ctx, lc, "b", map[string]any{})
	// One invocation still running when Close comes.
	running := make(chan error, 1)
	go func() {
		_, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("a"), Payload: []byte(`{"sleep": 5}`)})
		running <- err
	}()
	waitFor(t, "the long invocation in flight", 10*time.Second, func() bool { return cloud.Server.Stats().InFlight == 1 })
	if n := bootstrapProcesses(t, dir); n != 2 {
		t.Errorf("bootstrap processes before Close = %d, want 2", n)
	}
	start := time.Now()
	closeCtx, closeCancel := context.WithTimeout(ctx, 10*time.Second)
	defer closeCancel()
	if err := cloud.Server.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v with an invocation in flight", d)
	}
	if n := bootstrapProcesses(t, dir); n != 0 {
		t.Errorf("bootstrap processes after Close = %d, want 0", n)
	}
	<-running // ended one way or another, not hung
}

func TestIdleEnvironmentsAreReaped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1, IdleTimeout: 300 * time.Millisecond})
	lc := cloud.Lambda()
	mustCreate(t, ctx, lc, "a", zipOf(t, map[string]string{"app.py": echoPy}), 10, nil)
	mustInvoke(t, ctx, lc, "a", map[string]any{})
	waitFor(t, "the idle environment reaped", 5*time.Second, func() bool { return cloud.Server.Stats().Environments == 0 })
	mustInvoke(t, ctx, lc, "a", map[string]any{})
	if st := cloud.Server.Stats(); st.ColdStarts != 2 {
		t.Errorf("cold starts = %d, want 2 (reaped, then started again)", st.ColdStarts)
	}
}

func TestUpdateDrainsBusyEnvironment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1})
	lc := cloud.Lambda()
	mustCreate(t, ctx, lc, "a", zipOf(t, map[string]string{"app.py": echoPy}), 10, nil)
	type result struct {
		m   map[string]any
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("a"), Payload: []byte(`{"sleep": 1}`)})
		r := result{err: err}
		if err == nil {
			r.err = jsonUnmarshal(out.Payload, &r.m)
		}
		done <- r
	}()
	waitFor(t, "the invocation in flight", 10*time.Second, func() bool { return cloud.Server.Stats().InFlight == 1 })
	code2 := zipOf(t, map[string]string{"app.py": strings.Replace(echoPy, `"version": 1`, `"version": 2`, 1)})
	if _, err := lc.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("a"), ZipFile: code2}); err != nil {
		t.Fatalf("UpdateFunctionCode: %v", err)
	}
	r := <-done
	if r.err != nil || r.m["version"] != 1.0 {
		t.Errorf("the invocation in flight during the update: %v %v, want it finished on version 1", r.m, r.err)
	}
	waitFor(t, "the old environment stopped", 5*time.Second, func() bool { return cloud.Server.Stats().Environments == 0 })
	_, m := mustInvoke(t, ctx, lc, "a", map[string]any{})
	if m["version"] != 2.0 {
		t.Errorf("after the update: %v, want version 2", m)
	}
}

func TestEventInvocation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1})
	lc := cloud.Lambda()
	mustCreate(t, ctx, lc, "a", zipOf(t, map[string]string{"app.py": echoPy}), 10, nil)
	out, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("a"), InvocationType: types.InvocationTypeEvent, Payload: []byte(`{}`)})
	if err != nil || out.StatusCode != 202 {
		t.Fatalf("Event invoke: %v status %d, want 202", err, out.StatusCode)
	}
	waitFor(t, "the event run", 10*time.Second, func() bool {
		st := cloud.Server.Stats()
		return st.Invocations == 1 && st.InFlight == 0
	})
	out, err = lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("a"), InvocationType: types.InvocationTypeDryRun})
	if err != nil || out.StatusCode != 204 {
		t.Errorf("DryRun invoke: %v status %d, want 204", err, out.StatusCode)
	}
}
