package localcloud

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ---- API Gateway state. Wire structs double as the stored records; fields
// tagged "-" are localcloud's own. Everything is guarded by Server.gwMu. ----

type restAPI struct {
	ID                        string                 `json:"id"`
	Name                      string                 `json:"name"`
	Description               string                 `json:"description,omitempty"`
	CreatedDate               int64                  `json:"createdDate"`
	Version                   string                 `json:"version,omitempty"`
	APIKeySource              string                 `json:"apiKeySource"`
	EndpointConfiguration     *endpointConfiguration `json:"endpointConfiguration"`
	RootResourceID            string                 `json:"rootResourceId"`
	DisableExecuteAPIEndpoint bool                   `json:"disableExecuteApiEndpoint"`
	BinaryMediaTypes          []string               `json:"binaryMediaTypes,omitempty"`
	Tags                      map[string]string      `json:"tags,omitempty"`

	seq         int
	resources   map[string]*resource
	deployments map[string]*deployment
	stages      map[string]*stage
}

type endpointConfiguration struct {
	Types          []string `json:"types"`
	IPAddressType  string   `json:"ipAddressType,omitempty"`
	VpcEndpointIDs []string `json:"vpcEndpointIds,omitempty"`
}

type resource struct {
	ID       string             `json:"id"`
	ParentID string             `json:"parentId,omitempty"`
	PathPart string             `json:"pathPart,omitempty"`
	Path     string             `json:"path"`
	Methods  map[string]*method `json:"resourceMethods,omitempty"`
}

type method struct {
	HTTPMethod          string                     `json:"httpMethod"`
	AuthorizationType   string                     `json:"authorizationType"`
	AuthorizerID        string                     `json:"authorizerId,omitempty"`
	APIKeyRequired      bool                       `json:"apiKeyRequired"`
	OperationName       string                     `json:"operationName,omitempty"`
	RequestParameters   map[string]bool            `json:"requestParameters,omitempty"`
	RequestModels       map[string]string          `json:"requestModels,omitempty"`
	RequestValidatorID  string                     `json:"requestValidatorId,omitempty"`
	AuthorizationScopes []string                   `json:"authorizationScopes,omitempty"`
	MethodResponses     map[string]*methodResponse `json:"methodResponses,omitempty"`
	Integration         *integration               `json:"methodIntegration,omitempty"`
}

type methodResponse struct {
	StatusCode         string            `json:"statusCode"`
	ResponseParameters map[string]bool   `json:"responseParameters,omitempty"`
	ResponseModels     map[string]string `json:"responseModels,omitempty"`
}

type integration struct {
	Type                 string                          `json:"type"`
	HTTPMethod           string                          `json:"httpMethod,omitempty"`
	URI                  string                          `json:"uri,omitempty"`
	ConnectionType       string                          `json:"connectionType,omitempty"`
	Credentials          string                          `json:"credentials,omitempty"`
	RequestParameters    map[string]string               `json:"requestParameters,omitempty"`
	RequestTemplates     map[string]string               `json:"requestTemplates,omitempty"`
	PassthroughBehavior  string                          `json:"passthroughBehavior,omitempty"`
	ContentHandling      string                          `json:"contentHandling,omitempty"`
	TimeoutInMillis      int                             `json:"timeoutInMillis"`
	CacheNamespace       string                          `json:"cacheNamespace,omitempty"`
	CacheKeyParameters   []string                        `json:"cacheKeyParameters"`
	IntegrationResponses map[string]*integrationResponse `json:"integrationResponses,omitempty"`
}

type integrationResponse struct {
	StatusCode         string            `json:"statusCode"`
	SelectionPattern   string            `json:"selectionPattern,omitempty"`
	ResponseParameters map[string]string `json:"responseParameters,omitempty"`
	ResponseTemplates  map[string]string `json:"responseTemplates,omitempty"`
	ContentHandling    string            `json:"contentHandling,omitempty"`
}

type deployment struct {
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
	CreatedDate int64  `json:"createdDate"`

	seq      int
	snapshot map[string]*resource // the API's resources when deployed
}

type stage struct {
	StageName           string            `json:"stageName"`
	DeploymentID        string            `json:"deploymentId"`
	Description         string            `json:"description,omitempty"`
	CreatedDate         int64             `json:"createdDate"`
	LastUpdatedDate     int64             `json:"lastUpdatedDate"`
	Variables           map[string]string `json:"variables,omitempty"`
	CacheClusterEnabled bool              `json:"cacheClusterEnabled"`
	CacheClusterStatus  string            `json:"cacheClusterStatus"`
	TracingEnabled      bool              `json:"tracingEnabled"`
	MethodSettings      map[string]any    `json:"methodSettings"`
	Tags                map[string]string `json:"tags,omitempty"`
}

type apiKey struct {
	ID              string            `json:"id"`
	Name            string            `json:"name,omitempty"`
	Description     string            `json:"description,omitempty"`
	Value           string            `json:"value,omitempty"`
	Enabled         bool              `json:"enabled"`
	CustomerID      string            `json:"customerId,omitempty"`
	CreatedDate     int64             `json:"createdDate"`
	LastUpdatedDate int64             `json:"lastUpdatedDate"`
	StageKeys       []string          `json:"stageKeys"`
	Tags            map[string]string `json:"tags,omitempty"`

	seq int
}

type usagePlan struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	APIStages   []apiStage        `json:"apiStages"`
	Throttle    *throttleSettings `json:"throttle,omitempty"`
	Quota       *quotaSettings    `json:"quota,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`

	seq  int
	keys []string // API key ids, in the order added
}

type apiStage struct {
	APIID    string                       `json:"apiId"`
	Stage    string                       `json:"stage"`
	Throttle map[string]*throttleSettings `json:"throttle,omitempty"`
}

type throttleSettings struct {
	BurstLimit int     `json:"burstLimit"`
	RateLimit  float64 `json:"rateLimit"`
}

type quotaSettings struct {
	Limit  int    `json:"limit"`
	Offset int    `json:"offset"`
	Period string `json:"period"`
}

type gatewayState struct {
	apis    map[string]*restAPI
	keys    map[string]*apiKey
	byValue map[string]*apiKey
	plans   map[string]*usagePlan
	buckets map[string]*tokenBucket // by plan id + "/" + key id
	seq     int
}

func (g *gatewayState) init() {
	g.apis = map[string]*restAPI{}
	g.keys = map[string]*apiKey{}
	g.byValue = map[string]*apiKey{}
	g.plans = map[string]*usagePlan{}
	g.buckets = map[string]*tokenBucket{}
}

func (g *gatewayState) next() int {
	g.seq++
	return g.seq
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newID returns n random lowercase alphanumerics, the shape of API Gateway ids.
func newID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func newKeyValue() string {
	b := make([]byte, 40)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = keyAlphabet[int(b[i])%len(keyAlphabet)]
	}
	return string(b)
}

// cloneResources deep-copies a resource tree through its wire form, which
// carries every field execute-api reads.
func cloneResources(in map[string]*resource) (map[string]*resource, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("snapshot resources: %w", err)
	}
	out := map[string]*resource{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("snapshot resources: %w", err)
	}
	return out, nil
}

// ---- routes ----

func (s *Server) gatewayRoutes(m *http.ServeMux) {
	const api = "/restapis/{api}"
	const res = api + "/resources/{res}"
	const meth = res + "/methods/{method}"
	m.HandleFunc("POST /restapis", s.gw1(s.createRestAPI))
	m.HandleFunc("GET /restapis", s.gw1(s.getRestAPIs))
	m.HandleFunc("GET "+api, s.gw1(s.getRestAPI))
	m.HandleFunc("DELETE "+api, s.gw1(s.deleteRestAPI))
	m.HandleFunc("GET "+api+"/resources", s.gw1(s.getResources))
	m.HandleFunc("GET "+res, s.gw1(s.getResource))
	m.HandleFunc("POST "+res, s.gw1(s.createResource))
	m.HandleFunc("DELETE "+res, s.gw1(s.deleteResource))
	m.HandleFunc("PUT "+meth, s.gw1(s.putMethod))
	m.HandleFunc("GET "+meth, s.gw1(s.getMethod))
	m.HandleFunc("PATCH "+meth, s.gw1(s.updateMethod))
	m.HandleFunc("DELETE "+meth, s.gw1(s.deleteMethod))
	m.HandleFunc("PUT "+meth+"/responses/{status}", s.gw1(s.putMethodResponse))
	m.HandleFunc("GET "+meth+"/responses/{status}", s.gw1(s.getMethodResponse))
	m.HandleFunc("PUT "+meth+"/integration", s.gw1(s.putIntegration))
	m.HandleFunc("GET "+meth+"/integration", s.gw1(s.getIntegration))
	m.HandleFunc("PUT "+meth+"/integration/responses/{status}", s.gw1(s.putIntegrationResponse))
	m.HandleFunc("GET "+meth+"/integration/responses/{status}", s.gw1(s.getIntegrationResponse))
	m.HandleFunc("POST "+api+"/deployments", s.gw1(s.createDeployment))
	m.HandleFunc("GET "+api+"/deployments", s.gw1(s.getDeployments))
	m.HandleFunc("GET "+api+"/deployments/{dep}", s.gw1(s.getDeployment))
	m.HandleFunc("POST "+api+"/stages", s.gw1(s.createStage))
	m.HandleFunc("GET "+api+"/stages", s.gw1(s.getStages))
	m.HandleFunc("GET "+api+"/stages/{stage}", s.gw1(s.getStage))
	m.HandleFunc("PATCH "+api+"/stages/{stage}", s.gw1(s.updateStage))
	m.HandleFunc("DELETE "+api+"/stages/{stage}", s.gw1(s.deleteStage))
	m.HandleFunc("POST /apikeys", s.gw1(s.createAPIKey))
	m.HandleFunc("GET /apikeys", s.gw1(s.getAPIKeys))
	m.HandleFunc("GET /apikeys/{key}", s.gw1(s.getAPIKey))
	m.HandleFunc("PATCH /apikeys/{key}", s.gw1(s.updateAPIKey))
	m.HandleFunc("DELETE /apikeys/{key}", s.gw1(s.deleteAPIKey))
	m.HandleFunc("POST /usageplans", s.gw1(s.createUsagePlan))
	m.HandleFunc("GET /usageplans", s.gw1(s.getUsagePlans))
	m.HandleFunc("GET /usageplans/{plan}", s.gw1(s.getUsagePlan))
	m.HandleFunc("PATCH /usageplans/{plan}", s.gw1(s.updateUsagePlan))
	m.HandleFunc("DELETE /usageplans/{plan}", s.gw1(s.deleteUsagePlan))
	m.HandleFunc("POST /usageplans/{plan}/keys", s.gw1(s.createUsagePlanKey))
	m.HandleFunc("GET /usageplans/{plan}/keys", s.gw1(s.getUsagePlanKeys))
	m.HandleFunc("DELETE /usageplans/{plan}/keys/{key}", s.gw1(s.deleteUsagePlanKey))
}

// gwReply is what a control-plane operation answers: a status and a body.
type gwReply struct {
	status int
	body   any
}

// gw1 adapts an operation that runs entirely under gwMu (no I/O happens
// there: the state is in memory) into a handler.
func (s *Server) gw1(op func(r *http.Request, body []byte) (gwReply, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Body != nil {
			b, err := readLimited(r, 1<<20)
			if err != nil {
				writeError(w, err)
				return
			}
			body = b
		}
		s.gwMu.Lock()
		rep, err := op(r, body)
		s.gwMu.Unlock()
		if err != nil {
			writeError(w, err)
			return
		}
		if rep.body == nil {
			w.WriteHeader(rep.status)
			return
		}
		writeJSON(w, rep.status, rep.body)
	}
}

func readLimited(r *http.Request, limit int64) ([]byte, error) {
	b := make([]byte, 0, 512)
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		b = append(b, buf[:n]...)
		if int64(len(b)) > limit {
			return nil, errorf(http.StatusRequestEntityTooLarge, "RequestEntityTooLargeException", "request body over %d bytes", limit)
		}
		if err != nil {
			break
		}
	}
	return b, nil
}

func parseBody(body []byte, v any) error {
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errGWBadRequest("Invalid request body: %v", err)
	}
	return nil
}

func (s *Server) now() int64 { return s.cfg.Now().Unix() }

// page applies limit/position paging to items (position is an index).
func page[T any](r *http.Request, items []T) (map[string]any, error) {
	q := r.URL.Query()
	limit := 25
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return nil, errGWBadRequest("Invalid limit %q: must be between 1 and 500", v)
		}
		limit = n
	}
	start := 0
	if v := q.Get("position"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, errGWBadRequest("Invalid position %q", v)
		}
		start = min(n, len(items))
	}
	end := min(start+limit, len(items))
	out := map[string]any{"item": items[start:end]}
	if end < len(items) {
		out["position"] = strconv.Itoa(end)
	}
	return out, nil
}

// ---- rest APIs ----

func (s *Server) apiLocked(r *http.Request) (*restAPI, error) {
	id := r.PathValue("api")
	a, ok := s.gw.apis[id]
	if !ok {
		return nil, errGWNotFound("Invalid API identifier specified %s:%s", s.cfg.AccountID, id)
	}
	return a, nil
}

func (s *Server) createRestAPI(r *http.Request, body []byte) (gwReply, error) {
	var in struct {
		Name                  string                 `json:"name"`
		Description           string                 `json:"description"`
		Version               string                 `json:"version"`
		APIKeySource          string                 `json:"apiKeySource"`
		EndpointConfiguration *endpointConfiguration `json:"endpointConfiguration"`
		BinaryMediaTypes      []string               `json:"binaryMediaTypes"`
		DisableExecuteAPI     bool                   `json:"disableExecuteApiEndpoint"`
		Tags                  map[string]string      `json:"tags"`
	}
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if in.Name == "" {
		return gwReply{}, errGWBadRequest("Invalid REST API name specified: name must not be empty")
	}
	if in.APIKeySource == "" {
		in.APIKeySource = "HEADER"
	}
	if in.EndpointConfiguration == nil || len(in.EndpointConfiguration.Types) == 0 {
		in.EndpointConfiguration = &endpointConfiguration{Types: []string{"EDGE"}}
	}
	if in.EndpointConfiguration.IPAddressType == "" {
		in.EndpointConfiguration.IPAddressType = "ipv4"
	}
	id := newID(10)
	for s.gw.apis[id] != nil {
		id = newID(10)
	}
	root := &resource{ID: newID(10), Path: "/"}
	a := &restAPI{
		ID: id, Name: in.Name, Description: in.Description, Version: in.Version,
		CreatedDate: s.now(), APIKeySource: in.APIKeySource, EndpointConfiguration: in.EndpointConfiguration,
		RootResourceID: root.ID, DisableExecuteAPIEndpoint: in.DisableExecuteAPI, BinaryMediaTypes: in.BinaryMediaTypes,
		Tags: in.Tags, seq: s.gw.next(),
		resources:   map[string]*resource{root.ID: root},
		deployments: map[string]*deployment{},
		stages:      map[string]*stage{},
	}
	s.gw.apis[id] = a
	s.log.Info("localcloud: REST API created", "api", id, "name", in.Name)
	return gwReply{http.StatusCreated, a}, nil
}

func (s *Server) getRestAPIs(r *http.Request, _ []byte) (gwReply, error) {
	list := slices.SortedFunc(maps.Values(s.gw.apis), func(a, b *restAPI) int { return a.seq - b.seq })
	out, err := page(r, list)
	return gwReply{http.StatusOK, out}, err
}

func (s *Server) getRestAPI(r *http.Request, _ []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	return gwReply{http.StatusOK, a}, nil
}

func (s *Server) deleteRestAPI(r *http.Request, _ []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	delete(s.gw.apis, a.ID)
	for _, p := range s.gw.plans {
		p.APIStages = slices.DeleteFunc(p.APIStages, func(st apiStage) bool { return st.APIID == a.ID })
	}
	return gwReply{http.StatusAccepted, nil}, nil
}

// ---- resources ----

func (s *Server) resourceLocked(r *http.Request) (*restAPI, *resource, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return nil, nil, err
	}
	res, ok := a.resources[r.PathValue("res")]
	if !ok {
		return nil, nil, errGWNotFound("Invalid Resource identifier specified")
	}
	return a, res, nil
}

// resourceView is a resource as listed: methods embedded in full only when
// asked (embed=methods), otherwise as empty objects, as API Gateway does.
func resourceView(res *resource, embed bool) any {
	if embed || len(res.Methods) == 0 {
		return res
	}
	type shallow struct {
		*resource
		Methods map[string]struct{} `json:"resourceMethods"` // shadows resource.Methods
	}
	sh := shallow{resource: res, Methods: map[string]struct{}{}}
	for k := range res.Methods {
		sh.Methods[k] = struct{}{}
	}
	return sh
}

func (s *Server) getResources(r *http.Request, _ []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	embed := slices.Contains(r.URL.Query()["embed"], "methods")
	list := slices.SortedFunc(maps.Values(a.resources), func(x, y *resource) int { return strings.Compare(x.Path, y.Path) })
	views := make([]any, len(list))
	for i, res := range list {
		views[i] = resourceView(res, embed)
	}
	out, err := page(r, views)
	return gwReply{http.StatusOK, out}, err
}

func (s *Server) getResource(r *http.Request, _ []byte) (gwReply, error) {
	_, res, err := s.resourceLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	embed := slices.Contains(r.URL.Query()["embed"], "methods")
	return gwReply{http.StatusOK, resourceView(res, embed)}, nil
}

var pathPartRE = regexp.MustCompile(`^([a-zA-Z0-9._:@~-]+|\{[a-zA-Z0-9._-]+\+?\})$`)

func (s *Server) createResource(r *http.Request, body []byte) (gwReply, error) {
	a, parent, err := s.resourceLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	var in struct {
		PathPart string `json:"pathPart"`
	}
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if !pathPartRE.MatchString(in.PathPart) {
		return gwReply{}, errGWBadRequest("Resource's path part only allow a-zA-Z0-9._- and curly braces at the beginning and the end and an optional plus sign before the closing brace.")
	}
	for _, sib := range a.resources {
		if sib.ParentID == parent.ID && sib.PathPart == in.PathPart {
			return gwReply{}, errGWConflict("Another resource with the same parent already has this name: %s", in.PathPart)
		}
	}
	path := strings.TrimSuffix(parent.Path, "/") + "/" + in.PathPart
	res := &resource{ID: newID(6), ParentID: parent.ID, PathPart: in.PathPart, Path: path}
	a.resources[res.ID] = res
	return gwReply{http.StatusCreated, res}, nil
}

func (s *Server) deleteResource(r *http.Request, _ []byte) (gwReply, error) {
	a, res, err := s.resourceLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	if res.ID == a.RootResourceID {
		return gwReply{}, errGWBadRequest("Cannot delete root resource")
	}
	prefix := res.Path + "/"
	for id, x := range a.resources {
		if x.ID == res.ID || strings.HasPrefix(x.Path, prefix) {
			delete(a.resources, id)
		}
	}
	return gwReply{http.StatusAccepted, nil}, nil
}

// ---- methods ----

var httpMethods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"}

func (s *Server) methodLocked(r *http.Request) (*restAPI, *resource, *method, error) {
	a, res, err := s.resourceLocked(r)
	if err != nil {
		return nil, nil, nil, err
	}
	m, ok := res.Methods[strings.ToUpper(r.PathValue("method"))]
	if !ok {
		return nil, nil, nil, errGWNotFound("Invalid Method identifier specified")
	}
	return a, res, m, nil
}

func (s *Server) putMethod(r *http.Request, body []byte) (gwReply, error) {
	_, res, err := s.resourceLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	verb := strings.ToUpper(r.PathValue("method"))
	if !slices.Contains(httpMethods, verb) {
		return gwReply{}, errGWBadRequest("Invalid HttpMethod specified. Valid options are %s", strings.Join(httpMethods, ","))
	}
	var in method
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	switch in.AuthorizationType {
	case "NONE", "AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS":
	default:
		return gwReply{}, errGWBadRequest("Invalid authorization type specified: %q", in.AuthorizationType)
	}
	if _, exists := res.Methods[verb]; exists {
		return gwReply{}, errGWConflict("Method already exists for this resource")
	}
	in.HTTPMethod = verb
	in.MethodResponses, in.Integration = nil, nil
	if res.Methods == nil {
		res.Methods = map[string]*method{}
	}
	res.Methods[verb] = &in
	return gwReply{http.StatusCreated, &in}, nil
}

func (s *Server) getMethod(r *http.Request, _ []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	return gwReply{http.StatusOK, m}, nil
}

func (s *Server) deleteMethod(r *http.Request, _ []byte) (gwReply, error) {
	_, res, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	delete(res.Methods, m.HTTPMethod)
	return gwReply{http.StatusNoContent, nil}, nil
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value string `json:"value"`
	From  string `json:"from"`
}

func parsePatch(body []byte) ([]patchOp, error) {
	var in struct {
		PatchOperations []patchOp `json:"patchOperations"`
	}
	if err := parseBody(body, &in); err != nil {
		return nil, err
	}
	return in.PatchOperations, nil
}

func patchBool(op patchOp) (bool, error) {
	b, err := strconv.ParseBool(op.Value)
	if err != nil {
		return false, errGWBadRequest("Invalid boolean value %q for %s", op.Value, op.Path)
	}
	return b, nil
}

func unsupportedPatch(op patchOp) error {
	return errGWBadRequest("Invalid patch path '%s' specified for op '%s'. localcloud supports a subset of patch paths", op.Path, op.Op)
}

func (s *Server) updateMethod(r *http.Request, body []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	ops, err := parsePatch(body)
	if err != nil {
		return gwReply{}, err
	}
	next := *m
	for _, op := range ops {
		switch {
		case op.Op == "replace" && op.Path == "/apiKeyRequired":
			if next.APIKeyRequired, err = patchBool(op); err != nil {
				return gwReply{}, err
			}
		case op.Op == "replace" && op.Path == "/authorizationType":
			next.AuthorizationType = op.Value
		case op.Op == "replace" && op.Path == "/operationName":
			next.OperationName = op.Value
		default:
			return gwReply{}, unsupportedPatch(op)
		}
	}
	*m = next
	return gwReply{http.StatusOK, m}, nil
}

func (s *Server) putMethodResponse(r *http.Request, body []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	code := r.PathValue("status")
	if !statusCodeRE.MatchString(code) {
		return gwReply{}, errGWBadRequest("Invalid status code specified: %s", code)
	}
	var in methodResponse
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if _, exists := m.MethodResponses[code]; exists {
		return gwReply{}, errGWConflict("Response already exists for this resource")
	}
	in.StatusCode = code
	if m.MethodResponses == nil {
		m.MethodResponses = map[string]*methodResponse{}
	}
	m.MethodResponses[code] = &in
	return gwReply{http.StatusCreated, &in}, nil
}

var statusCodeRE = regexp.MustCompile(`^[1-5]\d\d$`)

func (s *Server) getMethodResponse(r *http.Request, _ []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	mr, ok := m.MethodResponses[r.PathValue("status")]
	if !ok {
		return gwReply{}, errGWNotFound("Invalid Response status code specified")
	}
	return gwReply{http.StatusOK, mr}, nil
}

// lambdaURIRE matches a Lambda integration URI and captures the function ARN.
var lambdaURIRE = regexp.MustCompile(`^arn:aws[a-z-]*:apigateway:[a-z0-9-]+:lambda:path/2015-03-31/functions/(.+)/invocations$`)

func (s *Server) putIntegration(r *http.Request, body []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	var in integration
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	switch in.Type {
	case "AWS", "AWS_PROXY":
		if in.HTTPMethod == "" {
			return gwReply{}, errGWBadRequest("Enumeration value for HttpMethod must be non-empty")
		}
		if in.URI == "" {
			return gwReply{}, errGWBadRequest("Integrations of type 'AWS' and 'AWS_PROXY' must have a URI")
		}
		if !lambdaURIRE.MatchString(in.URI) {
			return gwReply{}, errGWBadRequest("AWS ARN for integration must contain path or action; localcloud integrates Lambda functions only (arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations)")
		}
		if in.Type == "AWS_PROXY" && in.HTTPMethod != "POST" {
			return gwReply{}, errGWBadRequest("Integrations of type 'AWS_PROXY' currently only supports Lambda function and Firehose stream invocations with POST")
		}
	case "MOCK":
	case "HTTP", "HTTP_PROXY":
		return gwReply{}, errGWBadRequest("localcloud does not support integration type %s", in.Type)
	default:
		return gwReply{}, errGWBadRequest("Invalid integration type specified: %q", in.Type)
	}
	if in.TimeoutInMillis == 0 {
		in.TimeoutInMillis = 29000
	}
	if in.TimeoutInMillis < 50 || in.TimeoutInMillis > 29000 {
		return gwReply{}, errGWBadRequest("Timeout should be between 50 ms and 29000 ms")
	}
	if in.PassthroughBehavior == "" {
		in.PassthroughBehavior = "WHEN_NO_MATCH"
	}
	if in.CacheNamespace == "" {
		in.CacheNamespace = r.PathValue("res")
	}
	if in.CacheKeyParameters == nil {
		in.CacheKeyParameters = []string{}
	}
	in.IntegrationResponses = nil
	m.Integration = &in
	return gwReply{http.StatusCreated, &in}, nil
}

func (s *Server) getIntegration(r *http.Request, _ []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	if m.Integration == nil {
		return gwReply{}, errGWNotFound("Invalid Integration identifier specified")
	}
	return gwReply{http.StatusOK, m.Integration}, nil
}

func (s *Server) putIntegrationResponse(r *http.Request, body []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	if m.Integration == nil {
		return gwReply{}, errGWNotFound("Invalid Integration identifier specified")
	}
	code := r.PathValue("status")
	if _, ok := m.MethodResponses[code]; !ok {
		return gwReply{}, errGWNotFound("Invalid Response status code specified")
	}
	var in integrationResponse
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if in.SelectionPattern != "" {
		if _, err := regexp.Compile(in.SelectionPattern); err != nil {
			return gwReply{}, errGWBadRequest("Invalid selection pattern specified: %v", err)
		}
	}
	in.StatusCode = code
	if m.Integration.IntegrationResponses == nil {
		m.Integration.IntegrationResponses = map[string]*integrationResponse{}
	}
	m.Integration.IntegrationResponses[code] = &in
	return gwReply{http.StatusCreated, &in}, nil
}

func (s *Server) getIntegrationResponse(r *http.Request, _ []byte) (gwReply, error) {
	_, _, m, err := s.methodLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	if m.Integration == nil {
		return gwReply{}, errGWNotFound("Invalid Integration identifier specified")
	}
	ir, ok := m.Integration.IntegrationResponses[r.PathValue("status")]
	if !ok {
		return gwReply{}, errGWNotFound("Invalid Response status code specified")
	}
	return gwReply{http.StatusOK, ir}, nil
}

// ---- deployments and stages ----

func (s *Server) createDeployment(r *http.Request, body []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	var in struct {
		StageName        string            `json:"stageName"`
		StageDescription string            `json:"stageDescription"`
		Description      string            `json:"description"`
		Variables        map[string]string `json:"variables"`
		TracingEnabled   bool              `json:"tracingEnabled"`
	}
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	methods := 0
	for _, res := range a.resources {
		for verb, m := range res.Methods {
			methods++
			if m.Integration == nil {
				return gwReply{}, errGWBadRequest("No integration defined for method %s %s", verb, res.Path)
			}
		}
	}
	if methods == 0 {
		return gwReply{}, errGWBadRequest("The REST API doesn't contain any methods")
	}
	snap, err := cloneResources(a.resources)
	if err != nil {
		return gwReply{}, err
	}
	now := s.now()
	d := &deployment{ID: newID(6), Description: in.Description, CreatedDate: now, seq: s.gw.next(), snapshot: snap}
	a.deployments[d.ID] = d
	if in.StageName != "" {
		st, ok := a.stages[in.StageName]
		if !ok {
			st = &stage{StageName: in.StageName, CreatedDate: now, Description: in.StageDescription,
				CacheClusterStatus: "NOT_AVAILABLE", MethodSettings: map[string]any{}, TracingEnabled: in.TracingEnabled}
			a.stages[in.StageName] = st
		}
		st.DeploymentID = d.ID
		st.LastUpdatedDate = now
		if in.Variables != nil {
			st.Variables = in.Variables
		}
	}
	s.log.Info("localcloud: REST API deployed", "api", a.ID, "deployment", d.ID, "stage", in.StageName)
	return gwReply{http.StatusCreated, d}, nil
}

func (s *Server) getDeployments(r *http.Request, _ []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	list := slices.SortedFunc(maps.Values(a.deployments), func(x, y *deployment) int { return x.seq - y.seq })
	out, err := page(r, list)
	return gwReply{http.StatusOK, out}, err
}

func (s *Server) getDeployment(r *http.Request, _ []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	d, ok := a.deployments[r.PathValue("dep")]
	if !ok {
		return gwReply{}, errGWNotFound("Invalid Deployment identifier specified")
	}
	return gwReply{http.StatusOK, d}, nil
}

func (s *Server) createStage(r *http.Request, body []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	var in stage
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if in.StageName == "" {
		return gwReply{}, errGWBadRequest("Stage name must be non-empty")
	}
	if _, ok := a.deployments[in.DeploymentID]; !ok {
		return gwReply{}, errGWNotFound("Invalid Deployment identifier specified")
	}
	if _, ok := a.stages[in.StageName]; ok {
		return gwReply{}, errGWConflict("Stage already exists")
	}
	now := s.now()
	in.CreatedDate, in.LastUpdatedDate = now, now
	in.CacheClusterStatus = "NOT_AVAILABLE"
	in.MethodSettings = map[string]any{}
	a.stages[in.StageName] = &in
	return gwReply{http.StatusCreated, &in}, nil
}

func (s *Server) getStages(r *http.Request, _ []byte) (gwReply, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	dep := r.URL.Query().Get("deploymentId")
	list := []*stage{}
	for _, name := range slices.Sorted(maps.Keys(a.stages)) {
		if st := a.stages[name]; dep == "" || st.DeploymentID == dep {
			list = append(list, st)
		}
	}
	return gwReply{http.StatusOK, map[string]any{"item": list}}, nil
}

func (s *Server) stageLocked(r *http.Request) (*restAPI, *stage, error) {
	a, err := s.apiLocked(r)
	if err != nil {
		return nil, nil, err
	}
	st, ok := a.stages[r.PathValue("stage")]
	if !ok {
		return nil, nil, errGWNotFound("Invalid Stage identifier specified")
	}
	return a, st, nil
}

func (s *Server) getStage(r *http.Request, _ []byte) (gwReply, error) {
	_, st, err := s.stageLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	return gwReply{http.StatusOK, st}, nil
}

func (s *Server) updateStage(r *http.Request, body []byte) (gwReply, error) {
	a, st, err := s.stageLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	ops, err := parsePatch(body)
	if err != nil {
		return gwReply{}, err
	}
	next := *st
	next.Variables = maps.Clone(st.Variables)
	for _, op := range ops {
		switch {
		case op.Op == "replace" && op.Path == "/deploymentId":
			if _, ok := a.deployments[op.Value]; !ok {
				return gwReply{}, errGWBadRequest("Invalid deployment identifier specified")
			}
			next.DeploymentID = op.Value
		case op.Op == "replace" && op.Path == "/description":
			next.Description = op.Value
		case strings.HasPrefix(op.Path, "/variables/") && (op.Op == "replace" || op.Op == "add"):
			if next.Variables == nil {
				next.Variables = map[string]string{}
			}
			next.Variables[strings.TrimPrefix(op.Path, "/variables/")] = op.Value
		case strings.HasPrefix(op.Path, "/variables/") && op.Op == "remove":
			delete(next.Variables, strings.TrimPrefix(op.Path, "/variables/"))
		default:
			return gwReply{}, unsupportedPatch(op)
		}
	}
	next.LastUpdatedDate = s.now()
	*st = next
	return gwReply{http.StatusOK, st}, nil
}

func (s *Server) deleteStage(r *http.Request, _ []byte) (gwReply, error) {
	a, st, err := s.stageLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	delete(a.stages, st.StageName)
	return gwReply{http.StatusAccepted, nil}, nil
}

// ---- API keys ----

// keyView is an API key as answered: the value only when asked for.
func keyView(k *apiKey, withValue bool) apiKey {
	v := *k
	if !withValue {
		v.Value = ""
	}
	if v.StageKeys == nil {
		v.StageKeys = []string{}
	}
	return v
}

func (s *Server) createAPIKey(r *http.Request, body []byte) (gwReply, error) {
	var in apiKey
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if in.Value == "" {
		in.Value = newKeyValue()
	} else if len(in.Value) < 20 {
		return gwReply{}, errGWBadRequest("API Key value should be at least 20 characters")
	}
	if _, dup := s.gw.byValue[in.Value]; dup {
		return gwReply{}, errGWConflict("API Key already exists")
	}
	now := s.now()
	in.ID, in.CreatedDate, in.LastUpdatedDate, in.seq = newID(10), now, now, s.gw.next()
	k := in
	s.gw.keys[k.ID] = &k
	s.gw.byValue[k.Value] = &k
	return gwReply{http.StatusCreated, keyView(&k, true)}, nil
}

func (s *Server) getAPIKeys(r *http.Request, _ []byte) (gwReply, error) {
	q := r.URL.Query()
	name, customer := q.Get("name"), q.Get("customerId")
	withValues := q.Get("includeValues") == "true"
	list := []apiKey{}
	for _, k := range slices.SortedFunc(maps.Values(s.gw.keys), func(x, y *apiKey) int { return x.seq - y.seq }) {
		if (name == "" || strings.HasPrefix(k.Name, name)) && (customer == "" || k.CustomerID == customer) {
			list = append(list, keyView(k, withValues))
		}
	}
	out, err := page(r, list)
	return gwReply{http.StatusOK, out}, err
}

func (s *Server) keyLocked(r *http.Request) (*apiKey, error) {
	k, ok := s.gw.keys[r.PathValue("key")]
	if !ok {
		return nil, errGWNotFound("Invalid API Key identifier specified")
	}
	return k, nil
}

func (s *Server) getAPIKey(r *http.Request, _ []byte) (gwReply, error) {
	k, err := s.keyLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	return gwReply{http.StatusOK, keyView(k, r.URL.Query().Get("includeValue") == "true")}, nil
}

func (s *Server) updateAPIKey(r *http.Request, body []byte) (gwReply, error) {
	k, err := s.keyLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	ops, err := parsePatch(body)
	if err != nil {
		return gwReply{}, err
	}
	next := *k
	for _, op := range ops {
		switch {
		case op.Op == "replace" && op.Path == "/enabled":
			if next.Enabled, err = patchBool(op); err != nil {
				return gwReply{}, err
			}
		case op.Op == "replace" && op.Path == "/name":
			next.Name = op.Value
		case op.Op == "replace" && op.Path == "/description":
			next.Description = op.Value
		case op.Op == "replace" && op.Path == "/customerId":
			next.CustomerID = op.Value
		default:
			return gwReply{}, unsupportedPatch(op)
		}
	}
	next.LastUpdatedDate = s.now()
	*k = next
	return gwReply{http.StatusOK, keyView(k, false)}, nil
}

func (s *Server) deleteAPIKey(r *http.Request, _ []byte) (gwReply, error) {
	k, err := s.keyLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	delete(s.gw.keys, k.ID)
	delete(s.gw.byValue, k.Value)
	for _, p := range s.gw.plans {
		p.keys = slices.DeleteFunc(p.keys, func(id string) bool { return id == k.ID })
	}
	return gwReply{http.StatusAccepted, nil}, nil
}

// ---- usage plans ----

// checkStageLocked verifies an api stage a usage plan names.
func (s *Server) checkStageLocked(apiID, stageName string) error {
	a, ok := s.gw.apis[apiID]
	if !ok {
		return errGWNotFound("Invalid API identifier specified %s:%s", s.cfg.AccountID, apiID)
	}
	if _, ok := a.stages[stageName]; !ok {
		return errGWBadRequest("Invalid stage identifier specified")
	}
	return nil
}

func (s *Server) createUsagePlan(r *http.Request, body []byte) (gwReply, error) {
	var in usagePlan
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if in.Name == "" {
		return gwReply{}, errGWBadRequest("Usage plan name must be non-empty")
	}
	for _, st := range in.APIStages {
		if err := s.checkStageLocked(st.APIID, st.Stage); err != nil {
			return gwReply{}, err
		}
	}
	if err := checkThrottle(in.Throttle); err != nil {
		return gwReply{}, err
	}
	if in.APIStages == nil {
		in.APIStages = []apiStage{}
	}
	in.ID, in.seq = newID(6), s.gw.next()
	p := in
	s.gw.plans[p.ID] = &p
	return gwReply{http.StatusCreated, &p}, nil
}

func checkThrottle(t *throttleSettings) error {
	if t != nil && (t.RateLimit < 0 || t.BurstLimit < 0) {
		return errGWBadRequest("Throttle rate and burst limits must be non-negative")
	}
	return nil
}

func (s *Server) getUsagePlans(r *http.Request, _ []byte) (gwReply, error) {
	keyID := r.URL.Query().Get("keyId")
	list := []*usagePlan{}
	for _, p := range slices.SortedFunc(maps.Values(s.gw.plans), func(x, y *usagePlan) int { return x.seq - y.seq }) {
		if keyID == "" || slices.Contains(p.keys, keyID) {
			list = append(list, p)
		}
	}
	out, err := page(r, list)
	return gwReply{http.StatusOK, out}, err
}

func (s *Server) planLocked(r *http.Request) (*usagePlan, error) {
	p, ok := s.gw.plans[r.PathValue("plan")]
	if !ok {
		return nil, errGWNotFound("Invalid Usage Plan ID specified")
	}
	return p, nil
}

func (s *Server) getUsagePlan(r *http.Request, _ []byte) (gwReply, error) {
	p, err := s.planLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	return gwReply{http.StatusOK, p}, nil
}

func (s *Server) updateUsagePlan(r *http.Request, body []byte) (gwReply, error) {
	p, err := s.planLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	ops, err := parsePatch(body)
	if err != nil {
		return gwReply{}, err
	}
	next := *p
	next.APIStages = slices.Clone(p.APIStages)
	if p.Throttle != nil {
		t := *p.Throttle
		next.Throttle = &t
	}
	for _, op := range ops {
		switch {
		case op.Path == "/apiStages" && (op.Op == "add" || op.Op == "remove"):
			apiID, stageName, ok := strings.Cut(op.Value, ":")
			if !ok {
				return gwReply{}, errGWBadRequest("Invalid API stage %q: want apiId:stage", op.Value)
			}
			idx := slices.IndexFunc(next.APIStages, func(st apiStage) bool { return st.APIID == apiID && st.Stage == stageName })
			if op.Op == "remove" {
				if idx < 0 {
					return gwReply{}, errGWNotFound("Invalid API stage specified: %s", op.Value)
				}
				next.APIStages = slices.Delete(next.APIStages, idx, idx+1)
				continue
			}
			if err := s.checkStageLocked(apiID, stageName); err != nil {
				return gwReply{}, err
			}
			if idx < 0 {
				next.APIStages = append(next.APIStages, apiStage{APIID: apiID, Stage: stageName})
			}
		case op.Path == "/throttle" && op.Op == "remove":
			next.Throttle = nil
		case (op.Path == "/throttle/rateLimit" || op.Path == "/throttle/burstLimit") && (op.Op == "replace" || op.Op == "add"):
			if next.Throttle == nil {
				next.Throttle = &throttleSettings{}
			}
			v, err := strconv.ParseFloat(op.Value, 64)
			if err != nil || v < 0 {
				return gwReply{}, errGWBadRequest("Invalid value %q for %s", op.Value, op.Path)
			}
			if op.Path == "/throttle/rateLimit" {
				next.Throttle.RateLimit = v
			} else {
				next.Throttle.BurstLimit = int(v)
			}
		case op.Op == "replace" && op.Path == "/name":
			next.Name = op.Value
		case op.Op == "replace" && op.Path == "/description":
			next.Description = op.Value
		default:
			return gwReply{}, unsupportedPatch(op)
		}
	}
	*p = next
	// Throttles changed: start the plan's buckets afresh.
	for k := range s.gw.buckets {
		if strings.HasPrefix(k, p.ID+"/") {
			delete(s.gw.buckets, k)
		}
	}
	return gwReply{http.StatusOK, p}, nil
}

// deleteUsagePlan refuses, as API Gateway does, a plan that still covers
// an API stage: its stages are removed first (UpdateUsagePlan).
func (s *Server) deleteUsagePlan(r *http.Request, _ []byte) (gwReply, error) {
	p, err := s.planLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	if len(p.APIStages) > 0 {
		return gwReply{}, errGWBadRequest("Cannot delete Usage Plan %s because there are API Stages associated with it: remove them from the plan first", p.ID)
	}
	delete(s.gw.plans, p.ID)
	for k := range s.gw.buckets {
		if strings.HasPrefix(k, p.ID+"/") {
			delete(s.gw.buckets, k)
		}
	}
	return gwReply{http.StatusAccepted, nil}, nil
}

type usagePlanKey struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

func (s *Server) createUsagePlanKey(r *http.Request, body []byte) (gwReply, error) {
	p, err := s.planLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	var in struct {
		KeyID   string `json:"keyId"`
		KeyType string `json:"keyType"`
	}
	if err := parseBody(body, &in); err != nil {
		return gwReply{}, err
	}
	if in.KeyType != "API_KEY" {
		return gwReply{}, errGWBadRequest("Invalid key type specified: %q", in.KeyType)
	}
	k, ok := s.gw.keys[in.KeyID]
	if !ok {
		return gwReply{}, errGWNotFound("Invalid API Key identifier specified")
	}
	if slices.Contains(p.keys, k.ID) {
		return gwReply{}, errGWConflict("Usage Plan %s cannot be added because API Key %s cannot reference multiple Usage Plans with the same API Stage", p.ID, k.ID)
	}
	p.keys = append(p.keys, k.ID)
	return gwReply{http.StatusCreated, usagePlanKey{ID: k.ID, Type: "API_KEY", Name: k.Name, Value: k.Value}}, nil
}

func (s *Server) getUsagePlanKeys(r *http.Request, _ []byte) (gwReply, error) {
	p, err := s.planLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	name := r.URL.Query().Get("name")
	list := []usagePlanKey{}
	for _, id := range p.keys {
		k, ok := s.gw.keys[id]
		if ok && (name == "" || strings.HasPrefix(k.Name, name)) {
			list = append(list, usagePlanKey{ID: k.ID, Type: "API_KEY", Name: k.Name, Value: k.Value})
		}
	}
	out, err := page(r, list)
	return gwReply{http.StatusOK, out}, err
}

func (s *Server) deleteUsagePlanKey(r *http.Request, _ []byte) (gwReply, error) {
	p, err := s.planLocked(r)
	if err != nil {
		return gwReply{}, err
	}
	id := r.PathValue("key")
	if !slices.Contains(p.keys, id) {
		return gwReply{}, errGWNotFound("Invalid API Key identifier specified")
	}
	p.keys = slices.DeleteFunc(p.keys, func(x string) bool { return x == id })
	delete(s.gw.buckets, p.ID+"/"+id)
	return gwReply{http.StatusAccepted, nil}, nil
}

// tokenBucket is a usage plan's throttle for one key: rate tokens a second,
// at most burst banked.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}
