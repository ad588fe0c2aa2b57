package localcloud_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/localcloud/localcloudtest"
	"github.com/spillway-faas/spillway/internal/testutil"
)

const noopPy = "def handler(event, context):\n    return None\n"

func benchCreate(b *testing.B, ctx context.Context, lc *lambda.Client, name string, zip []byte, handler string) {
	b.Helper()
	if _, err := lc.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(name), Runtime: types.RuntimePython312,
		Role: aws.String(role), Handler: aws.String(handler), Code: &types.FunctionCode{ZipFile: zip}, Timeout: aws.Int32(10)}); err != nil {
		b.Fatalf("CreateFunction: %v", err)
	}
}

// benchModes are the isolation modes the invoke benchmarks compare.
var benchModes = []localcloud.Isolation{localcloud.IsolationContainer, localcloud.IsolationUnsafeProcess}

// benchCloud starts localcloud in mode; container mode runs the worker image.
func benchCloud(b *testing.B, mode localcloud.Isolation) *localcloudtest.Cloud {
	b.Helper()
	cfg := localcloud.Config{TransitionDelay: -1, Isolation: mode}
	if mode == localcloud.IsolationContainer {
		cfg.Image = testutil.Image("worker")
		testutil.DockerImage(b, cfg.Image)
		cfg.Instance = fmt.Sprintf("lcbench-%d", time.Now().UnixNano())
	}
	return localcloudtest.Start(b, cfg)
}

// BenchmarkInvokeWarm is one SDK Invoke of a no-op function on a warm
// environment: HTTP, scheduling, the Runtime API round trip (over a
// container's stdio, or loopback TCP) and Python.
func BenchmarkInvokeWarm(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(string(mode), func(b *testing.B) { benchInvokeWarm(b, mode) })
	}
}

func benchInvokeWarm(b *testing.B, mode localcloud.Isolation) {
	ctx := context.Background()
	cloud := benchCloud(b, mode)
	lc := cloud.Lambda()
	benchCreate(b, ctx, lc, "noop", zipOf(b, map[string]string{"app.py": noopPy}), "app.handler")
	if _, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("noop")}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("noop"), Payload: []byte(`{"parameter": 1}`)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInvokeCold is an Invoke that must start a new environment (the
// configuration changes before each call, which retires the warm one): a
// container created, the code copied in, started; or a process.
func BenchmarkInvokeCold(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(string(mode), func(b *testing.B) { benchInvokeCold(b, mode) })
	}
}

func benchInvokeCold(b *testing.B, mode localcloud.Isolation) {
	ctx := context.Background()
	cloud := benchCloud(b, mode)
	lc := cloud.Lambda()
	benchCreate(b, ctx, lc, "noop", zipOf(b, map[string]string{"app.py": noopPy}), "app.handler")
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		if _, err := lc.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("noop"),
			Environment: &types.Environment{Variables: map[string]string{"N": strconv.Itoa(i)}}}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("noop"), Payload: []byte(`{}`)}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st := cloud.Server.Stats(); st.ColdStarts < int64(i) {
		b.Errorf("cold starts %d < iterations %d", st.ColdStarts, i)
	}
}

// BenchmarkExecuteAPIWarm is the offload path: POST through execute-api
// (key check, AWS integration) to the shim-wrapped no-op function.
func BenchmarkExecuteAPIWarm(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cloud := localcloudtest.Start(b, localcloud.Config{TransitionDelay: -1})
	fn := spillway.Function{Name: "noop", Style: spillway.StyleHandler, Code: noopPy}
	benchCreate(b, ctx, cloud.Lambda(), "noop", mustBuildZip(b, fn), "handler.handler")
	fx := deployAPI(b, ctx, cloud, "noop", nil)
	url := cloud.URL + "/_aws/execute-api/" + fx.apiID + "/dev/invoke"
	if status, body := post(b, ctx, url, "", fx.key, `{"parameter": 1}`); status != 200 {
		b.Fatalf("warm-up: %d %s", status, body)
	}
	for b.Loop() {
		if status, body := post(b, ctx, url, "", fx.key, `{"parameter": 1}`); status != 200 {
			b.Fatalf("%d %s", status, body)
		}
	}
}
