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

// Request contexts: what the call carries (tags on a create) or what the
// resource it touches carries (the tag Spillway sets on what it creates).
var (
	untagged  = map[string]string{}
	createTag = map[string]string{"aws:RequestTag/" + ManagedTag: ManagedValue, "aws:TagKeys": ManagedTag}
	managed   = map[string]string{"aws:ResourceTag/" + ManagedTag: ManagedValue}
)

// iamNeeds maps every SDK operation this package calls to the IAM action and
// resource it needs (API Gateway authorises by HTTP method and path), with
// the context it is made in.
var iamNeeds = map[string]struct {
	action, resource string
	ctx              map[string]string
}{
	"GetFunction":                 {"lambda:GetFunction", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas", untagged},
	"CreateFunction":              {"lambda:CreateFunction", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas", untagged},
	"UpdateFunctionCode":          {"lambda:UpdateFunctionCode", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas", untagged},
	"UpdateFunctionConfiguration": {"lambda:UpdateFunctionConfiguration", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas", untagged},
	"AddPermission":               {"lambda:AddPermission", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas", untagged},
	"Invoke":                      {"lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:spillway-faas", untagged},
	"DeleteFunction":              {"lambda:DeleteFunction", "arn:aws:lambda:us-east-1:123456789012:function:spillway-hello", untagged},
	"DeleteRestApi":               {"apigateway:DELETE", "arn:aws:apigateway:us-east-1::/restapis/a1", managed},
	"DeleteApiKey":                {"apigateway:DELETE", "arn:aws:apigateway:us-east-1::/apikeys/k1", managed},
	"DeleteUsagePlan":             {"apigateway:DELETE", "arn:aws:apigateway:us-east-1::/usageplans/p1", managed},
	"GetRestApis":                 {"apigateway:GET", "arn:aws:apigateway:us-east-1::/restapis", untagged},
	"CreateRestApi":               {"apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis", createTag},
	"GetResources":                {"apigateway:GET", "arn:aws:apigateway:us-east-1::/restapis/a1/resources", managed},
	"CreateResource":              {"apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r0", managed},
	"PutMethod":                   {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY", managed},
	"UpdateMethod":                {"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY", managed},
	"PutMethodResponse":           {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY/responses/200", managed},
	"PutIntegration":              {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY/integration", managed},
	"PutIntegrationResponse":      {"apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/ANY/integration/responses/200", managed},
	"GetStages":                   {"apigateway:GET", "arn:aws:apigateway:us-east-1::/restapis/a1/stages", managed},
	"CreateDeployment":            {"apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/a1/deployments", managed},
	"GetApiKey":                   {"apigateway:GET", "arn:aws:apigateway:us-east-1::/apikeys/k1", managed},
	"CreateApiKey":                {"apigateway:POST", "arn:aws:apigateway:us-east-1::/apikeys", createTag},
	"UpdateApiKey":                {"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/apikeys/k1", managed},
	"GetUsagePlans":               {"apigateway:GET", "arn:aws:apigateway:us-east-1::/usageplans", untagged},
	"CreateUsagePlan":             {"apigateway:POST", "arn:aws:apigateway:us-east-1::/usageplans", createTag},
	"UpdateUsagePlan":             {"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/usageplans/p1", managed},
	"GetUsagePlanKeys":            {"apigateway:GET", "arn:aws:apigateway:us-east-1::/usageplans/p1/keys", managed},
	"CreateUsagePlanKey":          {"apigateway:POST", "arn:aws:apigateway:us-east-1::/usageplans/p1/keys", managed},
}

// iamRefused is what the policy must not grant: reading every API key's
// value (the list call), and reading or changing any API Gateway resource
// Spillway did not tag, or tagging one so that it would.
var iamRefused = []struct {
	what, action, resource string
	ctx                    map[string]string
}{
	{"list every API key with its value", "apigateway:GET", "arn:aws:apigateway:us-east-1::/apikeys", managed},
	{"read another API key's value", "apigateway:GET", "arn:aws:apigateway:us-east-1::/apikeys/other", untagged},
	{"patch another API key", "apigateway:PATCH", "arn:aws:apigateway:us-east-1::/apikeys/other", untagged},
	{"patch another usage plan", "apigateway:PATCH", "arn:aws:apigateway:us-east-1::/usageplans/other", untagged},
	{"patch another API's method", "apigateway:PATCH", "arn:aws:apigateway:us-east-1::/restapis/other/resources/r1/methods/ANY", untagged},
	{"patch a method other than ANY", "apigateway:PATCH", "arn:aws:apigateway:us-east-1::/restapis/a1/resources/r1/methods/GET", managed},
	{"put an integration into another API", "apigateway:PUT", "arn:aws:apigateway:us-east-1::/restapis/other/resources/r1/methods/ANY/integration", untagged},
	{"deploy another API", "apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/other/deployments", untagged},
	{"add a key to another usage plan", "apigateway:POST", "arn:aws:apigateway:us-east-1::/usageplans/other/keys", untagged},
	{"create an untagged API", "apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis", untagged},
	{"create with other tags too", "apigateway:POST", "arn:aws:apigateway:us-east-1::/apikeys",
		map[string]string{"aws:RequestTag/" + ManagedTag: ManagedValue, "aws:TagKeys": "owner"}},
	{"tag a resource as managed", "apigateway:PUT", "arn:aws:apigateway:us-east-1::/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Fapikeys%2Fother", createTag},
	{"tag a resource as managed (POST)", "apigateway:POST", "arn:aws:apigateway:us-east-1::/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Fapikeys%2Fother", createTag},
	{"delete another API", "apigateway:DELETE", "arn:aws:apigateway:us-east-1::/restapis/other", untagged},
	{"delete another API key", "apigateway:DELETE", "arn:aws:apigateway:us-east-1::/apikeys/other", untagged},
	{"delete another usage plan", "apigateway:DELETE", "arn:aws:apigateway:us-east-1::/usageplans/other", untagged},
	{"delete another function", "lambda:DeleteFunction", "arn:aws:lambda:us-east-1:123456789012:function:payroll", untagged},
	{"invoke another function", "lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:payroll", untagged},
	{"pass another role", "iam:PassRole", "arn:aws:iam::123456789012:role/admin", untagged},
}

type policyDoc struct {
	Statement []struct {
		Effect    string
		Action    stringOrList
		Resource  stringOrList
		Condition map[string]map[string]stringOrList
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

// allows reports whether doc grants action on resource in the request
// context ctx (IAM globs: * matches any run of characters, including /).
// Conditions are the operators this policy uses: StringEquals on a key of
// ctx, and ForAllValues:StringEquals on aws:TagKeys (a comma list in ctx).
// A key absent from ctx fails its condition, as in IAM.
func (d policyDoc) allows(action, resource string, ctx map[string]string) bool {
	for _, st := range d.Statement {
		if st.Effect != "Allow" {
			continue
		}
		if slices.ContainsFunc(st.Action, func(p string) bool { return glob(p, action) }) &&
			slices.ContainsFunc(st.Resource, func(p string) bool { return glob(p, resource) }) &&
			conditionsHold(st.Condition, ctx) {
			return true
		}
	}
	return false
}

func conditionsHold(cond map[string]map[string]stringOrList, ctx map[string]string) bool {
	for op, kv := range cond {
		for key, want := range kv {
			got, ok := ctx[key]
			switch op {
			case "StringEquals":
				if !ok || !slices.Contains(want, got) {
					return false
				}
			case "ForAllValues:StringEquals":
				for _, v := range strings.Split(got, ",") {
					if ok && !slices.Contains(want, v) {
						return false
					}
				}
			default:
				return false // an operator this checker does not know grants nothing here
			}
		}
	}
	return true
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
		if !doc.allows(need.action, need.resource, need.ctx) {
			t.Errorf("iam-policy.json does not allow %s on %s with %v (needed by %s)", need.action, need.resource, need.ctx, op)
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

// TestIAMPolicyRefusesWhatTheReadmeDoesNotClaim: the policy grants no
// reading of API keys' values beyond Spillway's own key and no change to
// any resource Spillway did not tag. Protection off: the same requests on
// resources that carry the tag are granted, so each refusal comes from the
// tag condition (or the action never being granted at all).
func TestIAMPolicyRefusesWhatTheReadmeDoesNotClaim(t *testing.T) {
	raw, err := os.ReadFile("iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc policyDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, r := range iamRefused {
		if doc.allows(r.action, r.resource, r.ctx) {
			t.Errorf("%s: %s on %s is granted", r.what, r.action, r.resource)
		}
	}
	for _, r := range []struct{ action, resource string }{
		{"apigateway:GET", "arn:aws:apigateway:us-east-1::/apikeys/other"},
		{"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/apikeys/other"},
		{"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/usageplans/other"},
		{"apigateway:PATCH", "arn:aws:apigateway:us-east-1::/restapis/other/resources/r1/methods/ANY"},
		{"apigateway:POST", "arn:aws:apigateway:us-east-1::/restapis/other/deployments"},
		{"apigateway:DELETE", "arn:aws:apigateway:us-east-1::/restapis/other"},
		{"apigateway:DELETE", "arn:aws:apigateway:us-east-1::/apikeys/other"},
		{"apigateway:DELETE", "arn:aws:apigateway:us-east-1::/usageplans/other"},
	} {
		if !doc.allows(r.action, r.resource, managed) {
			t.Errorf("protection off: %s on %s is refused even when tagged; the refusal above proves nothing", r.action, r.resource)
		}
	}
}
