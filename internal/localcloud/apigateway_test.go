package localcloud_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigateway"
	agtypes "github.com/aws/aws-sdk-go-v2/service/apigateway/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/localcloud/localcloudtest"
)

// clock is a settable clock for throttle tests: real time plus an offset.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// gwFixture is a deployed REST API in front of a shim-wrapped function.
type gwFixture struct {
	cloud  *localcloudtest.Cloud
	lc     *lambda.Client
	gw     *apigateway.Client
	apiID  string
	key    string
	planID string
}

func mustBuildZip(t testing.TB, fn spillway.Function) []byte {
	t.Helper()
	b, err := lambdawrap.BuildZip(fn)
	if err != nil {
		t.Fatalf("BuildZip: %v", err)
	}
	return b
}

// deployAPI creates what Spillway's deployer creates: ANY on / and /invoke
// (API key required, AWS non-proxy integration), ANY on /proxy/{proxy+}
// (AWS_PROXY), the invoke permission, stage dev, a key and a usage plan.
func deployAPI(t testing.TB, ctx context.Context, cloud *localcloudtest.Cloud, fnName string, throttle *agtypes.ThrottleSettings) *gwFixture {
	t.Helper()
	fx := &gwFixture{cloud: cloud, lc: cloud.Lambda(), gw: cloud.APIGateway()}
	gw := fx.gw
	fnOut, err := fx.lc.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fnName)})
	if err != nil {
		t.Fatalf("GetFunction: %v", err)
	}
	fnARN := aws.ToString(fnOut.Configuration.FunctionArn)
	uri := "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/" + fnARN + "/invocations"

	api, err := gw.CreateRestApi(ctx, &apigateway.CreateRestApiInput{Name: aws.String("spillway-" + fnName),
		EndpointConfiguration: &agtypes.EndpointConfiguration{Types: []agtypes.EndpointType{agtypes.EndpointTypeRegional}}})
	if err != nil {
		t.Fatalf("CreateRestApi: %v", err)
	}
	fx.apiID = aws.ToString(api.Id)
	invokeRes, err := gw.CreateResource(ctx, &apigateway.CreateResourceInput{RestApiId: api.Id, ParentId: api.RootResourceId, PathPart: aws.String("invoke")})
	if err != nil {
		t.Fatalf("CreateResource: %v", err)
	}
	if aws.ToString(invokeRes.Path) != "/invoke" {
		t.Errorf("resource path = %q", aws.ToString(invokeRes.Path))
	}
	_, err = gw.CreateResource(ctx, &apigateway.CreateResourceInput{RestApiId: api.Id, ParentId: api.RootResourceId, PathPart: aws.String("invoke")})
	var conflict *agtypes.ConflictException
	if !errors.As(err, &conflict) {
		t.Errorf("duplicate CreateResource: %v, want ConflictException", err)
	}
	proxyParent, err := gw.CreateResource(ctx, &apigateway.CreateResourceInput{RestApiId: api.Id, ParentId: api.RootResourceId, PathPart: aws.String("proxy")})
	if err != nil {
		t.Fatalf("CreateResource proxy: %v", err)
	}
	proxyRes, err := gw.CreateResource(ctx, &apigateway.CreateResourceInput{RestApiId: api.Id, ParentId: proxyParent.Id, PathPart: aws.String("{proxy+}")})
	if err != nil {
		t.Fatalf("CreateResource {proxy+}: %v", err)
	}

	for _, rid := range []*string{api.RootResourceId, invokeRes.Id} {
		if _, err := gw.PutMethod(ctx, &apigateway.PutMethodInput{RestApiId: api.Id, ResourceId: rid, HttpMethod: aws.String("ANY"),
			AuthorizationType: aws.String("NONE"), ApiKeyRequired: true}); err != nil {
			t.Fatalf("PutMethod: %v", err)
		}
		if _, err := gw.PutMethodResponse(ctx, &apigateway.PutMethodResponseInput{RestApiId: api.Id, ResourceId: rid, HttpMethod: aws.String("ANY"),
			StatusCode: aws.String("200"), ResponseModels: map[string]string{"application/json": "Empty"}}); err != nil {
			t.Fatalf("PutMethodResponse: %v", err)
		}
		if _, err := gw.PutIntegration(ctx, &apigateway.PutIntegrationInput{RestApiId: api.Id, ResourceId: rid, HttpMethod: aws.String("ANY"),
			Type: agtypes.IntegrationTypeAws, IntegrationHttpMethod: aws.String("POST"), Uri: aws.String(uri),
			PassthroughBehavior: aws.String("WHEN_NO_MATCH")}); err != nil {
			t.Fatalf("PutIntegration: %v", err)
		}
		if _, err := gw.PutIntegrationResponse(ctx, &apigateway.PutIntegrationResponseInput{RestApiId: api.Id, ResourceId: rid,
			HttpMethod: aws.String("ANY"), StatusCode: aws.String("200")}); err != nil {
			t.Fatalf("PutIntegrationResponse: %v", err)
		}
	}
	_, err = gw.PutMethod(ctx, &apigateway.PutMethodInput{RestApiId: api.Id, ResourceId: invokeRes.Id, HttpMethod: aws.String("ANY"), AuthorizationType: aws.String("NONE")})
	if !errors.As(err, &conflict) {
		t.Errorf("duplicate PutMethod: %v, want ConflictException", err)
	}
	if _, err := gw.PutMethod(ctx, &apigateway.PutMethodInput{RestApiId: api.Id, ResourceId: proxyRes.Id, HttpMethod: aws.String("ANY"),
		AuthorizationType: aws.String("NONE")}); err != nil {
		t.Fatalf("PutMethod proxy: %v", err)
	}
	if _, err := gw.PutIntegration(ctx, &apigateway.PutIntegrationInput{RestApiId: api.Id, ResourceId: proxyRes.Id, HttpMethod: aws.String("ANY"),
		Type: agtypes.IntegrationTypeAwsProxy, IntegrationHttpMethod: aws.String("POST"), Uri: aws.String(uri)}); err != nil {
		t.Fatalf("PutIntegration proxy: %v", err)
	}

	if _, err := fx.lc.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String(fnName), StatementId: aws.String("apigw-" + fx.apiID),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("apigateway.amazonaws.com"),
		SourceArn: aws.String(fmt.Sprintf("arn:aws:execute-api:us-east-1:000000000000:%s/*", fx.apiID))}); err != nil {
		t.Fatalf("AddPermission: %v", err)
	}
	if _, err := gw.CreateDeployment(ctx, &apigateway.CreateDeploymentInput{RestApiId: api.Id, StageName: aws.String("dev")}); err != nil {
		t.Fatalf("CreateDeployment: %v", err)
	}
	key, err := gw.CreateApiKey(ctx, &apigateway.CreateApiKeyInput{Name: aws.String("spillway-" + fnName + "-key"), Enabled: true})
	if err != nil {
		t.Fatalf("CreateApiKey: %v", err)
	}
	fx.key = aws.ToString(key.Value)
	if len(fx.key) < 20 || !key.Enabled {
		t.Errorf("CreateApiKey value %q enabled %v", fx.key, key.Enabled)
	}
	plan, err := gw.CreateUsagePlan(ctx, &apigateway.CreateUsagePlanInput{Name: aws.String("spillway-" + fnName + "-plan"),
		ApiStages: []agtypes.ApiStage{{ApiId: api.Id, Stage: aws.String("dev")}}, Throttle: throttle})
	if err != nil {
		t.Fatalf("CreateUsagePlan: %v", err)
	}
	fx.planID = aws.ToString(plan.Id)
	if _, err := gw.CreateUsagePlanKey(ctx, &apigateway.CreateUsagePlanKeyInput{UsagePlanId: plan.Id, KeyId: key.Id, KeyType: aws.String("API_KEY")}); err != nil {
		t.Fatalf("CreateUsagePlanKey: %v", err)
	}
	return fx
}

// post sends body to url with optional host and API key headers.
func post(t testing.TB, ctx context.Context, url, host, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestExecuteAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clk := &clock{}
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1, Now: clk.Now})
	lc := cloud.Lambda()
	handlerFn := spillway.Function{Name: "echo", Style: spillway.StyleHandler, Code: `import time
def handler(event, context):
    p = event["parameter"]
    if isinstance(p, dict) and "sleep" in p:
        time.sleep(p["sleep"])
    if p == "raise":
        raise KeyError("nope")
    return {"echo": p}
`}
	scriptFn := spillway.Function{Name: "fib", Style: spillway.StyleScript, Code: "import sys\nprint('fib', sys.argv[1])\n"}
	for _, fn := range []spillway.Function{handlerFn, scriptFn} {
		if _, err := lc.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(fn.Name), Runtime: types.RuntimePython312,
			Role: aws.String(role), Handler: aws.String(lambdawrap.LambdaHandler), Code: &types.FunctionCode{ZipFile: mustBuildZip(t, fn)},
			Timeout: aws.Int32(1)}); err != nil {
			t.Fatalf("CreateFunction %s: %v", fn.Name, err)
		}
	}
	fx := deployAPI(t, ctx, cloud, "echo", &agtypes.ThrottleSettings{RateLimit: 1, BurstLimit: 100})
	fib := deployAPI(t, ctx, cloud, "fib", nil)
	pathURL := cloud.URL + "/_aws/execute-api/" + fx.apiID + "/dev"
	hostName := fx.apiID + ".execute-api.localhost" + strings.TrimPrefix(cloud.URL, "http://127.0.0.1")

	tests := []struct {
		name, url, host, key, body string
		wantStatus                 int
		wantBody                   string // substring
	}{
		{"handler via path", pathURL + "/invoke", "", fx.key, `{"parameter": {"a": 1}}`, 200, `"body": {"echo": {"a": 1}}`},
		{"stage root", pathURL, "", fx.key, `{"parameter": 7}`, 200, `{"echo": 7}`},
		{"by host header", cloud.URL + "/dev/invoke", hostName, fx.key, `{"parameter": "x"}`, 200, `{"echo": "x"}`},
		{"script style", cloud.URL + "/_aws/execute-api/" + fib.apiID + "/dev/invoke", "", fib.key, `{"parameter": "30"}`, 200, `"body": "fib 30\n"`},
		{"function raised", pathURL + "/invoke", "", fx.key, `{"parameter": "raise"}`, 200, `"errorType": "KeyError"`},
		{"timeout is a 200 with Lambda's error", pathURL + "/invoke", "", fx.key, `{"parameter": {"sleep": 3}}`, 200, "Task timed out after 1.00 seconds"},
		{"no key", pathURL + "/invoke", "", "", `{"parameter": 1}`, 403, `{"message":"Forbidden"}`},
		{"wrong key", pathURL + "/invoke", "", "not-a-key-of-this-api-at-all", `{"parameter": 1}`, 403, `{"message":"Forbidden"}`},
		{"other API's key", pathURL + "/invoke", "", fib.key, `{"parameter": 1}`, 403, `{"message":"Forbidden"}`},
		{"unknown path", pathURL + "/nope", "", fx.key, `{}`, 403, "Missing Authentication Token"},
		{"unknown stage", cloud.URL + "/_aws/execute-api/" + fx.apiID + "/prod/invoke", "", fx.key, `{}`, 403, "Forbidden"},
		{"proxy integration", pathURL + "/proxy/a/b", "", "", `{"parameter": 5}`, 200, `"body": {"echo": 5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, ctx, tt.url, tt.host, tt.key, tt.body)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("status %d body %s; want %d and body containing %s", status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}

	t.Run("usage plan throttle", func(t *testing.T) {
		if _, err := fx.gw.UpdateUsagePlan(ctx, &apigateway.UpdateUsagePlanInput{UsagePlanId: aws.String(fx.planID),
			PatchOperations: []agtypes.PatchOperation{
				{Op: agtypes.OpReplace, Path: aws.String("/throttle/rateLimit"), Value: aws.String("1")},
				{Op: agtypes.OpReplace, Path: aws.String("/throttle/burstLimit"), Value: aws.String("2")},
			}}); err != nil {
			t.Fatalf("UpdateUsagePlan: %v", err)
		}
		var got []int
		for range 3 {
			status, _ := post(t, ctx, pathURL+"/invoke", "", fx.key, `{"parameter": 1}`)
			got = append(got, status)
		}
		clk.Advance(time.Second)
		status, _ := post(t, ctx, pathURL+"/invoke", "", fx.key, `{"parameter": 1}`)
		got = append(got, status)
		if fmt.Sprint(got) != "[200 200 429 200]" {
			t.Errorf("statuses with rate 1/s burst 2 = %v, want [200 200 429 200] (the last after 1s)", got)
		}
	})

	t.Run("listing", func(t *testing.T) {
		apis, err := fx.gw.GetRestApis(ctx, &apigateway.GetRestApisInput{})
		if err != nil || len(apis.Items) != 2 || aws.ToString(apis.Items[0].Name) != "spillway-echo" {
			t.Fatalf("GetRestApis = %+v, %v", apis, err)
		}
		if c := aws.ToTime(apis.Items[0].CreatedDate); time.Since(c) > time.Minute || time.Until(c) > time.Minute {
			t.Errorf("createdDate = %v", c)
		}
		keys, err := fx.gw.GetApiKeys(ctx, &apigateway.GetApiKeysInput{NameQuery: aws.String("spillway-echo"), IncludeValues: aws.Bool(true)})
		if err != nil || len(keys.Items) != 1 || aws.ToString(keys.Items[0].Value) != fx.key {
			t.Errorf("GetApiKeys = %+v, %v", keys, err)
		}
		keys, err = fx.gw.GetApiKeys(ctx, &apigateway.GetApiKeysInput{})
		if err != nil || len(keys.Items) != 2 || keys.Items[0].Value != nil {
			t.Errorf("GetApiKeys without values = %+v, %v", keys, err)
		}
		res, err := fx.gw.GetResources(ctx, &apigateway.GetResourcesInput{RestApiId: aws.String(fx.apiID), Embed: []string{"methods"}})
		if err != nil {
			t.Fatalf("GetResources: %v", err)
		}
		found := false
		for _, r := range res.Items {
			if aws.ToString(r.Path) == "/invoke" {
				m := r.ResourceMethods["ANY"]
				found = aws.ToBool(m.ApiKeyRequired) && m.MethodIntegration != nil && m.MethodIntegration.Type == agtypes.IntegrationTypeAws &&
					m.MethodIntegration.IntegrationResponses["200"].StatusCode != nil
			}
		}
		if !found {
			t.Errorf("GetResources(embed=methods) lacks ANY /invoke with its integration: %+v", res.Items)
		}
		stages, err := fx.gw.GetStages(ctx, &apigateway.GetStagesInput{RestApiId: aws.String(fx.apiID)})
		if err != nil || len(stages.Item) != 1 || aws.ToString(stages.Item[0].StageName) != "dev" {
			t.Errorf("GetStages = %+v, %v", stages, err)
		}
		plans, err := fx.gw.GetUsagePlans(ctx, &apigateway.GetUsagePlansInput{})
		if err != nil || len(plans.Items) != 2 {
			t.Errorf("GetUsagePlans = %+v, %v", plans, err)
		}
		pk, err := fx.gw.GetUsagePlanKeys(ctx, &apigateway.GetUsagePlanKeysInput{UsagePlanId: aws.String(fx.planID)})
		if err != nil || len(pk.Items) != 1 || aws.ToString(pk.Items[0].Type) != "API_KEY" {
			t.Errorf("GetUsagePlanKeys = %+v, %v", pk, err)
		}
		_, err = fx.gw.GetRestApi(ctx, &apigateway.GetRestApiInput{RestApiId: aws.String("missing")})
		var nf *agtypes.NotFoundException
		if !errors.As(err, &nf) {
			t.Errorf("GetRestApi(missing): %v, want NotFoundException", err)
		}
	})

	t.Run("without invoke permission", func(t *testing.T) {
		if _, err := lc.RemovePermission(ctx, &lambda.RemovePermissionInput{FunctionName: aws.String("fib"), StatementId: aws.String("apigw-" + fib.apiID)}); err != nil {
			t.Fatalf("RemovePermission: %v", err)
		}
		status, body := post(t, ctx, cloud.URL+"/_aws/execute-api/"+fib.apiID+"/dev/invoke", "", fib.key, `{"parameter": "1"}`)
		if status != 500 || !strings.Contains(body, "Internal server error") {
			t.Errorf("without permission: %d %s, want 500 Internal server error", status, body)
		}
	})
}

// TestExecuteAPIConcurrencyBurst sends more concurrent calls through API
// Gateway than the Lambda concurrency limit allows.
func TestExecuteAPIConcurrencyBurst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const limit, burst = 2, 6
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1, Concurrency: limit})
	fn := spillway.Function{Name: "slow", Style: spillway.StyleHandler, Code: "import time\ndef handler(event, context):\n    time.sleep(1)\n    return 'ok'\n"}
	if _, err := cloud.Lambda().CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("slow"), Runtime: types.RuntimePython312,
		Role: aws.String(role), Handler: aws.String(lambdawrap.LambdaHandler), Code: &types.FunctionCode{ZipFile: mustBuildZip(t, fn)}, Timeout: aws.Int32(5)}); err != nil {
		t.Fatalf("CreateFunction: %v", err)
	}
	fx := deployAPI(t, ctx, cloud, "slow", nil)
	url := cloud.URL + "/_aws/execute-api/" + fx.apiID + "/dev/invoke"
	statuses := make(chan int, burst)
	for range burst {
		go func() {
			status, _ := post(t, ctx, url, "", fx.key, `{"parameter": 1}`)
			statuses <- status
		}()
	}
	count := map[int]int{}
	for range burst {
		count[<-statuses]++
	}
	if count[200] != limit || count[429] != burst-limit {
		t.Errorf("statuses = %v, want %d×200 and %d×429", count, limit, burst-limit)
	}
	var body map[string]any
	_, b := post(t, ctx, url, "", fx.key, `{"parameter": 1}`)
	if err := json.Unmarshal([]byte(b), &body); err != nil || body["statusCode"] != 200.0 || body["coldStart"] != false {
		t.Errorf("after the burst: %s (%v), want a warm 200", b, err)
	}
}

// TestExecuteAPICredentials: an AWS integration that carries credentials (a
// role API Gateway assumes) invokes the function with no resource-based
// permission, as on AWS; the same integration without a role and without a
// permission is a configuration error (500).
func TestExecuteAPICredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cloud := localcloudtest.Start(t, localcloud.Config{TransitionDelay: -1})
	lc, gw := cloud.Lambda(), cloud.APIGateway()
	out := mustCreate(t, ctx, lc, "echo", zipOf(t, map[string]string{"app.py": echoPy}), 10, nil)
	uri := "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/" + aws.ToString(out.FunctionArn) + "/invocations"

	api, err := gw.CreateRestApi(ctx, &apigateway.CreateRestApiInput{Name: aws.String("creds")})
	if err != nil {
		t.Fatalf("CreateRestApi: %v", err)
	}
	for _, tc := range []struct{ path, credentials string }{
		{"withrole", "arn:aws:iam::000000000000:role/apigateway-invoke"},
		{"norole", ""},
	} {
		res, err := gw.CreateResource(ctx, &apigateway.CreateResourceInput{RestApiId: api.Id, ParentId: api.RootResourceId, PathPart: aws.String(tc.path)})
		if err != nil {
			t.Fatalf("CreateResource %s: %v", tc.path, err)
		}
		if _, err := gw.PutMethod(ctx, &apigateway.PutMethodInput{RestApiId: api.Id, ResourceId: res.Id, HttpMethod: aws.String("POST"),
			AuthorizationType: aws.String("NONE")}); err != nil {
			t.Fatalf("PutMethod %s: %v", tc.path, err)
		}
		in := &apigateway.PutIntegrationInput{RestApiId: api.Id, ResourceId: res.Id, HttpMethod: aws.String("POST"),
			Type: agtypes.IntegrationTypeAws, IntegrationHttpMethod: aws.String("POST"), Uri: aws.String(uri)}
		if tc.credentials != "" {
			in.Credentials = aws.String(tc.credentials)
		}
		integ, err := gw.PutIntegration(ctx, in)
		if err != nil {
			t.Fatalf("PutIntegration %s: %v", tc.path, err)
		}
		if got := aws.ToString(integ.Credentials); got != tc.credentials {
			t.Errorf("PutIntegration %s credentials = %q, want %q", tc.path, got, tc.credentials)
		}
		if _, err := gw.PutMethodResponse(ctx, &apigateway.PutMethodResponseInput{RestApiId: api.Id, ResourceId: res.Id, HttpMethod: aws.String("POST"),
			StatusCode: aws.String("200")}); err != nil {
			t.Fatalf("PutMethodResponse %s: %v", tc.path, err)
		}
		if _, err := gw.PutIntegrationResponse(ctx, &apigateway.PutIntegrationResponseInput{RestApiId: api.Id, ResourceId: res.Id,
			HttpMethod: aws.String("POST"), StatusCode: aws.String("200")}); err != nil {
			t.Fatalf("PutIntegrationResponse %s: %v", tc.path, err)
		}
	}
	if _, err := gw.CreateDeployment(ctx, &apigateway.CreateDeploymentInput{RestApiId: api.Id, StageName: aws.String("dev")}); err != nil {
		t.Fatalf("CreateDeployment: %v", err)
	}
	base := cloud.URL + "/_aws/execute-api/" + aws.ToString(api.Id) + "/dev/"

	status, body := post(t, ctx, base+"withrole", "", "", `{"n": 7}`)
	if status != http.StatusOK {
		t.Fatalf("with credentials, no permission: %d %s, want 200", status, body)
	}
	var got struct {
		Event map[string]any `json:"event"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.Event["n"] != float64(7) {
		t.Errorf("with credentials: body %s (%v), want the event echoed", body, err)
	}

	status, body = post(t, ctx, base+"norole", "", "", `{"n": 7}`)
	if status != http.StatusInternalServerError || !strings.Contains(body, "Internal server error") {
		t.Errorf("without credentials or permission: %d %s, want 500 Internal server error", status, body)
	}
}
