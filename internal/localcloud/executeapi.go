package localcloud

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// executeAPIPrefix is the path prefix execute-api answers on besides the
// {apiId}.execute-api.localhost host.
const executeAPIPrefix = "/_aws/execute-api/"

// maxGatewayPayload is API Gateway's request payload limit.
const maxGatewayPayload = 10 << 20

// executeAPIHost reports whether host names a REST API the way API
// Gateway's default endpoint does: {apiId}.execute-api.<anything>[:port],
// e.g. abc123.execute-api.localhost:4566.
func executeAPIHost(host string) (string, bool) {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	id, rest, ok := strings.Cut(h, ".")
	if !ok || id == "" || !strings.HasPrefix(rest, "execute-api.") {
		return "", false
	}
	return strings.ToLower(id), true
}

// gatewayError is one of API Gateway's own responses (not the function's).
type gatewayError struct {
	status  int
	errType string
	message string
}

var (
	gwForbidden    = &gatewayError{http.StatusForbidden, "ForbiddenException", "Forbidden"}
	gwMissingToken = &gatewayError{http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	gwThrottled    = &gatewayError{http.StatusTooManyRequests, "TooManyRequestsException", "Too Many Requests"}
	gwInternal     = &gatewayError{http.StatusInternalServerError, "InternalServerErrorException", "Internal server error"}
	gwBadGateway   = &gatewayError{http.StatusBadGateway, "InternalServerErrorException", "Internal server error"}
	gwTimeout      = &gatewayError{http.StatusGatewayTimeout, "InternalServerErrorException", "Endpoint request timed out"}
	gwTooLarge     = &gatewayError{http.StatusRequestEntityTooLarge, "RequestTooLargeException", "Request Too Long"}
)

func writeGatewayError(w http.ResponseWriter, reqID string, e *gatewayError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-amzn-RequestId", reqID)
	h.Set("x-amzn-ErrorType", e.errType)
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": e.message})
}

// route is what execute-api resolved a request to. The resource and method
// belong to an immutable deployment snapshot, so they are safe to read
// without the lock.
type route struct {
	apiID, stage string
	res          *resource
	method       *method
	pathParams   map[string]string
	stageVars    map[string]string
	apiKeyID     string
}

func (s *Server) serveExecuteAPI(w http.ResponseWriter, r *http.Request, apiID, path string) {
	reqID := newRequestID()
	stageName, rest, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	reqPath := "/" + rest
	s.gwMu.Lock()
	rt, gerr := s.routeLocked(r, apiID, stageName, reqPath)
	s.gwMu.Unlock()
	if gerr != nil {
		writeGatewayError(w, reqID, gerr)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxGatewayPayload+1))
	if err != nil {
		writeGatewayError(w, reqID, &gatewayError{http.StatusBadRequest, "BadRequestException", "could not read the request body"})
		return
	}
	if len(body) > maxGatewayPayload {
		writeGatewayError(w, reqID, gwTooLarge)
		return
	}
	integ := rt.method.Integration
	if integ == nil {
		writeGatewayError(w, reqID, gwInternal)
		return
	}
	w.Header().Set("x-amzn-RequestId", reqID)
	w.Header().Set("x-amz-apigw-id", newID(16))
	switch integ.Type {
	case "MOCK":
		s.serveMock(w, reqID, integ)
	case "AWS", "AWS_PROXY":
		s.serveLambda(w, r, reqID, rt, reqPath, body)
	default:
		writeGatewayError(w, reqID, gwInternal)
	}
}

// routeLocked finds the stage's deployed resource and method for the
// request and applies the API key and usage plan checks.
func (s *Server) routeLocked(r *http.Request, apiID, stageName, reqPath string) (*route, *gatewayError) {
	a, ok := s.gw.apis[apiID]
	if !ok || stageName == "" || a.DisableExecuteAPIEndpoint {
		return nil, gwForbidden
	}
	st, ok := a.stages[stageName]
	if !ok {
		return nil, gwForbidden
	}
	dep, ok := a.deployments[st.DeploymentID]
	if !ok {
		return nil, gwForbidden
	}
	res, params := matchResource(dep.snapshot, reqPath)
	if res == nil {
		return nil, gwMissingToken
	}
	m := res.Methods[r.Method]
	if m == nil {
		m = res.Methods["ANY"]
	}
	if m == nil {
		return nil, gwMissingToken
	}
	rt := &route{apiID: apiID, stage: stageName, res: res, method: m, pathParams: params, stageVars: st.Variables}
	if !m.APIKeyRequired {
		return rt, nil
	}
	k := s.gw.byValue[r.Header.Get("x-api-key")]
	if k == nil || !k.Enabled {
		return nil, gwForbidden
	}
	var plan *usagePlan
	for _, p := range s.gw.plans {
		if !slices.Contains(p.keys, k.ID) {
			continue
		}
		if slices.ContainsFunc(p.APIStages, func(as apiStage) bool { return as.APIID == apiID && as.Stage == stageName }) {
			plan = p
			break
		}
	}
	if plan == nil {
		return nil, gwForbidden
	}
	rt.apiKeyID = k.ID
	if t := plan.Throttle; t != nil && t.RateLimit > 0 {
		id := plan.ID + "/" + k.ID
		b := s.gw.buckets[id]
		if b == nil {
			burst := float64(max(t.BurstLimit, 1))
			b = &tokenBucket{rate: t.RateLimit, burst: burst, tokens: burst}
			s.gw.buckets[id] = b
		}
		if !b.take(s.cfg.Now()) {
			return nil, gwThrottled
		}
	}
	return rt, nil
}

// matchResource finds the resource whose path template matches reqPath:
// literal segments beat {param} segments, which beat a greedy {proxy+}.
func matchResource(resources map[string]*resource, reqPath string) (*resource, map[string]string) {
	segs := splitPath(reqPath)
	var best *resource
	var bestParams map[string]string
	bestScore := -1
	for _, res := range resources {
		params, score, ok := matchTemplate(splitPath(res.Path), segs)
		if ok && (score > bestScore || (score == bestScore && best != nil && res.Path < best.Path)) {
			best, bestParams, bestScore = res, params, score
		}
	}
	return best, bestParams
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// matchTemplate matches path segments against a resource template and
// scores the match (3 per literal, 2 per parameter, 1 for a greedy tail).
func matchTemplate(tmpl, segs []string) (map[string]string, int, bool) {
	params := map[string]string{}
	score := 0
	for i, t := range tmpl {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "+}") {
			if i != len(tmpl)-1 || i >= len(segs) {
				return nil, 0, false
			}
			params[t[1:len(t)-2]] = strings.Join(segs[i:], "/")
			return params, score + 1, true
		}
		if i >= len(segs) {
			return nil, 0, false
		}
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			params[t[1:len(t)-1]] = segs[i]
			score += 2
			continue
		}
		if t != segs[i] {
			return nil, 0, false
		}
		score += 3
	}
	if len(tmpl) != len(segs) {
		return nil, 0, false
	}
	return params, score, true
}

func (s *Server) serveMock(w http.ResponseWriter, reqID string, integ *integration) {
	ir := defaultIntegrationResponse(integ)
	if ir == nil {
		writeGatewayError(w, reqID, gwInternal)
		return
	}
	body := ir.ResponseTemplates["application/json"]
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(statusOf(ir.StatusCode))
	_, _ = io.WriteString(w, body)
}

func defaultIntegrationResponse(integ *integration) *integrationResponse {
	for _, code := range sortedKeys(integ.IntegrationResponses) {
		if ir := integ.IntegrationResponses[code]; ir.SelectionPattern == "" {
			return ir
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func statusOf(code string) int {
	var n int
	if _, err := fmt.Sscanf(code, "%d", &n); err != nil || n < 100 || n > 599 {
		return http.StatusOK
	}
	return n
}

// serveLambda runs a Lambda integration: the permission check (the
// integration's role, or else the function's resource policy), the
// invocation with the integration's timeout, and the AWS (non-proxy) or
// AWS_PROXY mapping of request and response.
func (s *Server) serveLambda(w http.ResponseWriter, r *http.Request, reqID string, rt *route, reqPath string, body []byte) {
	integ := rt.method.Integration
	fnARN := lambdaURIRE.FindStringSubmatch(integ.URI)[1]
	sourceARN := fmt.Sprintf("arn:aws:execute-api:%s:%s:%s/%s/%s/%s", s.cfg.Region, s.cfg.AccountID,
		rt.apiID, rt.stage, r.Method, strings.TrimPrefix(rt.res.Path, "/"))
	s.mu.Lock()
	f, err := s.lookupLocked(fnARN)
	// With credentials, API Gateway calls Lambda as the role it assumes, as
	// on AWS: no resource-based permission is needed (localcloud has no IAM
	// to check the role against). Without, the function's policy must allow
	// apigateway.amazonaws.com for this source ARN.
	permitted := err == nil && (integ.Credentials != "" || s.permitsLocked(f, "apigateway.amazonaws.com", sourceARN))
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("localcloud: execute-api integration names a missing function", "api", rt.apiID, "function", fnARN)
		writeGatewayError(w, reqID, gwInternal)
		return
	}
	if !permitted {
		s.log.Warn("localcloud: execution failed due to configuration error: Invalid permissions on Lambda function (add a lambda:InvokeFunction permission for apigateway.amazonaws.com)",
			"api", rt.apiID, "function", fnARN, "source_arn", sourceARN)
		writeGatewayError(w, reqID, gwInternal)
		return
	}

	proxy := integ.Type == "AWS_PROXY"
	var payload []byte
	if proxy {
		payload, err = json.Marshal(s.proxyEvent(r, reqID, rt, reqPath, body))
		if err != nil {
			writeGatewayError(w, reqID, gwInternal)
			return
		}
	} else {
		payload = body
		if len(strings.TrimSpace(string(payload))) == 0 {
			payload = []byte("{}")
		}
		if !json.Valid(payload) {
			writeGatewayError(w, reqID, &gatewayError{http.StatusBadRequest, "BadRequestException",
				"Could not parse request body into json: the AWS integration passes the body to Lambda as the event"})
			return
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(integ.TimeoutInMillis)*time.Millisecond)
	defer cancel()
	res, err := s.invoke(ctx, invokeRequest{function: fnARN, payload: payload})
	if err != nil {
		var ae *apiError
		switch {
		case r.Context().Err() != nil:
			return // the caller is gone
		case ctx.Err() != nil:
			writeGatewayError(w, reqID, gwTimeout)
		case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
			writeGatewayError(w, reqID, gwThrottled)
		default:
			s.log.Warn("localcloud: execute-api invocation failed", "api", rt.apiID, "function", fnARN, "err", err)
			writeGatewayError(w, reqID, gwInternal)
		}
		return
	}
	if proxy {
		writeProxyResponse(w, reqID, res)
		return
	}

	ir := selectIntegrationResponse(integ, res)
	if ir == nil {
		s.log.Warn("localcloud: execution failed due to configuration error: No match for output mapping and no default output mapping configured",
			"api", rt.apiID, "resource", rt.res.Path)
		writeGatewayError(w, reqID, gwInternal)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(statusOf(ir.StatusCode))
	_, _ = w.Write(res.payload)
}

// selectIntegrationResponse picks the integration response for a Lambda
// result: for a function error, the one whose selectionPattern matches the
// errorMessage; otherwise (or when none matches) the default one.
func selectIntegrationResponse(integ *integration, res invokeResult) *integrationResponse {
	if res.funcErr != "" {
		var e struct {
			ErrorMessage string `json:"errorMessage"`
		}
		_ = json.Unmarshal(res.payload, &e)
		for _, code := range sortedKeys(integ.IntegrationResponses) {
			ir := integ.IntegrationResponses[code]
			if ir.SelectionPattern == "" {
				continue
			}
			re, err := regexp.Compile("^(?:" + ir.SelectionPattern + ")$")
			if err == nil && re.MatchString(e.ErrorMessage) {
				return ir
			}
		}
	}
	return defaultIntegrationResponse(integ)
}

// proxyEvent is the Lambda proxy integration (payload format 1.0) event.
func (s *Server) proxyEvent(r *http.Request, reqID string, rt *route, reqPath string, body []byte) map[string]any {
	var headers map[string]string
	var mvHeaders map[string][]string
	if len(r.Header) > 0 {
		headers, mvHeaders = map[string]string{}, map[string][]string{}
		for k, v := range r.Header {
			headers[k] = v[len(v)-1]
			mvHeaders[k] = v
		}
	}
	var query map[string]string
	var mvQuery map[string][]string
	if q := r.URL.Query(); len(q) > 0 {
		query, mvQuery = map[string]string{}, map[string][]string{}
		for k, v := range q {
			query[k] = v[len(v)-1]
			mvQuery[k] = v
		}
	}
	var pathParams map[string]string
	if len(rt.pathParams) > 0 {
		pathParams = rt.pathParams
	}
	var stageVars map[string]string
	if len(rt.stageVars) > 0 {
		stageVars = rt.stageVars
	}
	var bodyVal any
	b64 := false
	if len(body) > 0 {
		if utf8.Valid(body) {
			bodyVal = string(body)
		} else {
			bodyVal, b64 = base64.StdEncoding.EncodeToString(body), true
		}
	}
	now := s.cfg.Now()
	sourceIP, _, _ := net.SplitHostPort(r.RemoteAddr)
	return map[string]any{
		"resource":                        rt.res.Path,
		"path":                            reqPath,
		"httpMethod":                      r.Method,
		"headers":                         headers,
		"multiValueHeaders":               mvHeaders,
		"queryStringParameters":           query,
		"multiValueQueryStringParameters": mvQuery,
		"pathParameters":                  pathParams,
		"stageVariables":                  stageVars,
		"requestContext": map[string]any{
			"accountId":         s.cfg.AccountID,
			"apiId":             rt.apiID,
			"resourceId":        rt.res.ID,
			"resourcePath":      rt.res.Path,
			"stage":             rt.stage,
			"requestId":         reqID,
			"extendedRequestId": reqID,
			"httpMethod":        r.Method,
			"path":              "/" + rt.stage + reqPath,
			"protocol":          r.Proto,
			"requestTime":       now.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			"requestTimeEpoch":  now.UnixMilli(),
			"domainName":        r.Host,
			"identity": map[string]any{
				"sourceIp":  sourceIP,
				"userAgent": r.UserAgent(),
				"apiKey":    r.Header.Get("x-api-key"),
				"apiKeyId":  rt.apiKeyID,
			},
		},
		"body":            bodyVal,
		"isBase64Encoded": b64,
	}
}

// writeProxyResponse maps a Lambda proxy response to HTTP; anything
// malformed, and any function error, is API Gateway's 502.
func writeProxyResponse(w http.ResponseWriter, reqID string, res invokeResult) {
	if res.funcErr != "" {
		writeGatewayError(w, reqID, gwBadGateway)
		return
	}
	var pr struct {
		StatusCode        int                 `json:"statusCode"`
		Headers           map[string]string   `json:"headers"`
		MultiValueHeaders map[string][]string `json:"multiValueHeaders"`
		Body              *string             `json:"body"`
		IsBase64Encoded   bool                `json:"isBase64Encoded"`
	}
	if err := json.Unmarshal(res.payload, &pr); err != nil || pr.StatusCode < 100 || pr.StatusCode > 599 {
		writeGatewayError(w, reqID, gwBadGateway)
		return
	}
	var body []byte
	if pr.Body != nil {
		body = []byte(*pr.Body)
		if pr.IsBase64Encoded {
			b, err := base64.StdEncoding.DecodeString(*pr.Body)
			if err != nil {
				writeGatewayError(w, reqID, gwBadGateway)
				return
			}
			body = b
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	for k, vs := range pr.MultiValueHeaders {
		h.Del(k)
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	for k, v := range pr.Headers {
		h.Set(k, v)
	}
	w.WriteHeader(pr.StatusCode)
	_, _ = w.Write(body)
}
