package main_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/testutil"
)

// awsCLI is Debian's AWS CLI (package awscli). Another aws (a pyenv shim)
// may come first on PATH, so the Debian path is preferred.
func awsCLI(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/aws"); err == nil {
		return "/usr/bin/aws"
	}
	testutil.Require(t, false, "the AWS CLI from Debian's awscli package (/usr/bin/aws)")
	return ""
}

// startLocalcloud runs the built binary on a free port until the test ends.
func startLocalcloud(t *testing.T) (url string, cmd *exec.Cmd) {
	t.Helper()
	bin := testutil.BuildBinary(t, "localcloud")
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd = exec.Command(bin, "--listen", addr)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"LOCALCLOUD_PYTHON=" + testutil.Python(t),
		"LOCALCLOUD_ISOLATION=unsafe-process",
		"LOCALCLOUD_IMAGE=" + testutil.Image("worker"),
		"LOCALCLOUD_CONCURRENCY=4",
		"LOCALCLOUD_DIR=" + t.TempDir(),
		"LOG_LEVEL=warn",
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start localcloud: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("localcloud stderr:\n%s", stderr.String())
		}
	})
	url = "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("localcloud did not answer /health within 15s: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runAWS runs the CLI against url with dummy credentials and decodes its
// JSON output into out (when non-nil).
func runAWS(t *testing.T, ctx context.Context, cli, url string, out any, args ...string) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, cli, append([]string{"--endpoint-url", url, "--output", "json"}, args...)...)
	cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + home,
		"AWS_ACCESS_KEY_ID=AKIDLOCALCLOUD",
		"AWS_SECRET_ACCESS_KEY=localcloud-secret",
		"AWS_DEFAULT_REGION=us-east-1",
		"AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
		"AWS_PAGER=",
		"AWS_EC2_METADATA_DISABLED=true",
	}
	cmd.Dir = home
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("aws %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			t.Fatalf("aws %s: output is not JSON (%v): %s", strings.Join(args, " "), err, stdout.String())
		}
	}
}

func writeZip(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fn.zip")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAWSCLI drives the localcloud binary with the AWS CLI, a client no one
// here wrote, and checks that what it prints parses.
func TestAWSCLI(t *testing.T) {
	cli := awsCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	url, cmd := startLocalcloud(t)

	zipPath := writeZip(t, map[string]string{"app.py": "def handler(event, context):\n    return {'got': event, 'fn': context.function_name}\n"})
	var created struct {
		FunctionName, FunctionArn, CodeSha256, State string
	}
	runAWS(t, ctx, cli, url, &created, "lambda", "create-function", "--function-name", "cli-echo",
		"--runtime", "python3.12", "--role", "arn:aws:iam::000000000000:role/x", "--handler", "app.handler",
		"--zip-file", "fileb://"+zipPath, "--timeout", "5")
	if created.FunctionName != "cli-echo" || created.State != "Pending" || created.CodeSha256 == "" {
		t.Errorf("create-function printed %+v", created)
	}
	runAWS(t, ctx, cli, url, nil, "lambda", "wait", "function-active-v2", "--function-name", "cli-echo")

	var got struct {
		Configuration struct {
			FunctionName, State, LastUpdateStatus, CodeSha256, Handler string
			Timeout                                                    int
		}
		Code struct{ RepositoryType string }
	}
	runAWS(t, ctx, cli, url, &got, "lambda", "get-function", "--function-name", "cli-echo")
	if c := got.Configuration; c.FunctionName != "cli-echo" || c.State != "Active" || c.LastUpdateStatus != "Successful" ||
		c.CodeSha256 != created.CodeSha256 || c.Timeout != 5 || c.Handler != "app.handler" {
		t.Errorf("get-function printed %+v", got)
	}

	outFile := filepath.Join(t.TempDir(), "out.json")
	var inv struct {
		StatusCode      int
		ExecutedVersion string
		FunctionError   string
		LogResult       string
	}
	runAWS(t, ctx, cli, url, &inv, "lambda", "invoke", "--function-name", "cli-echo",
		"--cli-binary-format", "raw-in-base64-out", "--payload", `{"parameter": "30"}`, "--log-type", "Tail", outFile)
	if inv.StatusCode != 200 || inv.ExecutedVersion != "$LATEST" || inv.FunctionError != "" || inv.LogResult == "" {
		t.Errorf("invoke printed %+v", inv)
	}
	payload, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatalf("read invoke output: %v", err)
	}
	var result map[string]any
	if err := json.Unmarshal(payload, &result); err != nil || result["fn"] != "cli-echo" ||
		result["got"].(map[string]any)["parameter"] != "30" {
		t.Errorf("invoke payload = %s (%v)", payload, err)
	}

	var api struct{ ID, Name string }
	var apiRaw map[string]any
	runAWS(t, ctx, cli, url, &apiRaw, "apigateway", "create-rest-api", "--name", "cli-api")
	api.ID, _ = apiRaw["id"].(string)
	api.Name, _ = apiRaw["name"].(string)
	if api.ID == "" || api.Name != "cli-api" {
		t.Errorf("create-rest-api printed %v", apiRaw)
	}
	var apis struct {
		Items []struct {
			ID          string `json:"id"`
			Name        string `json:"name"`
			CreatedDate string `json:"createdDate"`
		} `json:"items"`
	}
	runAWS(t, ctx, cli, url, &apis, "apigateway", "get-rest-apis")
	if len(apis.Items) != 1 || apis.Items[0].ID != api.ID || apis.Items[0].CreatedDate == "" {
		t.Errorf("get-rest-apis printed %+v", apis)
	}

	// SIGTERM: a graceful exit with status 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal localcloud: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("localcloud exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("localcloud did not exit within 15s of SIGTERM")
	}
}

// TestBoto3ReferenceDeployment replays the reference system's deployment
// with boto3 (Debian's python3-boto3): create_rest_api … put_integration
// (type AWS, credentials=ROLE, no AddPermission) … create_deployment, then a
// POST to the stage answers 200 with the function's result.
func TestBoto3ReferenceDeployment(t *testing.T) {
	python := "/usr/bin/python3"
	testutil.Require(t, exec.Command(python, "-c", "import boto3").Run() == nil,
		"boto3 for /usr/bin/python3 (Debian's python3-boto3)")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	url, _ := startLocalcloud(t)
	zipPath := writeZip(t, map[string]string{"app.py": "def handler(event, context):\n    return {'double': event['n'] * 2}\n"})

	home := t.TempDir()
	cmd := exec.CommandContext(ctx, python, "testdata/reference_deploy.py", url, zipPath)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"), "AWS_EC2_METADATA_DISABLED=true"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("reference_deploy.py: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var got struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("reference_deploy.py printed %q: %v", stdout.String(), err)
	}
	if got.Status != http.StatusOK || strings.ReplaceAll(got.Body, " ", "") != `{"double":42}` {
		t.Errorf("POST to the stage: %d %s, want 200 {\"double\": 42}", got.Status, got.Body)
	}
}
