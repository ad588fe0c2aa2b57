package localcloud_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/localcloud/localcloudtest"
)

const role = "arn:aws:iam::000000000000:role/spillway-test"

// zipOf builds a deployment package from file name → content.
func zipOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatalf("zip %s: %v", name, err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatalf("zip %s: %v", name, err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("close zip: %v", err)
	}
	return buf.Bytes()
}

const echoPy = `
import os, time
def handler(event, context):
    print("echo called", context.aws_request_id)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("raise"):
        raise ValueError(event["raise"])
    return {"event": event, "greeting": os.environ.get("GREETING", ""), "version": 1,
            "remaining": context.get_remaining_time_in_millis()}
`

// mustCreate creates a function and waits until it is Active.
func mustCreate(t *testing.T, ctx context.Context, lc *lambda.Client, name string, code []byte, timeout int32, vars map[string]string) *lambda.CreateFunctionOutput {
	t.Helper()
	in := &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Runtime:      types.RuntimePython312,
		Role:         aws.String(role),
		Handler:      aws.String("app.handler"),
		Code:         &types.FunctionCode{ZipFile: code},
		Timeout:      aws.Int32(timeout),
		MemorySize:   aws.Int32(256),
	}
	if vars != nil {
		in.Environment = &types.Environment{Variables: vars}
	}
	out, err := lc.CreateFunction(ctx, in)
	if err != nil {
		t.Fatalf("CreateFunction %s: %v", name, err)
	}
	w := lambda.NewFunctionActiveV2Waiter(lc, func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)}, 20*time.Second); err != nil {
		t.Fatalf("wait for %s to be Active: %v", name, err)
	}
	return out
}

func mustInvoke(t *testing.T, ctx context.Context, lc *lambda.Client, name string, payload any) (*lambda.InvokeOutput, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(payload)
	out, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), Payload: b, LogType: types.LogTypeTail})
	if err != nil {
		t.Fatalf("Invoke %s: %v", name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Payload, &m); err != nil {
		t.Fatalf("Invoke %s payload %q: %v", name, out.Payload, err)
	}
	return out, m
}

func TestLambdaLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cloud := localcloudtest.Start(t, localcloud.Config{})
	lc := cloud.Lambda()

	code1 := zipOf(t, map[string]string{"app.py": echoPy})
	created := mustCreate(t, ctx, lc, "echo", code1, 5, map[string]string{"GREETING": "hi"})
	if created.State != types.StatePending {
		t.Errorf("CreateFunction State = %q, want Pending", created.State)
	}
	if want := localcloud.CodeSha256(code1); aws.ToString(created.CodeSha256) != want {
		t.Errorf("CodeSha256 = %q, want %q", aws.ToString(created.CodeSha256), want)
	}
	if got := aws.ToString(created.FunctionArn); got != "arn:aws:lambda:us-east-1:000000000000:function:echo" {
		t.Errorf("FunctionArn = %q", got)
	}

	got, err := lc.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("echo")})
	if err != nil {
		t.Fatalf("GetFunction: %v", err)
	}
	cfg := got.Configuration
	if cfg.State != types.StateActive || cfg.LastUpdateStatus != types.LastUpdateStatusSuccessful ||
		aws.ToInt32(cfg.MemorySize) != 256 || aws.ToInt32(cfg.Timeout) != 5 || cfg.Environment.Variables["GREETING"] != "hi" {
		t.Errorf("GetFunction configuration = %+v", cfg)
	}

	_, err = lc.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("echo"), Runtime: types.RuntimePython312,
		Role: aws.String(role), Handler: aws.String("app.handler"), Code: &types.FunctionCode{ZipFile: code1}})
	var conflict *types.ResourceConflictException
	if !errors.As(err, &conflict) {
		t.Errorf("second CreateFunction error = %v, want ResourceConflictException", err)
	}

	// Cold, then warm.
	out, m := mustInvoke(t, ctx, lc, "echo", map[string]any{"x": 1})
	if out.FunctionError != nil || m["greeting"] != "hi" || m["event"].(map[string]any)["x"] != 1.0 {
		t.Errorf("first invoke: error %v payload %v", aws.ToString(out.FunctionError), m)
	}
	logs, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
	if !strings.Contains(string(logs), "echo called") || !strings.Contains(string(logs), "REPORT RequestId:") ||
		!strings.Contains(string(logs), "Init Duration") {
		t.Errorf("first invoke logs = %q", logs)
	}
	if strings.Contains(string(logs), "LOCALCLOUD_END") {
		t.Errorf("logs leak the bootstrap marker: %q", logs)
	}
	out, _ = mustInvoke(t, ctx, lc, "echo", map[string]any{"x": 2})
	logs, _ = base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
	if strings.Contains(string(logs), "Init Duration") || strings.Count(string(logs), "echo called") != 1 {
		t.Errorf("warm invoke logs = %q", logs)
	}
	if st := cloud.Server.Stats(); st.ColdStarts != 1 || st.Invocations != 2 || st.Environments != 1 {
		t.Errorf("after two invokes stats = %+v, want 1 cold start, 2 invocations, 1 environment", st)
	}

	// Update the code: new CodeSha256, InProgress, then Successful and the new code runs.
	code2 := zipOf(t, map[string]string{"app.py": strings.Replace(echoPy, `"version": 1`, `"version": 2`, 1)})
	upd, err := lc.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("echo"), ZipFile: code2})
	if err != nil {
		t.Fatalf("UpdateFunctionCode: %v", err)
	}
	if aws.ToString(upd.CodeSha256) == aws.ToString(created.CodeSha256) || upd.LastUpdateStatus != types.LastUpdateStatusInProgress {
		t.Errorf("UpdateFunctionCode: sha %q (was %q), status %q", aws.ToString(upd.CodeSha256), aws.ToString(created.CodeSha256), upd.LastUpdateStatus)
	}
	_, err = lc.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("echo"), Timeout: aws.Int32(7)})
	if !errors.As(err, &conflict) {
		t.Errorf("UpdateFunctionConfiguration during an update: %v, want ResourceConflictException", err)
	}
	waitUpdated(t, ctx, lc, "echo")
	_, m = mustInvoke(t, ctx, lc, "echo", map[string]any{})
	if m["version"] != 2.0 {
		t.Errorf("after update the function returned %v, want version 2", m)
	}

	cfgOut, err := lc.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("echo"),
		Timeout: aws.Int32(7), Environment: &types.Environment{Variables: map[string]string{"GREETING": "hello"}}})
	if err != nil {
		t.Fatalf("UpdateFunctionConfiguration: %v", err)
	}
	if aws.ToInt32(cfgOut.Timeout) != 7 {
		t.Errorf("Timeout after update = %d", aws.ToInt32(cfgOut.Timeout))
	}
	waitUpdated(t, ctx, lc, "echo")
	_, m = mustInvoke(t, ctx, lc, "echo", map[string]any{})
	if m["greeting"] != "hello" || m["remaining"].(float64) <= 5000 {
		t.Errorf("after configuration update the function returned %v", m)
	}
	if st := cloud.Server.Stats(); st.ColdStarts != 3 || st.Environments != 1 {
		t.Errorf("after two updates stats = %+v, want 3 cold starts and the old environments retired", st)
	}

	_, err = lc.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String("echo"), StatementId: aws.String("apigw"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("apigateway.amazonaws.com"),
		SourceArn: aws.String("arn:aws:execute-api:us-east-1:000000000000:abc/*/*/*")})
	if err != nil {
		t.Fatalf("AddPermission: %v", err)
	}
	_, err = lc.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String("echo"), StatementId: aws.String("apigw"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("apigateway.amazonaws.com")})
	if !errors.As(err, &conflict) {
		t.Errorf("duplicate AddPermission: %v, want ResourceConflictException", err)
	}

	if _, err := lc.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("echo")}); err != nil {
		t.Fatalf("DeleteFunction: %v", err)
	}
	_, err = lc.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("echo")})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("GetFunction after delete: %v, want ResourceNotFoundException", err)
	}
	if st := cloud.Server.Stats(); st.Environments != 0 {
		t.Errorf("environments after delete = %d", st.Environments)
	}
}

func waitUpdated(t *testing.T, ctx context.Context, lc *lambda.Client, name string) {
	t.Helper()
	w := lambda.NewFunctionUpdatedV2Waiter(lc, func(o *lambda.FunctionUpdatedV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)}, 20*time.Second); err != nil {
		t.Fatalf("wait for %s update: %v", name, err)
	}
}

func TestInvokeErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1})
	lc := cloud.Lambda()
	mustCreate(t, ctx, lc, "echo", zipOf(t, map[string]string{"app.py": echoPy}), 1, nil)
	mustCreate(t, ctx, lc, "broken", zipOf(t, map[string]string{"app.py": "import nosuchmodule\n"}), 3, nil)
	mustCreate(t, ctx, lc, "exits", zipOf(t, map[string]string{"app.py": "import sys\ndef handler(e, c):\n    sys.exit(3)\n"}), 3, nil)

	tests := []struct {
		name      string
		function  string
		payload   any
		wantType  string
		wantInMsg string
	}{
		{"raises", "echo", map[string]any{"raise": "boom"}, "ValueError", "boom"},
		{"timeout", "echo", map[string]any{"sleep": 3}, "Sandbox.Timedout", "Task timed out after 1.00 seconds"},
		{"import error", "broken", map[string]any{}, "Runtime.ImportModuleError", "No module named 'nosuchmodule'"},
		{"exit", "exits", map[string]any{}, "Runtime.ExitError", "Runtime exited with error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			out, m := mustInvoke(t, ctx, lc, tt.function, tt.payload)
			if aws.ToString(out.FunctionError) != "Unhandled" {
				t.Errorf("FunctionError = %q, want Unhandled", aws.ToString(out.FunctionError))
			}
			if m["errorType"] != tt.wantType || !strings.Contains(m["errorMessage"].(string), tt.wantInMsg) {
				t.Errorf("payload = %v, want errorType %s and message containing %q", m, tt.wantType, tt.wantInMsg)
			}
			if tt.name == "timeout" && time.Since(start) > 2500*time.Millisecond {
				t.Errorf("timeout took %v, want about 1s", time.Since(start))
			}
		})
	}
	// After a timeout and an error the function still answers.
	out, m := mustInvoke(t, ctx, lc, "echo", map[string]any{"ok": true})
	if out.FunctionError != nil || m["event"] == nil {
		t.Errorf("after errors: %v %v", aws.ToString(out.FunctionError), m)
	}
	if st := cloud.Server.Stats(); st.Timeouts != 1 {
		t.Errorf("timeouts = %d, want 1", st.Timeouts)
	}

	_, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte("{not json")})
	var bad *types.InvalidRequestContentException
	if !errors.As(err, &bad) {
		t.Errorf("invalid JSON payload: %v, want InvalidRequestContentException", err)
	}
	_, err = lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("nope")})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("missing function: %v, want ResourceNotFoundException", err)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const limit, burst = 3, 8
	cloud := localcloudtest.Start(t, localcloud.Config{Concurrency: limit, TransitionDelay: -1})
	lc := cloud.Lambda(localcloudtest.NoRetries)
	mustCreate(t, ctx, lc, "slow", zipOf(t, map[string]string{"app.py": echoPy}), 10, nil)

	burstOf := func(n int) (ok, throttled int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := lc.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("slow"), Payload: []byte(`{"sleep": 1.5}`)})
				var tm *types.TooManyRequestsException
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.As(err, &tm):
					throttled++
				default:
					t.Errorf("invoke: %v", err)
				}
			}()
		}
		wg.Wait()
		return ok, throttled
	}
	ok, throttled := burstOf(burst)
	if ok != limit || throttled != burst-limit {
		t.Errorf("burst of %d with limit %d: %d ok, %d throttled; want %d and %d", burst, limit, ok, throttled, limit, burst-limit)
	}
	// The second burst reuses the warm environments: no new cold starts.
	ok, _ = burstOf(limit)
	if ok != limit {
		t.Errorf("second burst: %d ok, want %d", ok, limit)
	}
	if st := cloud.Server.Stats(); st.ColdStarts != limit {
		t.Errorf("cold starts = %d, want %d (warm reuse)", st.ColdStarts, limit)
	}

	// Reserved concurrency caps one function.
	if _, err := lc.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("slow"),
		ReservedConcurrentExecutions: aws.Int32(1)}); err != nil {
		t.Fatalf("PutFunctionConcurrency: %v", err)
	}
	ok, throttled = burstOf(3)
	if ok != 1 || throttled != 2 {
		t.Errorf("reserved concurrency 1: %d ok, %d throttled", ok, throttled)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
