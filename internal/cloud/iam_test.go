package cloud

import (
	"encoding/json"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// iamNeeds maps every SDK operation this package calls to the IAM action and
// resource it needs (API Gateway authorises by HTTP method and path).
var iamNeeds = map[string]struct{ action, resource string }{
	"GetFunction":                 {"lambda:GetFunction", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas"},
	"CreateFunction":              {"lambda:CreateFunction", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas"},
	"UpdateFunctionCode":          {"lambda:UpdateFunctionCode", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas"},
	"UpdateFunctionConfiguration": {"lambda:UpdateFunctionConfiguration", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas"},
	"AddPermission":               {"lambda:AddPermission", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas"},
	"Invoke":                      {"lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas"},
	"GetRestApis":                 {"apigateway:GET", "arn:aws:apigateway:us-east-1::/restapis"},
	"CreateRestApi":               {"apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis"},
	"GetResources":                {"apigateway:GET", "arn:aws:apigateway:us-east-1::/restapis/a1/resources"},
	"CreateResource":              {"apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r0"},
	"PutMethod":                   {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY"},
	"UpdateMethod":                {"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY"},
	"PutMethodResponse":           {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY/responses/200"},
	"PutIntegration":              {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY/integration"},
	"PutIntegrationResponse":      {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY/integration/responses/200"},
	"GetStages":                   {"apigateway:GET", "arn:aws:apigateway:us-east-1::/restapis/a1/stages"},
	"CreateDeployment":            {"apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/a1/deployments"},
	"GetApiKeys":                  {"apigateway:GET", "arn:aws:apigateway:us-east-1::/apikeys"},
	"GetApiKey":                   {"apigateway:GET", "arn:aws:apigateway:us-east-1::/apikeys/k1"},
	"CreateApiKey":                {"apigateway:POST", "arn:aws:apigateway:us-east-1::/apikeys"},
	"UpdateApiKey":                {"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/apikeys/k1"},
	"GetUsagePlans":               {"apigateway:GET", "arn:aws:apigateway:us-east-1::/usageplans"},
	"CreateUsagePlan":             {"apigateway:POST", "arn:aws:apigateway:us-east-1::/usageplans"},
	"UpdateUsagePlan":             {"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/usageplans/p1"},
	"GetUsagePlanKeys":            {"apigateway:GET", "arn:aws:apigateway:us-east-1::/usageplans/p1/keys"},
	"CreateUsagePlanKey":          {"apigateway:POST", "arn:aws:apigateway:us-east-1::/usageplans/p1/keys"},
}

type policyDoc struct {
	Statement []struct {
		Effect   string
		Action   stringOrList
		Resource stringOrList
	}
}

type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = []string{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(s))
}

// allows reports whether doc grants action on resource (IAM globs: * matches
// any run of characters, including /).
func (d policyDoc) allows(action, resource string) bool {
	for _, st := range d.Statement {
		if st.Effect != "Allow" {
			continue
		}
		if slices.ContainsFunc(st.Action, func(p string) bool { return glob(p, action) }) &&
			slices.ContainsFunc(st.Resource, func(p string) bool { return glob(p, resource) }) {
			return true
		}
	}
	return false
}

func glob(pattern, s string) bool {
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$"
	return regexp.MustCompile(re).MatchString(s)
}

// TestIAMPolicyCoversExactlyTheCalls reads this package's sources for every
// Lambda and API Gateway operation it calls, and checks iam-policy.json
// grants each one and nothing is listed that is never called.
func TestIAMPolicyCoversExactlyTheCalls(t *testing.T) {
	raw, err := os.ReadFile("iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc policyDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("iam-policy.json: %v", err)
	}
	calls := regexp.MustCompile(`\b(?:lambda|apigw)\.([A-Z][A-Za-z]+)\(|New(Get[A-Za-z]+)Paginator\(`)
	used := map[string]bool{}
	for _, f := range []string{"deploy.go", "offload.go"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range calls.FindAllStringSubmatch(string(src), -1) {
			op := m[1] + m[2]
			if op == "NewFromConfig" {
				continue
			}
			used[op] = true
		}
	}
	for op := range used {
		need, ok := iamNeeds[op]
		if !ok {
			t.Errorf("%s is called but has no IAM mapping in iamNeeds", op)
			continue
		}
		if !doc.allows(need.action, need.resource) {
			t.Errorf("iam-policy.json does not allow %s on %s (needed by %s)", need.action, need.resource, op)
		}
	}
	for op := range iamNeeds {
		if !used[op] {
			t.Errorf("iamNeeds lists %s, which the code never calls", op)
		}
	}
	// Least privilege: no wildcard actions, no Resource "*".
	for _, st := range doc.Statement {
		for _, a := range st.Action {
			if strings.Contains(a, "*") {
				t.Errorf("wildcard action %q", a)
			}
		}
		for _, r := range st.Resource {
			if r == "*" || path.Base(r) == "*" && strings.Count(r, "/") <= 1 && strings.HasPrefix(r, "arn:aws:apigateway") {
				t.Errorf("over-broad resource %q", r)
			}
		}
	}
	for _, f := range []string{"lambda-trust-policy.json", "lambda-execution-policy.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d policyDoc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
