package cloud_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigateway"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	ltypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/localcloud"
)

// configFor is lb's cloud configuration of function when FAAS_FUNCTION_NAME
// is left at its default (config.CloudConfigFor), against endpoint.
func configFor(t *testing.T, endpoint, function string) cloud.Config {
	t.Helper()
	lc, err := config.Load(func(k string) (string, bool) {
		v, ok := map[string]string{"CLOUD": "local", "AWS_ENDPOINT_URL": endpoint}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := lc.CloudConfigFor(function)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 2 * time.Second
	c.MemoryMB = 256
	c.WaitTimeout = 20 * time.Second
	c.BackoffBase = 20 * time.Millisecond
	c.BackoffMax = 200 * time.Millisecond
	return c
}

// remove runs cfg's deployer's Remove.
func remove(t *testing.T, env *cloudEnv, cfg cloud.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cloud.NewDeployer(env.awsCfg, cfg, nil).Remove(ctx); err != nil {
		t.Fatalf("Remove %s: %v", cfg.LambdaName, err)
	}
}

// left is what the control planes hold under cfg's names.
type left struct {
	lambda            bool
	apis, plans, keys int
}

func (e *cloudEnv) left(t *testing.T, cfg cloud.Config) left {
	t.Helper()
	ctx := context.Background()
	var l left
	_, err := e.lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(cfg.LambdaName)})
	var nf *ltypes.ResourceNotFoundException
	switch {
	case err == nil:
		l.lambda = true
	case !errors.As(err, &nf):
		t.Fatalf("GetFunction %s: %v", cfg.LambdaName, err)
	}
	apis, err := e.apigw.GetRestApis(ctx, &apigateway.GetRestApisInput{})
	if err != nil {
		t.Fatalf("GetRestApis: %v", err)
	}
	for _, a := range apis.Items {
		if aws.ToString(a.Name) == cfg.APIName {
			l.apis++
		}
	}
	plans, err := e.apigw.GetUsagePlans(ctx, &apigateway.GetUsagePlansInput{})
	if err != nil {
		t.Fatalf("GetUsagePlans: %v", err)
	}
	for _, p := range plans.Items {
		if aws.ToString(p.Name) == cfg.APIName+"-plan" {
			l.plans++
		}
	}
	keys, err := e.apigw.GetApiKeys(ctx, &apigateway.GetApiKeysInput{})
	if err != nil {
		t.Fatalf("GetApiKeys: %v", err)
	}
	for _, k := range keys.Items {
		if aws.ToString(k.Name) == cfg.APIName+"-key" {
			l.keys++
		}
	}
	return l
}

// status posts a parameter to url with key through API Gateway.
func status(t *testing.T, url, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"parameter": "5"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRemoveOneFunctionLeavesTheOther: two functions behind one gateway
// each get their own Lambda, REST API, usage plan and key; removing one
// deletes exactly its own, the other still answers with its key, Remove
// is idempotent, and a removed function deploys afresh.
func TestRemoveOneFunctionLeavesTheOther(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	fibCfg, echoCfg := configFor(t, env.url, "fib"), configFor(t, env.url, "echo")
	if fibCfg.LambdaName != "spillway-fib" || echoCfg.LambdaName != "spillway-echo" || fibCfg.APIName == echoCfg.APIName {
		t.Fatalf("names: fib %s/%s, echo %s/%s", fibCfg.LambdaName, fibCfg.APIName, echoCfg.LambdaName, echoCfg.APIName)
	}
	fibEp, echoEp := deploy(t, env, fibCfg, scriptFn), deploy(t, env, echoCfg, handlerFn)
	if fibEp.APIKey == echoEp.APIKey || fibEp.APIID == echoEp.APIID {
		t.Fatalf("the functions share a key or an API: %v / %v", fibEp, echoEp)
	}
	want := left{lambda: true, apis: 1, plans: 1, keys: 1}
	for _, cfg := range []cloud.Config{fibCfg, echoCfg} {
		if got := env.left(t, cfg); got != want {
			t.Fatalf("after deploy, %s has %+v, want %+v", cfg.APIName, got, want)
		}
	}
	// Each key opens its own function's API only.
	if got := status(t, echoEp.InvokeURL, fibEp.APIKey); got != http.StatusForbidden {
		t.Errorf("echo's API with fib's key: status %d, want 403", got)
	}
	if got := status(t, fibEp.InvokeURL, fibEp.APIKey); got != http.StatusOK {
		t.Errorf("fib's API with its key: status %d, want 200", got)
	}

	remove(t, env, fibCfg)
	if got := env.left(t, fibCfg); got != (left{}) {
		t.Errorf("after Remove, fib has %+v, want nothing", got)
	}
	if got := env.left(t, echoCfg); got != want {
		t.Errorf("after removing fib, echo has %+v, want %+v", got, want)
	}
	echo := offloader(t, env, echoCfg, echoEp)
	if got := invoke(t, echo, "hi").Value; !strings.Contains(echoOf(got), "hi") {
		t.Errorf("echo after fib's removal = %#v", got)
	}
	if got := status(t, fibEp.InvokeURL, fibEp.APIKey); got == http.StatusOK {
		t.Errorf("fib's old API still answers after Remove")
	}
	fib := offloader(t, env, fibCfg, fibEp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := fib.Invoke(ctx, spillway.CloudCall{Param: "5"}); !errors.Is(err, spillway.ErrCloudUnavailable) {
		t.Errorf("offload to removed fib = %v, want ErrCloudUnavailable", err)
	}

	// Idempotent: again, and for a function never deployed.
	remove(t, env, fibCfg)
	remove(t, env, configFor(t, env.url, "never"))
	if got := env.left(t, echoCfg); got != want {
		t.Errorf("after the repeated removals, echo has %+v, want %+v", got, want)
	}

	// A removed function deploys afresh, with a new key.
	again := deploy(t, env, fibCfg, scriptFn)
	if !slices.Contains(again.Changes, "create-function") || !slices.Contains(again.Changes, "create-api-key") || again.APIKey == fibEp.APIKey {
		t.Errorf("redeploy after Remove: changes %v, same key %v", again.Changes, again.APIKey == fibEp.APIKey)
	}
	if got := invoke(t, offloader(t, env, fibCfg, again), "10").Value; got != "fib(10) = 55\n" {
		t.Errorf("redeployed fib = %#v", got)
	}

	remove(t, env, fibCfg)
	remove(t, env, echoCfg)
	for _, cfg := range []cloud.Config{fibCfg, echoCfg} {
		if got := env.left(t, cfg); got != (left{}) {
			t.Errorf("after removing both, %s has %+v", cfg.APIName, got)
		}
	}
}

// echoOf is the "echo" field of handlerFn's answer.
func echoOf(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["echo"].(string)
	return s
}

// TestRemoveFinishesAPartialRemoval: with the Lambda already gone (a
// Remove cut short, or deleted by hand), Remove deletes the rest.
func TestRemoveFinishesAPartialRemoval(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	cfg := configFor(t, env.url, "noop")
	deploy(t, env, cfg, noopFn)
	if _, err := env.lambda.DeleteFunction(context.Background(), &lambda.DeleteFunctionInput{FunctionName: aws.String(cfg.LambdaName)}); err != nil {
		t.Fatal(err)
	}
	remove(t, env, cfg)
	if got := env.left(t, cfg); got != (left{}) {
		t.Errorf("after Remove, %+v is left", got)
	}
}

// TestRemoveCloudOff: with CLOUD=off nothing was deployed and nothing is
// removed.
func TestRemoveCloudOff(t *testing.T) {
	err := cloud.NewDeployer(aws.Config{}, cloud.Config{Mode: cloud.ModeOff}, nil).Remove(context.Background())
	if err != nil {
		t.Fatalf("Remove with CLOUD=off = %v", err)
	}
}

// TestOffloadersSideBySide: one Offloader per function keeps its own
// endpoint, counters and breaker. Calls run on both at once; when one
// function's cloud goes (removed), its breaker opens and the other's
// stays closed and keeps answering.
func TestOffloadersSideBySide(t *testing.T) {
	env := startLocalcloud(t, localcloud.Config{})
	fibCfg, echoCfg := configFor(t, env.url, "fib"), configFor(t, env.url, "echo")
	fibCfg.BreakerThreshold, echoCfg.BreakerThreshold = 2, 2
	fibCfg.BreakerCooldown, echoCfg.BreakerCooldown = time.Minute, time.Minute
	fib := offloader(t, env, fibCfg, deploy(t, env, fibCfg, scriptFn))
	echo := offloader(t, env, echoCfg, deploy(t, env, echoCfg, handlerFn))

	const calls = 4
	var wg sync.WaitGroup
	errs := make(chan error, 2*calls)
	for i := range calls {
		wg.Add(2)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := fib.Invoke(ctx, spillway.CloudCall{Param: "10"})
			if err == nil && res.Value != "fib(10) = 55\n" {
				err = fmt.Errorf("fib answered %#v", res.Value)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := echo.Invoke(ctx, spillway.CloudCall{Param: fmt.Sprint(i)})
			if err == nil && echoOf(res.Value) != fmt.Sprint(i) {
				err = fmt.Errorf("echo answered %#v", res.Value)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if fs, es := fib.Stats(), echo.Stats(); fs.Succeeded != calls || es.Succeeded != calls {
		t.Fatalf("stats fib %+v echo %+v, want %d calls each", fs, es, calls)
	}

	remove(t, env, fibCfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range fibCfg.BreakerThreshold {
		if _, err := fib.Invoke(ctx, spillway.CloudCall{Param: "1"}); !errors.Is(err, spillway.ErrCloudUnavailable) {
			t.Fatalf("removed fib: %v, want ErrCloudUnavailable", err)
		}
	}
	if fib.State() != cloud.BreakerOpen || echo.State() != cloud.BreakerClosed {
		t.Fatalf("breakers: fib %s, echo %s; want open, closed", fib.State(), echo.State())
	}
	if got := echoOf(invoke(t, echo, "still").Value); got != "still" {
		t.Fatalf("echo beside fib's open breaker = %q", got)
	}
	if fs, es := fib.Stats(), echo.Stats(); fs.Failed != int64(fibCfg.BreakerThreshold) || es.Failed != 0 || es.Succeeded != calls+1 {
		t.Errorf("stats after fib's removal: fib %+v echo %+v", fs, es)
	}
}
