package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/apigateway"
	agtypes "github.com/aws/aws-sdk-go-v2/service/apigateway/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	ltypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
)

// Endpoint is where a deployed function is reached.
type Endpoint struct {
	InvokeURL    string // POST {"parameter": ...} here with x-api-key
	APIKey       string // the usage plan's key value (a secret: never logged)
	APIID        string
	Stage        string
	FunctionName string
	FunctionARN  string
	CodeSHA256   string   // base64 sha256 of the deployed zip, as Lambda reports it
	Changes      []string // what this Deploy changed, e.g. "create-function", "update-code"; empty when nothing
}

// LogValue keeps the API key out of logs.
func (e Endpoint) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", e.InvokeURL),
		slog.String("function", e.FunctionName),
		slog.String("code_sha256", e.CodeSHA256),
		slog.String("api_id", e.APIID),
	)
}

// Deployer creates or updates the function in Lambda and the REST API, API
// key and usage plan in front of it. Deploy is idempotent across restarts:
// everything is found by name, and unchanged parts are left alone.
type Deployer struct {
	cfg    Config
	lambda *lambda.Client
	apigw  *apigateway.Client
	log    *slog.Logger

	// BuildZip builds the deployment package; nil means lambdawrap.BuildZip.
	BuildZip func(spillway.Function) ([]byte, error)

	mu sync.Mutex // serialises Deploy calls
}

// NewDeployer builds a deployer on awsCfg (from LoadAWSConfig). With
// Mode=off, Deploy fails with spillway.ErrCloudUnavailable.
func NewDeployer(awsCfg aws.Config, cfg Config, log *slog.Logger) *Deployer {
	cfg = cfg.withKnobs()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Deployer{cfg: cfg, log: log}
	if cfg.Enabled() {
		d.lambda = lambda.NewFromConfig(awsCfg)
		d.apigw = apigateway.NewFromConfig(awsCfg)
	}
	return d
}

// Enabled reports whether a cloud is configured.
func (d *Deployer) Enabled() bool { return d.cfg.Enabled() }

// Deploy makes the cloud run fn and returns how to reach it.
func (d *Deployer) Deploy(ctx context.Context, fn spillway.Function) (Endpoint, error) {
	if !d.Enabled() {
		return Endpoint{}, fmt.Errorf("deploy %s: cloud is off: %w", fn.Name, spillway.ErrCloudUnavailable)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()

	build := d.BuildZip
	if build == nil {
		build = lambdawrap.BuildZip
	}
	zip, err := build(fn)
	if err != nil {
		return Endpoint{}, fmt.Errorf("deploy %s: %w", fn.Name, err)
	}
	ep := Endpoint{
		FunctionName: d.cfg.LambdaName,
		CodeSHA256:   lambdawrap.CodeSHA256(zip),
		Stage:        d.cfg.Stage,
	}
	var ch changes
	if ep.FunctionARN, err = d.ensureFunction(ctx, fn, zip, ep.CodeSHA256, &ch); err != nil {
		return Endpoint{}, fmt.Errorf("deploy %s: Lambda %s: %w", fn.Name, d.cfg.LambdaName, err)
	}
	if ep.APIID, err = d.ensureAPI(ctx, ep.FunctionARN, &ch); err != nil {
		return Endpoint{}, fmt.Errorf("deploy %s: REST API %s: %w", fn.Name, d.cfg.APIName, err)
	}
	if ep.APIKey, err = d.ensureKey(ctx, ep.APIID, &ch); err != nil {
		return Endpoint{}, fmt.Errorf("deploy %s: API key and usage plan of %s: %w", fn.Name, d.cfg.APIName, err)
	}
	ep.InvokeURL = d.invokeURL(ep.APIID)
	ep.Changes = ch
	d.log.Info("cloud deployed", "endpoint", ep, "version", fn.Version,
		"changes", strings.Join(ch, ","), "took", time.Since(start).Round(time.Millisecond))
	return ep, nil
}

// invokeURL is the stage URL of ResourcePath.
func (d *Deployer) invokeURL(apiID string) string {
	if d.cfg.Mode == ModeLocal {
		return fmt.Sprintf("%s/_aws/execute-api/%s/%s/%s", strings.TrimRight(d.cfg.Endpoint, "/"), apiID, d.cfg.Stage, ResourcePath)
	}
	return fmt.Sprintf("https://%s.execute-api.%s.amazonaws.com/%s/%s", apiID, d.cfg.Region, d.cfg.Stage, ResourcePath)
}

type changes []string

func (c *changes) add(what string) { *c = append(*c, what) }

// ---- Lambda ----

// functionSpec is the part of the function's configuration Deploy owns.
type functionSpec struct {
	runtime ltypes.Runtime
	role    string
	memory  int32
	timeout int32 // seconds
	// env is the function's environment: the shim's reuse-process switch
	// (lambdawrap.ReuseProcessEnv) when the record asks for it, else none.
	env map[string]string
}

func (d *Deployer) spec(fn spillway.Function) functionSpec {
	rt := fn.Runtime
	if rt == "" {
		rt = spillway.DefaultRuntime
	}
	env := map[string]string{}
	if fn.ReuseProcess && fn.Style == spillway.StyleScript {
		env[lambdawrap.ReuseProcessEnv] = "1"
	}
	return functionSpec{
		runtime: ltypes.Runtime(rt),
		role:    d.cfg.Role,
		memory:  d.cfg.MemoryMB,
		timeout: int32((d.cfg.Timeout + time.Second - 1) / time.Second),
		env:     env,
	}
}

func (s functionSpec) matches(c *ltypes.FunctionConfiguration) bool {
	var env map[string]string
	if c.Environment != nil {
		env = c.Environment.Variables
	}
	return c.Runtime == s.runtime && aws.ToString(c.Handler) == Handler && aws.ToString(c.Role) == s.role &&
		aws.ToInt32(c.MemorySize) == s.memory && aws.ToInt32(c.Timeout) == s.timeout && maps.Equal(env, s.env)
}

// ensureFunction creates the function or brings its code and configuration up
// to date, and returns its ARN once Lambda reports it Active and Successful.
func (d *Deployer) ensureFunction(ctx context.Context, fn spillway.Function, zip []byte, sha string, ch *changes) (string, error) {
	name := aws.String(d.cfg.LambdaName)
	want := d.spec(fn)
	got, err := d.lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: name})
	var nf *ltypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		out, err := d.lambda.CreateFunction(ctx, &lambda.CreateFunctionInput{
			FunctionName: name,
			Runtime:      want.runtime,
			Role:         aws.String(want.role),
			Handler:      aws.String(Handler),
			Code:         &ltypes.FunctionCode{ZipFile: zip},
			MemorySize:   aws.Int32(want.memory),
			Timeout:      aws.Int32(want.timeout),
			Environment:  &ltypes.Environment{Variables: want.env},
			Description:  aws.String("Spillway function " + fn.Name),
			PackageType:  ltypes.PackageTypeZip,
		})
		if err != nil {
			return "", fmt.Errorf("create function: %w", err)
		}
		ch.add("create-function")
		if err := d.waitActive(ctx); err != nil {
			return "", err
		}
		return aws.ToString(out.FunctionArn), nil
	}
	if err != nil {
		return "", fmt.Errorf("get function: %w", err)
	}
	c := got.Configuration
	if c == nil {
		return "", errors.New("get function: answer without configuration")
	}
	if c.State == ltypes.StatePending {
		if err := d.waitActive(ctx); err != nil {
			return "", err
		}
	}
	if c.LastUpdateStatus == ltypes.LastUpdateStatusInProgress {
		if err := d.waitUpdated(ctx); err != nil {
			return "", err
		}
	}
	if aws.ToString(c.CodeSha256) != sha {
		if _, err := d.lambda.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: name, ZipFile: zip}); err != nil {
			return "", fmt.Errorf("update function code: %w", err)
		}
		ch.add("update-code")
		if err := d.waitUpdated(ctx); err != nil {
			return "", err
		}
	}
	if !want.matches(c) {
		_, err := d.lambda.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{
			FunctionName: name,
			Runtime:      want.runtime,
			Role:         aws.String(want.role),
			Handler:      aws.String(Handler),
			MemorySize:   aws.Int32(want.memory),
			Timeout:      aws.Int32(want.timeout),
			Environment:  &ltypes.Environment{Variables: want.env},
		})
		if err != nil {
			return "", fmt.Errorf("update function configuration: %w", err)
		}
		ch.add("update-configuration")
		if err := d.waitUpdated(ctx); err != nil {
			return "", err
		}
	}
	return aws.ToString(c.FunctionArn), nil
}

func (d *Deployer) waitActive(ctx context.Context) error {
	w := lambda.NewFunctionActiveV2Waiter(d.lambda, func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 200*time.Millisecond, 5*time.Second
	})
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(d.cfg.LambdaName)}, d.cfg.WaitTimeout); err != nil {
		return fmt.Errorf("wait for the function to become Active (up to %s): %w", d.cfg.WaitTimeout, err)
	}
	return nil
}

func (d *Deployer) waitUpdated(ctx context.Context) error {
	w := lambda.NewFunctionUpdatedV2Waiter(d.lambda, func(o *lambda.FunctionUpdatedV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 200*time.Millisecond, 5*time.Second
	})
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(d.cfg.LambdaName)}, d.cfg.WaitTimeout); err != nil {
		return fmt.Errorf("wait for the function update to finish (up to %s): %w", d.cfg.WaitTimeout, err)
	}
	return nil
}

// ---- API Gateway ----

// ensureAPI finds or creates the REST API, its resources, methods and Lambda
// integration, the permission for API Gateway to invoke the function, and
// the stage. A new deployment is made only when something changed or the
// stage is missing. It returns the API id.
func (d *Deployer) ensureAPI(ctx context.Context, functionARN string, ch *changes) (string, error) {
	apiID, err := d.findAPI(ctx)
	if err != nil {
		return "", err
	}
	if apiID == "" {
		out, err := d.apigw.CreateRestApi(ctx, &apigateway.CreateRestApiInput{
			Name:        aws.String(d.cfg.APIName),
			Description: aws.String("Spillway offload endpoint for Lambda " + d.cfg.LambdaName),
			EndpointConfiguration: &agtypes.EndpointConfiguration{
				Types: []agtypes.EndpointType{agtypes.EndpointTypeRegional},
			},
			Tags: managedTags(),
		})
		if err != nil {
			return "", fmt.Errorf("create REST API: %w", err)
		}
		apiID = aws.ToString(out.Id)
		ch.add("create-rest-api")
	}

	root, res, err := d.resources(ctx, apiID)
	if err != nil {
		return "", err
	}
	if root == nil {
		return "", fmt.Errorf("REST API %s has no root resource", apiID)
	}
	if res == nil {
		out, err := d.apigw.CreateResource(ctx, &apigateway.CreateResourceInput{
			RestApiId: aws.String(apiID), ParentId: root.Id, PathPart: aws.String(ResourcePath),
		})
		if err != nil {
			return "", fmt.Errorf("create resource /%s: %w", ResourcePath, err)
		}
		res = &agtypes.Resource{Id: out.Id, Path: out.Path}
		ch.add("create-resource")
	}

	fa, err := arn.Parse(functionARN)
	if err != nil {
		return "", fmt.Errorf("parse function ARN %q: %w", functionARN, err)
	}
	uri := fmt.Sprintf("arn:%s:apigateway:%s:lambda:path/2015-03-31/functions/%s/invocations", fa.Partition, fa.Region, functionARN)
	changed := false
	for _, r := range []*agtypes.Resource{root, res} {
		c, err := d.ensureMethod(ctx, apiID, r, uri)
		if err != nil {
			return "", fmt.Errorf("method ANY %s: %w", aws.ToString(r.Path), err)
		}
		if c {
			changed = true
			ch.add("put-method " + aws.ToString(r.Path))
		}
	}

	if err := d.allowInvoke(ctx, fa, apiID, ch); err != nil {
		return "", err
	}

	staged, err := d.stageExists(ctx, apiID)
	if err != nil {
		return "", err
	}
	if changed || !staged {
		_, err := d.apigw.CreateDeployment(ctx, &apigateway.CreateDeploymentInput{
			RestApiId:   aws.String(apiID),
			StageName:   aws.String(d.cfg.Stage),
			Description: aws.String("Spillway deploy"),
		})
		if err != nil {
			return "", fmt.Errorf("deploy stage %s: %w", d.cfg.Stage, err)
		}
		ch.add("create-deployment")
	}
	return apiID, nil
}

// findAPI returns the id of the oldest REST API named APIName, or "".
func (d *Deployer) findAPI(ctx context.Context) (string, error) {
	var (
		id     string
		oldest time.Time
	)
	p := apigateway.NewGetRestApisPaginator(d.apigw, &apigateway.GetRestApisInput{Limit: aws.Int32(500)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("list REST APIs: %w", err)
		}
		for _, a := range page.Items {
			if aws.ToString(a.Name) != d.cfg.APIName {
				continue
			}
			created := aws.ToTime(a.CreatedDate)
			if id == "" || created.Before(oldest) {
				id, oldest = aws.ToString(a.Id), created
			}
		}
	}
	return id, nil
}

// resources returns the root resource and /ResourcePath (nil when missing),
// with their methods embedded.
func (d *Deployer) resources(ctx context.Context, apiID string) (root, res *agtypes.Resource, err error) {
	p := apigateway.NewGetResourcesPaginator(d.apigw, &apigateway.GetResourcesInput{
		RestApiId: aws.String(apiID), Embed: []string{"methods"}, Limit: aws.Int32(500),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("list resources: %w", err)
		}
		for i := range page.Items {
			r := &page.Items[i]
			switch aws.ToString(r.Path) {
			case "/":
				root = r
			case "/" + ResourcePath:
				res = r
			}
		}
	}
	return root, res, nil
}

// ensureMethod makes ANY on r require the API key and go to the Lambda
// through an AWS (non-proxy) integration whose answer passes through as 200.
// It reports whether it changed anything.
func (d *Deployer) ensureMethod(ctx context.Context, apiID string, r *agtypes.Resource, uri string) (bool, error) {
	api, rid, anyMethod := aws.String(apiID), r.Id, aws.String("ANY")
	m, exists := r.ResourceMethods["ANY"]
	if !exists {
		_, err := d.apigw.PutMethod(ctx, &apigateway.PutMethodInput{
			RestApiId: api, ResourceId: rid, HttpMethod: anyMethod,
			AuthorizationType: aws.String("NONE"), ApiKeyRequired: true,
		})
		if err != nil {
			return false, fmt.Errorf("put method: %w", err)
		}
	} else if m.HttpMethod == nil {
		// The listing did not embed the method's details: trust what exists.
		return false, nil
	}
	changed := !exists
	if exists && !aws.ToBool(m.ApiKeyRequired) {
		_, err := d.apigw.UpdateMethod(ctx, &apigateway.UpdateMethodInput{
			RestApiId: api, ResourceId: rid, HttpMethod: anyMethod,
			PatchOperations: []agtypes.PatchOperation{{Op: agtypes.OpReplace, Path: aws.String("/apiKeyRequired"), Value: aws.String("true")}},
		})
		if err != nil {
			return false, fmt.Errorf("require the API key: %w", err)
		}
		changed = true
	}
	if _, ok := m.MethodResponses["200"]; !ok {
		_, err := d.apigw.PutMethodResponse(ctx, &apigateway.PutMethodResponseInput{
			RestApiId: api, ResourceId: rid, HttpMethod: anyMethod, StatusCode: aws.String("200"),
			ResponseModels: map[string]string{"application/json": "Empty"},
		})
		var conflict *agtypes.ConflictException
		if err != nil && !errors.As(err, &conflict) {
			return false, fmt.Errorf("put method response: %w", err)
		}
		changed = true
	}
	integ := m.MethodIntegration
	putIntegration := integ == nil || integ.Type != agtypes.IntegrationTypeAws || aws.ToString(integ.Uri) != uri
	if putIntegration {
		_, err := d.apigw.PutIntegration(ctx, &apigateway.PutIntegrationInput{
			RestApiId: api, ResourceId: rid, HttpMethod: anyMethod,
			Type:                  agtypes.IntegrationTypeAws,
			IntegrationHttpMethod: aws.String("POST"),
			Uri:                   aws.String(uri),
			PassthroughBehavior:   aws.String("WHEN_NO_MATCH"),
		})
		if err != nil {
			return false, fmt.Errorf("put Lambda integration: %w", err)
		}
		changed = true
	}
	if _, ok := integResponses(integ)["200"]; putIntegration || !ok {
		_, err := d.apigw.PutIntegrationResponse(ctx, &apigateway.PutIntegrationResponseInput{
			RestApiId: api, ResourceId: rid, HttpMethod: anyMethod, StatusCode: aws.String("200"),
		})
		if err != nil {
			return false, fmt.Errorf("put integration response: %w", err)
		}
		changed = true
	}
	return changed, nil
}

func integResponses(i *agtypes.Integration) map[string]agtypes.IntegrationResponse {
	if i == nil {
		return nil
	}
	return i.IntegrationResponses
}

// allowInvoke lets API Gateway (this API, any stage, method and path) invoke
// the function. An existing statement is left alone.
func (d *Deployer) allowInvoke(ctx context.Context, fa arn.ARN, apiID string, ch *changes) error {
	_, err := d.lambda.AddPermission(ctx, &lambda.AddPermissionInput{
		FunctionName: aws.String(d.cfg.LambdaName),
		StatementId:  aws.String("spillway-apigateway-" + apiID),
		Action:       aws.String("lambda:InvokeFunction"),
		Principal:    aws.String("apigateway.amazonaws.com"),
		SourceArn:    aws.String(fmt.Sprintf("arn:%s:execute-api:%s:%s:%s/*", fa.Partition, fa.Region, fa.AccountID, apiID)),
	})
	var conflict *ltypes.ResourceConflictException
	switch {
	case err == nil:
		ch.add("add-permission")
	case errors.As(err, &conflict):
	default:
		return fmt.Errorf("allow API Gateway to invoke the function: %w", err)
	}
	return nil
}

func (d *Deployer) stageExists(ctx context.Context, apiID string) (bool, error) {
	out, err := d.apigw.GetStages(ctx, &apigateway.GetStagesInput{RestApiId: aws.String(apiID)})
	if err != nil {
		return false, fmt.Errorf("list stages: %w", err)
	}
	for _, s := range out.Item {
		if aws.ToString(s.StageName) == d.cfg.Stage {
			return true, nil
		}
	}
	return false, nil
}

// ---- API key and usage plan ----

func (d *Deployer) keyName() string  { return d.cfg.APIName + "-key" }
func (d *Deployer) planName() string { return d.cfg.APIName + "-plan" }

// ensureKey finds the API key in the usage plan that ties it to the stage
// (creating either when missing) and returns the key's value. The key is
// found through the plan's keys, never by listing every API key of the
// account: iam-policy.json grants reading only what Spillway tagged.
func (d *Deployer) ensureKey(ctx context.Context, apiID string, ch *changes) (string, error) {
	planID, err := d.ensurePlan(ctx, apiID, ch)
	if err != nil {
		return "", err
	}
	keyID, err := d.planKey(ctx, planID)
	if err != nil {
		return "", err
	}
	if keyID == "" {
		out, err := d.apigw.CreateApiKey(ctx, &apigateway.CreateApiKeyInput{
			Name:        aws.String(d.keyName()),
			Description: aws.String("Spillway offload key for " + d.cfg.APIName),
			Enabled:     true,
			Tags:        managedTags(),
		})
		if err != nil {
			return "", fmt.Errorf("create API key: %w", err)
		}
		keyID = aws.ToString(out.Id)
		ch.add("create-api-key")
		_, err = d.apigw.CreateUsagePlanKey(ctx, &apigateway.CreateUsagePlanKeyInput{
			UsagePlanId: aws.String(planID), KeyId: aws.String(keyID), KeyType: aws.String("API_KEY"),
		})
		var conflict *agtypes.ConflictException
		switch {
		case err == nil:
			ch.add("create-usage-plan-key")
		case errors.As(err, &conflict):
		default:
			return "", fmt.Errorf("add the key to usage plan %s: %w", planID, err)
		}
	}
	key, err := d.apigw.GetApiKey(ctx, &apigateway.GetApiKeyInput{ApiKey: aws.String(keyID), IncludeValue: aws.Bool(true)})
	if err != nil {
		return "", fmt.Errorf("read API key %s: %w", keyID, err)
	}
	if !key.Enabled {
		_, err := d.apigw.UpdateApiKey(ctx, &apigateway.UpdateApiKeyInput{
			ApiKey:          aws.String(keyID),
			PatchOperations: []agtypes.PatchOperation{{Op: agtypes.OpReplace, Path: aws.String("/enabled"), Value: aws.String("true")}},
		})
		if err != nil {
			return "", fmt.Errorf("enable API key: %w", err)
		}
		ch.add("enable-api-key")
	}
	return aws.ToString(key.Value), nil
}

// planKey returns the id of the key named keyName in the usage plan, or "".
func (d *Deployer) planKey(ctx context.Context, planID string) (string, error) {
	p := apigateway.NewGetUsagePlanKeysPaginator(d.apigw, &apigateway.GetUsagePlanKeysInput{
		UsagePlanId: aws.String(planID), Limit: aws.Int32(500),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("list keys of usage plan %s: %w", planID, err)
		}
		for _, k := range page.Items {
			if aws.ToString(k.Name) == d.keyName() {
				return aws.ToString(k.Id), nil
			}
		}
	}
	return "", nil
}

// ManagedTag marks what Spillway creates in API Gateway; iam-policy.json
// lets lb change only resources that carry it.
const ManagedTag, ManagedValue = "spillway:managed", "true"

func managedTags() map[string]string { return map[string]string{ManagedTag: ManagedValue} }

// ensurePlan finds or creates the usage plan and makes it cover the stage
// with the configured throttle. It returns the plan id.
func (d *Deployer) ensurePlan(ctx context.Context, apiID string, ch *changes) (string, error) {
	throttle := &agtypes.ThrottleSettings{RateLimit: d.cfg.ThrottleRPS, BurstLimit: d.cfg.ThrottleBurst}
	var plan *agtypes.UsagePlan
	p := apigateway.NewGetUsagePlansPaginator(d.apigw, &apigateway.GetUsagePlansInput{Limit: aws.Int32(500)})
	for p.HasMorePages() && plan == nil {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("list usage plans: %w", err)
		}
		for i := range page.Items {
			if aws.ToString(page.Items[i].Name) == d.planName() {
				plan = &page.Items[i]
				break
			}
		}
	}
	if plan == nil {
		out, err := d.apigw.CreateUsagePlan(ctx, &apigateway.CreateUsagePlanInput{
			Name:        aws.String(d.planName()),
			Description: aws.String("Spillway offload throttle for " + d.cfg.APIName),
			ApiStages:   []agtypes.ApiStage{{ApiId: aws.String(apiID), Stage: aws.String(d.cfg.Stage)}},
			Throttle:    throttle,
			Tags:        managedTags(),
		})
		if err != nil {
			return "", fmt.Errorf("create usage plan: %w", err)
		}
		ch.add("create-usage-plan")
		return aws.ToString(out.Id), nil
	}

	var patch []agtypes.PatchOperation
	staged := false
	for _, s := range plan.ApiStages {
		if aws.ToString(s.ApiId) == apiID && aws.ToString(s.Stage) == d.cfg.Stage {
			staged = true
		}
	}
	if !staged {
		patch = append(patch, agtypes.PatchOperation{Op: agtypes.OpAdd, Path: aws.String("/apiStages"), Value: aws.String(apiID + ":" + d.cfg.Stage)})
	}
	if t := plan.Throttle; t == nil || t.RateLimit != throttle.RateLimit || t.BurstLimit != throttle.BurstLimit {
		patch = append(patch,
			agtypes.PatchOperation{Op: agtypes.OpReplace, Path: aws.String("/throttle/rateLimit"), Value: aws.String(fmt.Sprint(throttle.RateLimit))},
			agtypes.PatchOperation{Op: agtypes.OpReplace, Path: aws.String("/throttle/burstLimit"), Value: aws.String(fmt.Sprint(throttle.BurstLimit))})
	}
	if len(patch) > 0 {
		if _, err := d.apigw.UpdateUsagePlan(ctx, &apigateway.UpdateUsagePlanInput{UsagePlanId: plan.Id, PatchOperations: patch}); err != nil {
			return "", fmt.Errorf("update usage plan %s: %w", aws.ToString(plan.Id), err)
		}
		ch.add("update-usage-plan")
	}
	return aws.ToString(plan.Id), nil
}

// ---- removal ----

// Remove deletes what Deploy created for this deployer's function: the API
// key and the usage plan named after APIName (the plan's stages are taken
// off it first: API Gateway deletes no plan that covers one), every REST
// API named APIName, and the Lambda LambdaName. It is idempotent: what is
// absent already is skipped, so a Remove cut short is finished by the next.
// With CLOUD=off there is nothing to remove.
func (d *Deployer) Remove(ctx context.Context) error {
	if !d.Enabled() {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	var ch changes
	if err := d.removePlans(ctx, &ch); err != nil {
		return fmt.Errorf("remove %s: API key and usage plan: %w", d.cfg.APIName, err)
	}
	if err := d.removeAPIs(ctx, &ch); err != nil {
		return fmt.Errorf("remove %s: REST API: %w", d.cfg.APIName, err)
	}
	_, err := d.lambda.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String(d.cfg.LambdaName)})
	var nf *ltypes.ResourceNotFoundException
	switch {
	case err == nil:
		ch.add("delete-function")
	case errors.As(err, &nf):
	default:
		return fmt.Errorf("remove %s: delete Lambda %s: %w", d.cfg.APIName, d.cfg.LambdaName, err)
	}
	d.log.Info("cloud removed", "function", d.cfg.LambdaName, "api", d.cfg.APIName,
		"changes", strings.Join(ch, ","), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// removePlans deletes every usage plan named planName, with the key named
// keyName in it. The key is found through the plan, as ensureKey finds it.
func (d *Deployer) removePlans(ctx context.Context, ch *changes) error {
	var plans []agtypes.UsagePlan
	p := apigateway.NewGetUsagePlansPaginator(d.apigw, &apigateway.GetUsagePlansInput{Limit: aws.Int32(500)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list usage plans: %w", err)
		}
		for _, pl := range page.Items {
			if aws.ToString(pl.Name) == d.planName() {
				plans = append(plans, pl)
			}
		}
	}
	var nf *agtypes.NotFoundException
	for _, pl := range plans {
		planID := aws.ToString(pl.Id)
		keyID, err := d.planKey(ctx, planID)
		if err != nil && !errors.As(err, &nf) {
			return err
		}
		if keyID != "" {
			_, err := d.apigw.DeleteApiKey(ctx, &apigateway.DeleteApiKeyInput{ApiKey: aws.String(keyID)})
			switch {
			case err == nil:
				ch.add("delete-api-key")
			case errors.As(err, &nf):
			default:
				return fmt.Errorf("delete API key %s: %w", keyID, err)
			}
		}
		var patch []agtypes.PatchOperation
		for _, s := range pl.ApiStages {
			patch = append(patch, agtypes.PatchOperation{Op: agtypes.OpRemove, Path: aws.String("/apiStages"),
				Value: aws.String(aws.ToString(s.ApiId) + ":" + aws.ToString(s.Stage))})
		}
		if len(patch) > 0 {
			_, err := d.apigw.UpdateUsagePlan(ctx, &apigateway.UpdateUsagePlanInput{UsagePlanId: pl.Id, PatchOperations: patch})
			if err != nil && !errors.As(err, &nf) {
				return fmt.Errorf("take the stages off usage plan %s: %w", planID, err)
			}
		}
		_, err = d.apigw.DeleteUsagePlan(ctx, &apigateway.DeleteUsagePlanInput{UsagePlanId: pl.Id})
		switch {
		case err == nil:
			ch.add("delete-usage-plan")
		case errors.As(err, &nf):
		default:
			return fmt.Errorf("delete usage plan %s: %w", planID, err)
		}
	}
	return nil
}

// removeAPIs deletes every REST API named APIName. API Gateway allows
// few DeleteRestApi calls (about one in 30s per account): a throttled
// delete is tried again until ctx ends.
func (d *Deployer) removeAPIs(ctx context.Context, ch *changes) error {
	var ids []string
	p := apigateway.NewGetRestApisPaginator(d.apigw, &apigateway.GetRestApisInput{Limit: aws.Int32(500)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list REST APIs: %w", err)
		}
		for _, a := range page.Items {
			if aws.ToString(a.Name) == d.cfg.APIName {
				ids = append(ids, aws.ToString(a.Id))
			}
		}
	}
	for _, id := range ids {
		for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
			_, err := d.apigw.DeleteRestApi(ctx, &apigateway.DeleteRestApiInput{RestApiId: aws.String(id)})
			var (
				nf        *agtypes.NotFoundException
				throttled *agtypes.TooManyRequestsException
			)
			if err == nil {
				ch.add("delete-rest-api")
				break
			}
			if errors.As(err, &nf) {
				break
			}
			if !errors.As(err, &throttled) {
				return fmt.Errorf("delete REST API %s: %w", id, err)
			}
			d.log.Info("cloud: REST API deletion throttled; trying again", "api", id, "in", wait)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("delete REST API %s: throttled until the deadline: %w", id, ctx.Err())
			case <-t.C:
			}
		}
	}
	return nil
}
