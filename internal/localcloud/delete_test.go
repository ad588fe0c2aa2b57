package localcloud_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigateway"
	agtypes "github.com/aws/aws-sdk-go-v2/service/apigateway/types"

	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/localcloud/localcloudtest"
)

// TestDeleteGatewayResources: the deletions a removed function needs answer
// as API Gateway does, through the real SDK: a usage plan that still covers
// a stage is refused until the stage is taken off it; a deleted key leaves
// its plan; each delete of something absent is NotFoundException.
func TestDeleteGatewayResources(t *testing.T) {
	cloud := localcloudtest.Start(t, localcloud.Config{})
	gw := cloud.APIGateway()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	api, err := gw.CreateRestApi(ctx, &apigateway.CreateRestApiInput{Name: aws.String("del-api")})
	if err != nil {
		t.Fatalf("CreateRestApi: %v", err)
	}
	if _, err := gw.PutMethod(ctx, &apigateway.PutMethodInput{RestApiId: api.Id, ResourceId: api.RootResourceId,
		HttpMethod: aws.String("ANY"), AuthorizationType: aws.String("NONE"), ApiKeyRequired: true}); err != nil {
		t.Fatalf("PutMethod: %v", err)
	}
	if _, err := gw.PutIntegration(ctx, &apigateway.PutIntegrationInput{RestApiId: api.Id, ResourceId: api.RootResourceId,
		HttpMethod: aws.String("ANY"), Type: agtypes.IntegrationTypeMock}); err != nil {
		t.Fatalf("PutIntegration: %v", err)
	}
	if _, err := gw.CreateDeployment(ctx, &apigateway.CreateDeploymentInput{RestApiId: api.Id, StageName: aws.String("dev")}); err != nil {
		t.Fatalf("CreateDeployment: %v", err)
	}
	key, err := gw.CreateApiKey(ctx, &apigateway.CreateApiKeyInput{Name: aws.String("del-key"), Enabled: true})
	if err != nil {
		t.Fatalf("CreateApiKey: %v", err)
	}
	plan, err := gw.CreateUsagePlan(ctx, &apigateway.CreateUsagePlanInput{Name: aws.String("del-plan"),
		ApiStages: []agtypes.ApiStage{{ApiId: api.Id, Stage: aws.String("dev")}}})
	if err != nil {
		t.Fatalf("CreateUsagePlan: %v", err)
	}
	if _, err := gw.CreateUsagePlanKey(ctx, &apigateway.CreateUsagePlanKeyInput{UsagePlanId: plan.Id, KeyId: key.Id,
		KeyType: aws.String("API_KEY")}); err != nil {
		t.Fatalf("CreateUsagePlanKey: %v", err)
	}

	var bad *agtypes.BadRequestException
	var nf *agtypes.NotFoundException

	// A plan with a stage cannot go.
	if _, err := gw.DeleteUsagePlan(ctx, &apigateway.DeleteUsagePlanInput{UsagePlanId: plan.Id}); !errors.As(err, &bad) {
		t.Fatalf("DeleteUsagePlan with a stage = %v, want BadRequestException", err)
	}

	// The key leaves the plan with its deletion; again is NotFound.
	if _, err := gw.DeleteApiKey(ctx, &apigateway.DeleteApiKeyInput{ApiKey: key.Id}); err != nil {
		t.Fatalf("DeleteApiKey: %v", err)
	}
	keys, err := gw.GetUsagePlanKeys(ctx, &apigateway.GetUsagePlanKeysInput{UsagePlanId: plan.Id})
	if err != nil || len(keys.Items) != 0 {
		t.Fatalf("plan keys after DeleteApiKey = %+v, %v; want none", keys, err)
	}
	if _, err := gw.DeleteApiKey(ctx, &apigateway.DeleteApiKeyInput{ApiKey: key.Id}); !errors.As(err, &nf) {
		t.Fatalf("second DeleteApiKey = %v, want NotFoundException", err)
	}

	// Off the stage, the plan goes; again is NotFound.
	if _, err := gw.UpdateUsagePlan(ctx, &apigateway.UpdateUsagePlanInput{UsagePlanId: plan.Id,
		PatchOperations: []agtypes.PatchOperation{{Op: agtypes.OpRemove, Path: aws.String("/apiStages"), Value: aws.String(aws.ToString(api.Id) + ":dev")}}}); err != nil {
		t.Fatalf("remove the stage from the plan: %v", err)
	}
	if _, err := gw.DeleteUsagePlan(ctx, &apigateway.DeleteUsagePlanInput{UsagePlanId: plan.Id}); err != nil {
		t.Fatalf("DeleteUsagePlan without stages: %v", err)
	}
	if _, err := gw.DeleteUsagePlan(ctx, &apigateway.DeleteUsagePlanInput{UsagePlanId: plan.Id}); !errors.As(err, &nf) {
		t.Fatalf("second DeleteUsagePlan = %v, want NotFoundException", err)
	}
	plans, err := gw.GetUsagePlans(ctx, &apigateway.GetUsagePlansInput{})
	if err != nil || len(plans.Items) != 0 {
		t.Fatalf("GetUsagePlans after delete = %+v, %v", plans, err)
	}

	// The REST API goes; again is NotFound.
	if _, err := gw.DeleteRestApi(ctx, &apigateway.DeleteRestApiInput{RestApiId: api.Id}); err != nil {
		t.Fatalf("DeleteRestApi: %v", err)
	}
	if _, err := gw.DeleteRestApi(ctx, &apigateway.DeleteRestApiInput{RestApiId: api.Id}); !errors.As(err, &nf) {
		t.Fatalf("second DeleteRestApi = %v, want NotFoundException", err)
	}
	apis, err := gw.GetRestApis(ctx, &apigateway.GetRestApisInput{})
	if err != nil || slices.ContainsFunc(apis.Items, func(a agtypes.RestApi) bool { return aws.ToString(a.Id) == aws.ToString(api.Id) }) {
		t.Fatalf("GetRestApis after delete = %+v, %v", apis, err)
	}
}
