package cloud_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigateway"
	agtypes "github.com/aws/aws-sdk-go-v2/service/apigateway/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// Functions the tests deploy.
var (
	scriptFn = spillway.Function{Name: "fib", Style: spillway.StyleScript, Code: `import sys

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

if len(sys.argv) < 2 or not sys.argv[1].lstrip("-").isdigit():
    print("usage: function.py N")
else:
    n = int(sys.argv[1])
    print("fib(%d) = %d" % (n, fib(n)))
`}
	handlerFn = spillway.Function{Name: "echo", Style: spillway.StyleHandler, Code: `import time

def handler(event, context):
    p = event["parameter"]
    if isinstance(p, dict):
        if "sleep" in p:
            time.sleep(p["sleep"])
        if p.get("raise"):
            raise ValueError(p["raise"])
    return {"echo": p, "n": 42, "pi": 3.5}
`}
	noopFn = spillway.Function{Name: "noop", Style: spillway.StyleHandler, Code: "def handler(event, context):\n    return None\n"}
)

// cloudEnv is localcloud served by httptest plus the SDK clients a test uses
// to look at its state.
type cloudEnv struct {
	srv    *localcloud.Server
	hs     *httptest.Server
	url    string
	awsCfg aws.Config
	lambda *lambda.Client
	apigw  *apigateway.Client
}

func startLocalcloud(t testing.TB, lc localcloud.Config) *cloudEnv {
	t.Helper()
	lc.Python = testutil.Python(t)
	if lc.Image == "" {
		lc.Image = testutil.Image("worker") // the image make images built (IMAGE_TAG)
	}
	lc.Logger = slog.New(slog.DiscardHandler)
	if lc.TransitionDelay == 0 {
		lc.TransitionDelay = 50 * time.Millisecond
	}
	srv, err := localcloud.New(lc)
	if err != nil {
		t.Fatalf("localcloud.New: %v", err)
	}
	hs := httptest.NewServer(srv)
	env := newCloudEnv(t, srv, hs, hs.URL)
	t.Cleanup(func() {
		env.hs.Close() // the current server: a test may have restarted it
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close localcloud: %v", err)
		}
	})
	return env
}

func newCloudEnv(t testing.TB, srv *localcloud.Server, hs *httptest.Server, url string) *cloudEnv {
	t.Helper()
	ac, err := cloud.LoadAWSConfig(context.Background(), testConfig(url, "x"))
	if err != nil {
		t.Fatalf("LoadAWSConfig: %v", err)
	}
	return &cloudEnv{srv: srv, hs: hs, url: url, awsCfg: ac, lambda: lambda.NewFromConfig(ac), apigw: apigateway.NewFromConfig(ac)}
}

// testConfig is lb's cloud configuration for function against the
// localcloud at endpoint (internal/config's defaults), with short waits.
func testConfig(endpoint, function string) cloud.Config {
	lc, err := config.Load(func(k string) (string, bool) {
		v, ok := map[string]string{"FAAS_FUNCTION_NAME": function, "CLOUD": "local", "AWS_ENDPOINT_URL": endpoint}[k]
		return v, ok
	})
	if err != nil {
		panic(err)
	}
	c := lc.CloudConfig()
	c.Endpoint = endpoint
	c.Timeout = 2 * time.Second
	c.MemoryMB = 256
	c.WaitTimeout = 20 * time.Second
	c.BackoffBase = 20 * time.Millisecond
	c.BackoffMax = 200 * time.Millisecond
	return c
}

func deploy(t testing.TB, env *cloudEnv, cfg cloud.Config, fn spillway.Function) cloud.Endpoint {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ep, err := cloud.NewDeployer(env.awsCfg, cfg, nil).Deploy(ctx, fn)
	if err != nil {
		t.Fatalf("Deploy %s: %v", fn.Name, err)
	}
	return ep
}

func offloader(t testing.TB, env *cloudEnv, cfg cloud.Config, ep cloud.Endpoint) *cloud.Offloader {
	t.Helper()
	o := cloud.NewOffloader(env.awsCfg, cfg, nil)
	o.SetEndpoint(ep)
	t.Cleanup(o.Close)
	return o
}

func invoke(t testing.TB, o *cloud.Offloader, param any) spillway.CloudResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := o.Invoke(ctx, spillway.CloudCall{Param: param})
	if err != nil {
		t.Fatalf("Invoke(%v): %v", param, err)
	}
	return res
}

// counts is what the control planes hold, to prove a deploy created nothing.
type counts struct {
	apis, resources, keys, plans int
	sha, lastModified            string
}

func (e *cloudEnv) counts(t *testing.T, cfg cloud.Config) counts {
	t.Helper()
	ctx := context.Background()
	var c counts
	apis, err := e.apigw.GetRestApis(ctx, &apigateway.GetRestApisInput{})
	if err != nil {
		t.Fatalf("GetRestApis: %v", err)
	}
	for _, a := range apis.Items {
		if aws.ToString(a.Name) != cfg.APIName {
			continue
		}
		c.apis++
		res, err := e.apigw.GetResources(ctx, &apigateway.GetResourcesInput{RestApiId: a.Id})
		if err != nil {
			t.Fatalf("GetResources: %v", err)
		}
		c.resources += len(res.Items)
	}
	keys, err := e.apigw.GetApiKeys(ctx, &apigateway.GetApiKeysInput{})
	if err != nil {
		t.Fatalf("GetApiKeys: %v", err)
	}
	c.keys = len(keys.Items)
	plans, err := e.apigw.GetUsagePlans(ctx, &apigateway.GetUsagePlansInput{})
	if err != nil {
		t.Fatalf("GetUsagePlans: %v", err)
	}
	c.plans = len(plans.Items)
	fn, err := e.lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(cfg.LambdaName)})
	if err != nil {
		t.Fatalf("GetFunction: %v", err)
	}
	c.sha, c.lastModified = aws.ToString(fn.Configuration.CodeSha256), aws.ToString(fn.Configuration.LastModified)
	return c
}

func TestDeployIsIdempotent(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "fib")

	first := deploy(t, env, cfg, scriptFn)
	for _, want := range []string{"create-function", "create-rest-api", "create-resource", "create-deployment",
		"add-permission", "create-api-key", "create-usage-plan", "create-usage-plan-key"} {
		if !slices.Contains(first.Changes, want) {
			t.Errorf("first deploy changes %v lack %q", first.Changes, want)
		}
	}
	wantURL := fmt.Sprintf("%s/_aws/execute-api/%s/dev/invoke", env.url, first.APIID)
	if first.InvokeURL != wantURL || first.APIKey == "" || first.FunctionARN == "" {
		t.Fatalf("endpoint %+v, want URL %s and a key", first, wantURL)
	}
	before := env.counts(t, cfg)

	second := deploy(t, env, cfg, scriptFn)
	if len(second.Changes) != 0 {
		t.Errorf("unchanged deploy changed %v", second.Changes)
	}
	if after := env.counts(t, cfg); after != before {
		t.Errorf("unchanged deploy: state %+v, was %+v", after, before)
	}
	if second.InvokeURL != first.InvokeURL || second.APIKey != first.APIKey || second.CodeSHA256 != first.CodeSHA256 {
		t.Errorf("unchanged deploy endpoint %+v, was %+v", second, first)
	}

	o := offloader(t, env, cfg, second)
	if got := invoke(t, o, "10").Value; got != "fib(10) = 55\n" {
		t.Fatalf("result %q", got)
	}

	changed := scriptFn
	changed.Code = strings.Replace(changed.Code, `"fib(%d) = %d"`, `"F(%d)=%d"`, 1)
	third := deploy(t, env, cfg, changed)
	if !slices.Equal(third.Changes, []string{"update-code"}) {
		t.Errorf("changed code: changes %v, want [update-code]", third.Changes)
	}
	after := env.counts(t, cfg)
	if after.sha == before.sha || after.sha != third.CodeSHA256 || after.apis != 1 || after.keys != before.keys || after.plans != before.plans {
		t.Errorf("changed code: state %+v, was %+v", after, before)
	}
	res := invoke(t, o, "10")
	if res.Value != "F(10)=55\n" || !res.ColdStart {
		t.Fatalf("after update: %+v, want the new code on a cold start", res)
	}

	cfg.MemoryMB = 512
	fourth := deploy(t, env, cfg, changed)
	if !slices.Equal(fourth.Changes, []string{"update-configuration"}) {
		t.Errorf("changed memory: changes %v, want [update-configuration]", fourth.Changes)
	}
}

func TestOffloadRunsBothStyles(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	scriptCfg, handlerCfg := testConfig(env.url, "fib"), testConfig(env.url, "echo")
	scriptEp, handlerEp := deploy(t, env, scriptCfg, scriptFn), deploy(t, env, handlerCfg, handlerFn)

	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		t.Run(string(via), func(t *testing.T) {
			scriptCfg.OffloadVia, handlerCfg.OffloadVia = via, via
			so, ho := offloader(t, env, scriptCfg, scriptEp), offloader(t, env, handlerCfg, handlerEp)
			tests := []struct {
				name  string
				o     *cloud.Offloader
				param any
				want  any
			}{
				{"script", so, "20", "fib(20) = 6765\n"},
				{"script usage line", so, "x", "usage: function.py N\n"},
				{"handler string", ho, "hi", map[string]any{"echo": "hi", "n": int64(42), "pi": 3.5}},
				{"handler int", ho, 7, map[string]any{"echo": int64(7), "n": int64(42), "pi": 3.5}},
				{"handler struct", ho, map[string]any{"a": []any{1, "b"}}, map[string]any{"echo": map[string]any{"a": []any{int64(1), "b"}}, "n": int64(42), "pi": 3.5}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					res := invoke(t, tt.o, tt.param)
					if fmt.Sprintf("%#v", res.Value) != fmt.Sprintf("%#v", tt.want) {
						t.Fatalf("result\n got %#v\nwant %#v", res.Value, tt.want)
					}
					if res.Attempts != 1 || res.Latency <= 0 {
						t.Errorf("attempts %d latency %s", res.Attempts, res.Latency)
					}
				})
			}
			if st := ho.Stats(); st.Succeeded != 3 || st.Breaker != cloud.BreakerClosed {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestOffloadColdStart(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "noop")
	o := offloader(t, env, cfg, deploy(t, env, cfg, noopFn))
	if r := invoke(t, o, nil); !r.ColdStart || r.Value != nil {
		t.Fatalf("first call %+v, want a cold start returning nil", r)
	}
	if r := invoke(t, o, nil); r.ColdStart {
		t.Fatalf("second call %+v, want warm", r)
	}
}

func TestOffloadErrors(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "echo")
	cfg.Timeout = time.Second
	ep := deploy(t, env, cfg, handlerFn)

	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		t.Run(string(via), func(t *testing.T) {
			cfg.OffloadVia = via
			o := offloader(t, env, cfg, ep)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			t.Run("exception", func(t *testing.T) {
				res, err := o.Invoke(ctx, spillway.CloudCall{Param: map[string]any{"raise": "bad input"}})
				var fe *spillway.FunctionError
				if !errors.As(err, &fe) || fe.Type != "ValueError" || fe.Message != "bad input" {
					t.Fatalf("error %v, want ValueError: bad input", err)
				}
				if res.Attempts != 1 {
					t.Errorf("a function error was retried: %d attempts", res.Attempts)
				}
			})
			t.Run("Lambda timeout", func(t *testing.T) {
				res, err := o.Invoke(ctx, spillway.CloudCall{Param: map[string]any{"sleep": 3}})
				if !errors.Is(err, spillway.ErrTimeout) {
					t.Fatalf("error %v, want ErrTimeout", err)
				}
				if res.Attempts != 1 {
					t.Errorf("a timeout was retried: %d attempts", res.Attempts)
				}
			})
			t.Run("caller deadline", func(t *testing.T) {
				short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				start := time.Now()
				_, err := o.Invoke(short, spillway.CloudCall{Param: map[string]any{"sleep": 0.9}})
				if !errors.Is(err, spillway.ErrTimeout) || !strings.Contains(err.Error(), "before the deadline") || time.Since(start) > 850*time.Millisecond {
					t.Fatalf("error %v after %s, want ErrTimeout at the caller's deadline", err, time.Since(start))
				}
			})
			t.Run("default deadline without one from the caller", func(t *testing.T) {
				c := cfg
				c.CallTimeout = 300 * time.Millisecond
				o := offloader(t, env, c, ep)
				_, err := o.Invoke(context.Background(), spillway.CloudCall{Param: map[string]any{"sleep": 0.9}})
				if !errors.Is(err, spillway.ErrTimeout) || !strings.Contains(err.Error(), "before the deadline") {
					t.Fatalf("error %v, want ErrTimeout at CallTimeout", err)
				}
			})
			if st := o.State(); st != cloud.BreakerClosed {
				t.Errorf("function errors and timeouts moved the breaker to %s", st)
			}
		})
	}

	t.Run("without the key", func(t *testing.T) {
		cfg.OffloadVia = cloud.ViaAPIGateway
		for _, key := range []string{"", "not-the-key"} {
			bad := ep
			bad.APIKey = key
			o := offloader(t, env, cfg, bad)
			res, err := o.Invoke(context.Background(), spillway.CloudCall{Param: "x"})
			if !errors.Is(err, spillway.ErrCloudUnavailable) || !strings.Contains(err.Error(), "API key rejected") {
				t.Fatalf("key %q: error %v, want ErrCloudUnavailable: API key rejected", key, err)
			}
			if res.Attempts != 1 {
				t.Errorf("a 403 was retried: %d attempts", res.Attempts)
			}
		}
		// The raw answer is AWS's.
		resp, err := http.Post(ep.InvokeURL, "application/json", strings.NewReader(`{"parameter":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST without key: %d, want 403", resp.StatusCode)
		}
	})
}

func TestOffloadThrottledBurst(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{Concurrency: 2})
	cfg := testConfig(env.url, "echo")
	ep := deploy(t, env, cfg, handlerFn)

	burst := func(t *testing.T, cfg cloud.Config, n int) (ok int, errs []error, st cloud.Stats) {
		o := offloader(t, env, cfg, ep)
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for range n {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				_, err := o.Invoke(ctx, spillway.CloudCall{Param: map[string]any{"sleep": 0.2}})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else {
					ok++
				}
			})
		}
		wg.Wait()
		return ok, errs, o.Stats()
	}

	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		t.Run(string(via)+"/no retries: clear error", func(t *testing.T) {
			c := cfg
			c.OffloadVia, c.MaxAttempts = via, 1
			ok, errs, st := burst(t, c, 8)
			if len(errs) == 0 || ok == 0 {
				t.Fatalf("burst of 8 against concurrency 2: %d ok, errors %v", ok, errs)
			}
			for _, err := range errs {
				if !errors.Is(err, spillway.ErrCloudUnavailable) {
					t.Errorf("error %v, want ErrCloudUnavailable", err)
				}
			}
			if st.Throttled == 0 {
				t.Errorf("no 429 counted: %+v (errors %v)", st, errs)
			}
			if st.Breaker != cloud.BreakerClosed {
				t.Errorf("throttling opened the breaker: %+v", st)
			}
		})
		t.Run(string(via)+"/retries: all succeed", func(t *testing.T) {
			c := cfg
			c.OffloadVia, c.MaxAttempts, c.BackoffBase, c.BackoffMax = via, 12, 50*time.Millisecond, 400*time.Millisecond
			ok, errs, st := burst(t, c, 8)
			if ok != 8 {
				t.Fatalf("%d ok, errors %v", ok, errs)
			}
			if st.Retries == 0 || st.Throttled == 0 {
				t.Errorf("no retry was needed: %+v", st)
			}
		})
	}
}

// TestOffloadUsagePlanThrottle: the usage plan's rate limit answers 429,
// which the offloader retries within the caller's deadline.
func TestOffloadUsagePlanThrottle(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "noop")
	cfg.ThrottleRPS, cfg.ThrottleBurst = 2, 1
	ep := deploy(t, env, cfg, noopFn)

	once := cfg
	once.MaxAttempts = 1
	o := offloader(t, env, once, ep)
	var throttled error
	for range 4 {
		if _, err := o.Invoke(context.Background(), spillway.CloudCall{Param: nil}); err != nil {
			throttled = err
		}
	}
	if throttled == nil || !strings.Contains(throttled.Error(), "429") || !errors.Is(throttled, spillway.ErrCloudUnavailable) {
		t.Fatalf("4 quick calls against 2 rps burst 1: last error %v, want a 429", throttled)
	}

	retry := cfg
	retry.MaxAttempts, retry.BackoffBase, retry.BackoffMax = 10, 100*time.Millisecond, 600*time.Millisecond
	o = offloader(t, env, retry, ep)
	for i := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := o.Invoke(ctx, spillway.CloudCall{Param: nil})
		cancel()
		if err != nil {
			t.Fatalf("call %d with retries: %v", i, err)
		}
	}
	if st := o.Stats(); st.Throttled == 0 || st.Breaker != cloud.BreakerClosed {
		t.Errorf("stats %+v, want some 429s and a closed breaker", st)
	}
}

func TestBreakerAgainstStoppedCloud(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "noop")
	cfg.BreakerThreshold, cfg.BreakerCooldown = 3, 300*time.Millisecond
	ep := deploy(t, env, cfg, noopFn)
	addr := env.hs.Listener.Addr().String()

	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		t.Run(string(via), func(t *testing.T) {
			c := cfg
			c.OffloadVia = via
			o := offloader(t, env, c, ep)
			invoke(t, o, nil)

			stopped := stopServer(t, env)
			for i := range c.BreakerThreshold {
				_, err := o.Invoke(context.Background(), spillway.CloudCall{Param: nil})
				if !errors.Is(err, spillway.ErrCloudUnavailable) || !strings.Contains(err.Error(), "cannot reach") {
					t.Fatalf("call %d against a stopped cloud: %v", i, err)
				}
			}
			if o.State() != cloud.BreakerOpen || o.Ready() {
				t.Fatalf("breaker %s ready %v after %d failures, want open", o.State(), o.Ready(), c.BreakerThreshold)
			}
			start := time.Now()
			_, err := o.Invoke(context.Background(), spillway.CloudCall{Param: nil})
			if took := time.Since(start); took > 50*time.Millisecond {
				t.Errorf("open breaker took %s to answer, want < 50ms", took)
			}
			if !errors.Is(err, spillway.ErrCloudUnavailable) || !strings.Contains(err.Error(), "circuit breaker open") {
				t.Fatalf("open breaker: %v", err)
			}

			// The cloud comes back; after the cool-down one probe closes the breaker.
			restartServer(t, env, stopped, addr)
			time.Sleep(c.BreakerCooldown)
			if o.State() != cloud.BreakerHalfOpen || !o.Ready() {
				t.Fatalf("after cool-down: %s, want half-open", o.State())
			}
			invoke(t, o, nil)
			if o.State() != cloud.BreakerClosed {
				t.Fatalf("after a good probe: %s, want closed", o.State())
			}
		})
	}
}

// stopServer closes localcloud's listener (the emulator itself keeps its state).
func stopServer(t *testing.T, env *cloudEnv) *httptest.Server {
	t.Helper()
	env.hs.CloseClientConnections()
	env.hs.Close()
	return env.hs
}

// restartServer serves env's localcloud again on the same address.
func restartServer(t *testing.T, env *cloudEnv, _ *httptest.Server, addr string) {
	t.Helper()
	var l net.Listener
	var err error
	for range 50 {
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	hs := &httptest.Server{Listener: l, Config: &http.Server{Handler: env.srv}}
	hs.Start()
	env.hs = hs
}

func TestCloudOff(t *testing.T) {
	cfg := cloud.Config{Mode: cloud.ModeOff}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	ac, err := cloud.LoadAWSConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("LoadAWSConfig: %v", err)
	}
	d := cloud.NewDeployer(ac, cfg, nil)
	if d.Enabled() {
		t.Error("deployer enabled with CLOUD=off")
	}
	if _, err := d.Deploy(context.Background(), noopFn); !errors.Is(err, spillway.ErrCloudUnavailable) {
		t.Errorf("Deploy: %v, want ErrCloudUnavailable", err)
	}
	o := cloud.NewOffloader(ac, cfg, nil)
	o.SetEndpoint(cloud.Endpoint{InvokeURL: "http://127.0.0.1:1/"})
	if o.Enabled() || o.Ready() {
		t.Error("offloader enabled with CLOUD=off")
	}
	_, err = o.Invoke(context.Background(), spillway.CloudCall{Param: "x"})
	if !errors.Is(err, spillway.ErrCloudUnavailable) || !strings.Contains(err.Error(), "cloud is off") {
		t.Errorf("Invoke: %v, want ErrCloudUnavailable: cloud is off", err)
	}
	if got := spillway.FaultCode(err); got != spillway.FaultCloudUnavailable {
		t.Errorf("fault code %d", got)
	}
}

func TestNotDeployedYet(t *testing.T) {
	o := cloud.NewOffloader(aws.Config{}, testConfig("http://127.0.0.1:1", "x"), nil)
	if o.Ready() {
		t.Fatal("ready before SetEndpoint")
	}
	if _, err := o.Invoke(context.Background(), spillway.CloudCall{Param: 1}); !errors.Is(err, spillway.ErrCloudUnavailable) {
		t.Fatalf("Invoke before SetEndpoint: %v", err)
	}
}

// TestLocalcloudBinary deploys and offloads against the built localcloud
// binary, the way make up runs it.
func TestLocalcloudBinary(t *testing.T) {
	python := testutil.Python(t)
	bin := testutil.BuildBinary(t, "localcloud")
	port := testutil.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "LOCALCLOUD_PYTHON="+python, "LOCALCLOUD_CONCURRENCY=4", "LOCALCLOUD_IMAGE="+testutil.Image("worker"))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start localcloud: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	waitHealthy(t, url+"/health")

	env := newCloudEnv(t, nil, nil, url)
	cfg := testConfig(url, "fib")
	first := deploy(t, env, cfg, scriptFn)
	if second := deploy(t, env, cfg, scriptFn); len(second.Changes) != 0 || second.APIID != first.APIID {
		t.Fatalf("second deploy: %+v (first %+v)", second, first)
	}
	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		cfg.OffloadVia = via
		if got := invoke(t, offloader(t, env, cfg, first), "12").Value; got != "fib(12) = 144\n" {
			t.Fatalf("%s: result %q", via, got)
		}
	}
}

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not healthy within 15s", url)
}

// TestDeployRepairsDrift changes what an earlier deploy set up, the way a
// person at the console might, and checks the next deploy puts it back
// without creating a second API.
func TestDeployRepairsDrift(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "echo")
	first := deploy(t, env, cfg, handlerFn)
	ctx := context.Background()

	res, err := env.apigw.GetResources(ctx, &apigateway.GetResourcesInput{RestApiId: aws.String(first.APIID)})
	if err != nil {
		t.Fatal(err)
	}
	var invokeRes string
	for _, r := range res.Items {
		if aws.ToString(r.Path) == "/invoke" {
			invokeRes = aws.ToString(r.Id)
		}
	}
	_, err = env.apigw.UpdateMethod(ctx, &apigateway.UpdateMethodInput{
		RestApiId: aws.String(first.APIID), ResourceId: aws.String(invokeRes), HttpMethod: aws.String("ANY"),
		PatchOperations: []agtypes.PatchOperation{{Op: agtypes.OpReplace, Path: aws.String("/apiKeyRequired"), Value: aws.String("false")}},
	})
	if err != nil {
		t.Fatalf("UpdateMethod: %v", err)
	}
	cfg.ThrottleRPS, cfg.ThrottleBurst = 7, 3

	second := deploy(t, env, cfg, handlerFn)
	for _, want := range []string{"put-method /invoke", "create-deployment", "update-usage-plan"} {
		if !slices.Contains(second.Changes, want) {
			t.Errorf("repair deploy changes %v lack %q", second.Changes, want)
		}
	}
	if second.APIID != first.APIID || second.APIKey != first.APIKey {
		t.Fatalf("repair made a new API or key: %+v, was %+v", second, first)
	}
	if c := env.counts(t, cfg); c.apis != 1 || c.plans != 1 || c.keys != 1 {
		t.Errorf("after repair: %+v", c)
	}
	plans, err := env.apigw.GetUsagePlans(ctx, &apigateway.GetUsagePlansInput{})
	if err != nil || len(plans.Items) != 1 || plans.Items[0].Throttle == nil ||
		plans.Items[0].Throttle.RateLimit != 7 || plans.Items[0].Throttle.BurstLimit != 3 {
		t.Errorf("usage plan after repair: %+v %v", plans, err)
	}
	o := offloader(t, env, cfg, second)
	bad := second
	bad.APIKey = ""
	o2 := offloader(t, env, cfg, bad)
	if _, err := o2.Invoke(ctx, spillway.CloudCall{Param: "x"}); !strings.Contains(fmt.Sprint(err), "API key rejected") {
		t.Fatalf("without key after repair: %v", err)
	}
	invoke(t, o, "x")
}

func TestEndpointLogHidesKey(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ep := cloud.Endpoint{InvokeURL: "http://x/dev/invoke", APIKey: "s3cr3t-key-value", FunctionName: "f"}
	log.Info("deployed", "endpoint", ep)
	if strings.Contains(buf.String(), "s3cr3t") || !strings.Contains(buf.String(), "http://x/dev/invoke") {
		t.Fatalf("log line %q", buf.String())
	}
}

// TestDeployTagsWhatItCreates: the REST API, the API key and the usage plan
// carry spillway:managed=true, the tag iam-policy.json requires before lb
// may read or change them.
func TestDeployTagsWhatItCreates(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "tagged")
	ep := deploy(t, env, cfg, scriptFn)
	ctx := context.Background()
	tagged := func(what string, tags map[string]string) {
		t.Helper()
		if tags[cloud.ManagedTag] != cloud.ManagedValue {
			t.Errorf("%s tags %v, want %s=%s", what, tags, cloud.ManagedTag, cloud.ManagedValue)
		}
	}
	api, err := env.apigw.GetRestApi(ctx, &apigateway.GetRestApiInput{RestApiId: aws.String(ep.APIID)})
	if err != nil {
		t.Fatal(err)
	}
	tagged("REST API", api.Tags)
	plans, err := env.apigw.GetUsagePlans(ctx, &apigateway.GetUsagePlansInput{})
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, p := range plans.Items {
		if aws.ToString(p.Name) == cfg.APIName+"-plan" {
			found++
			tagged("usage plan", p.Tags)
			keys, err := env.apigw.GetUsagePlanKeys(ctx, &apigateway.GetUsagePlanKeysInput{UsagePlanId: p.Id})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys.Items {
				key, err := env.apigw.GetApiKey(ctx, &apigateway.GetApiKeyInput{ApiKey: k.Id, IncludeValue: aws.Bool(true)})
				if err != nil {
					t.Fatal(err)
				}
				found++
				tagged("API key", key.Tags)
				if aws.ToString(key.Value) != ep.APIKey {
					t.Errorf("the plan's key is not the key lb offloads with")
				}
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d of the usage plan and its key", found)
	}
}

// TestDeployReuseProcess: a record with reuse_process deploys the Lambda
// with the shim's switch in its environment, so that the shim runs the
// script in its warm process (one pid for every warm call); deploying it
// again without the flag takes the switch away (a pid per call).
func TestDeployReuseProcess(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{Isolation: localcloud.IsolationUnsafeProcess})
	cfg := testConfig(env.url, "pids")
	fn := spillway.Function{Name: "pids", Style: spillway.StyleScript, ReuseProcess: true,
		Code: "import os\nprint(os.getpid(), end='')\n"}
	for _, reuse := range []bool{true, false} {
		fn.ReuseProcess = reuse
		o := offloader(t, env, cfg, deploy(t, env, cfg, fn))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		got, err := env.lambda.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(cfg.LambdaName)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var v string
		if got.Environment != nil {
			v = got.Environment.Variables[lambdawrap.ReuseProcessEnv]
		}
		if (v == "1") != reuse {
			t.Errorf("reuse_process %v: %s=%q in the function's environment", reuse, lambdawrap.ReuseProcessEnv, v)
		}
		invoke(t, o, nil) // the cold start
		pids := map[any]bool{}
		for range 3 {
			pids[invoke(t, o, nil).Value] = true
		}
		if same := len(pids) == 1; same != reuse {
			t.Errorf("reuse_process %v: pids of three warm calls %v", reuse, pids)
		}
	}
}

// counterFn answers how many times it ran in its execution environment.
var counterFn = spillway.Function{Name: "count", Style: spillway.StyleHandler, Code: `runs = 0

def handler(event, context):
    global runs
    runs += 1
    return runs
`}

// TestPingKeepsWarmWithoutRunning: the keep-warm ping, by either path,
// starts an execution environment without running the function: the call
// after it is warm and is the function's first run there.
func TestPingKeepsWarmWithoutRunning(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		t.Run(string(via), func(t *testing.T) {
			cfg := testConfig(env.url, "count-"+string(via))
			cfg.OffloadVia = via
			o := offloader(t, env, cfg, deploy(t, env, cfg, counterFn))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			first, err := o.Ping(ctx)
			if err != nil || !first.ColdStart || first.Latency <= 0 {
				t.Fatalf("first ping: %+v, %v; want a cold start", first, err)
			}
			if again, err := o.Ping(ctx); err != nil || again.ColdStart {
				t.Fatalf("second ping: %+v, %v; want warm", again, err)
			}
			r := invoke(t, o, "x")
			if r.ColdStart || r.Value != int64(1) {
				t.Fatalf("the call after two pings: %+v; want warm and the function's first run (1)", r)
			}
			if st := o.Stats(); st.Pings != 2 || st.Calls != 1 || st.ColdStarts != 0 || st.Breaker != cloud.BreakerClosed {
				t.Fatalf("stats %+v: want 2 pings, 1 call, no cold call", st)
			}
		})
	}
}

// TestPingDetectsAnOldShim: a Lambda whose shim does not know the ping
// runs the function on it; Ping reports that instead of calling it a
// ping, so lb's log says the deployment is stale.
func TestPingDetectsAnOldShim(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := testConfig(env.url, "count-old")
	d := cloud.NewDeployer(env.awsCfg, cfg, nil)
	d.BuildZip = func(fn spillway.Function) ([]byte, error) { return zipWithoutPing(t, fn), nil }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ep, err := d.Deploy(ctx, counterFn)
	if err != nil {
		t.Fatal(err)
	}
	o := offloader(t, env, cfg, ep)
	if _, err := o.Ping(ctx); err == nil || !strings.Contains(err.Error(), "ran the function") {
		t.Fatalf("ping to a shim without pings: %v, want an error that it ran the function", err)
	}
	if r := invoke(t, o, "x"); r.Value != int64(2) {
		t.Fatalf("the call after the ping: %v, want 2 (the old shim ran the function on the ping)", r.Value)
	}
}

// zipWithoutPing is fn's Lambda zip with a shim that does not recognise
// the ping (as one built before it existed).
func zipWithoutPing(t testing.TB, fn spillway.Function) []byte {
	t.Helper()
	z, err := lambdawrap.BuildZip(fn)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if f.Name == lambdawrap.ShimFile {
			old := "and envelope.get(PING_KEY) is True)"
			if !bytes.Contains(b, []byte(old)) {
				t.Fatalf("handler.py has no %q to remove", old)
			}
			b = bytes.Replace(b, []byte(old), []byte("and False)"), 1)
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Deflate, Modified: f.Modified, ExternalAttrs: f.ExternalAttrs})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestPingNotReady(t *testing.T) {
	o := cloud.NewOffloader(aws.Config{}, testConfig("http://127.0.0.1:1", "x"), nil)
	if _, err := o.Ping(context.Background()); !errors.Is(err, spillway.ErrCloudUnavailable) || !errors.Is(err, spillway.ErrCloudNotRun) {
		t.Fatalf("Ping before SetEndpoint: %v, want cloud unavailable, not run", err)
	}
}
