package localcloud

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// codeVersion is one unzipped deployment package. Environments hold a
// reference; the directory is removed once it is retired and unreferenced.
type codeVersion struct {
	id      string
	dir     string
	sha256  string
	size    int64
	refs    int  // guarded by Server.mu
	retired bool // guarded by Server.mu

	tarOnce sync.Once // builds tar, tarErr: the code for a container
	tar     []byte
	tarErr  error
}

// remove deletes the unzipped package and its zip.
func (c *codeVersion) remove() {
	_ = os.RemoveAll(c.dir)
	_ = os.Remove(c.dir + ".zip")
}

// function is one Lambda function ($LATEST only). Guarded by Server.mu.
type function struct {
	name         string
	arn          string
	runtime      string
	role         string
	handler      string
	description  string
	timeout      int // seconds
	memoryMB     int
	vars         map[string]string
	architecture []string
	tags         map[string]string
	code         *codeVersion
	revisionID   string
	lastModified time.Time
	settleAt     time.Time // end of Pending (creating) or InProgress (updating)
	creating     bool
	reserved     *int
	policy       []json.RawMessage
	policySids   map[string]bool
	gen          int // bumped by every code or configuration update

	inflight int
	idle     []*environment // warm environments of gen, most recently used last
	envs     map[*environment]struct{}
	deleted  bool
	counters counters
}

type counters struct {
	invocations, coldStarts, throttles, timeouts, errors int64
}

func (c *counters) add(o counters) {
	c.invocations += o.invocations
	c.coldStarts += o.coldStarts
	c.throttles += o.throttles
	c.timeouts += o.timeouts
	c.errors += o.errors
}

// lambdaState is the Lambda side's state; every method that ends in Locked
// expects Server.mu held.
type lambdaState struct {
	functions map[string]*function
	inflight  int
	envCount  int
	closed    bool
	gone      counters // counters of deleted functions
}

func (l *lambdaState) init() {
	l.functions = map[string]*function{}
}

func (l *lambdaState) statsLocked() Stats {
	st := Stats{PerFunction: map[string]FunctionStats{}}
	total := l.gone
	for name, f := range l.functions {
		st.PerFunction[name] = FunctionStats{
			Environments: len(f.envs),
			Idle:         len(f.idle),
			InFlight:     f.inflight,
			Invocations:  f.counters.invocations,
			ColdStarts:   f.counters.coldStarts,
			Throttles:    f.counters.throttles,
			Timeouts:     f.counters.timeouts,
			Errors:       f.counters.errors,
		}
		total.add(f.counters)
		st.Busy += f.inflight
	}
	st.Functions = len(l.functions)
	st.Environments = l.envCount
	st.InFlight = l.inflight
	st.Invocations = total.invocations
	st.ColdStarts = total.coldStarts
	st.Throttles = total.throttles
	st.Timeouts = total.timeouts
	st.Errors = total.errors
	return st
}

// closeAll marks the state closed and takes every environment out.
func (l *lambdaState) closeAll(mu *sync.Mutex) []*environment {
	mu.Lock()
	defer mu.Unlock()
	l.closed = true
	var out []*environment
	for _, f := range l.functions {
		for e := range f.envs {
			e.dead = true
			out = append(out, e)
		}
		f.idle = nil
	}
	return out
}

// takeIdleLocked removes environments idle since before cutoff.
func (l *lambdaState) takeIdleLocked(cutoff time.Time) []*environment {
	var out []*environment
	for _, f := range l.functions {
		keep := f.idle[:0]
		for _, e := range f.idle {
			if e.lastUsed.Before(cutoff) {
				e.dead = true
				out = append(out, e)
			} else {
				keep = append(keep, e)
			}
		}
		f.idle = keep
	}
	return out
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ---- wire shapes ----

type functionConfiguration struct {
	FunctionName               string             `json:"FunctionName"`
	FunctionArn                string             `json:"FunctionArn"`
	Runtime                    string             `json:"Runtime"`
	Role                       string             `json:"Role"`
	Handler                    string             `json:"Handler"`
	CodeSize                   int64              `json:"CodeSize"`
	Description                string             `json:"Description"`
	Timeout                    int                `json:"Timeout"`
	MemorySize                 int                `json:"MemorySize"`
	LastModified               string             `json:"LastModified"`
	CodeSha256                 string             `json:"CodeSha256"`
	Version                    string             `json:"Version"`
	Environment                *environmentConfig `json:"Environment,omitempty"`
	TracingConfig              map[string]string  `json:"TracingConfig"`
	RevisionID                 string             `json:"RevisionId"`
	State                      string             `json:"State"`
	StateReason                string             `json:"StateReason,omitempty"`
	StateReasonCode            string             `json:"StateReasonCode,omitempty"`
	LastUpdateStatus           string             `json:"LastUpdateStatus,omitempty"`
	LastUpdateStatusReason     string             `json:"LastUpdateStatusReason,omitempty"`
	LastUpdateStatusReasonCode string             `json:"LastUpdateStatusReasonCode,omitempty"`
	PackageType                string             `json:"PackageType"`
	Architectures              []string           `json:"Architectures"`
	EphemeralStorage           map[string]int     `json:"EphemeralStorage"`
	LoggingConfig              map[string]string  `json:"LoggingConfig"`
	SnapStart                  map[string]string  `json:"SnapStart"`
}

type environmentConfig struct {
	Variables map[string]string `json:"Variables"`
}

func (s *Server) configurationLocked(f *function) functionConfiguration {
	c := functionConfiguration{
		FunctionName:     f.name,
		FunctionArn:      f.arn,
		Runtime:          f.runtime,
		Role:             f.role,
		Handler:          f.handler,
		CodeSize:         f.code.size,
		Description:      f.description,
		Timeout:          f.timeout,
		MemorySize:       f.memoryMB,
		LastModified:     f.lastModified.UTC().Format("2006-01-02T15:04:05.000-0700"),
		CodeSha256:       f.code.sha256,
		Version:          "$LATEST",
		TracingConfig:    map[string]string{"Mode": "PassThrough"},
		RevisionID:       f.revisionID,
		PackageType:      "Zip",
		Architectures:    f.architecture,
		EphemeralStorage: map[string]int{"Size": 512},
		LoggingConfig:    map[string]string{"LogFormat": "Text", "LogGroup": "/aws/lambda/" + f.name},
		SnapStart:        map[string]string{"ApplyOn": "None", "OptimizationStatus": "Off"},
	}
	if len(f.vars) > 0 {
		c.Environment = &environmentConfig{Variables: maps.Clone(f.vars)}
	}
	settling := s.cfg.Now().Before(f.settleAt)
	switch {
	case settling && f.creating:
		c.State, c.StateReason, c.StateReasonCode = "Pending", "The function is being created.", "Creating"
	case settling:
		c.State = "Active"
		c.LastUpdateStatus = "InProgress"
		c.LastUpdateStatusReason = "The function is being updated."
		c.LastUpdateStatusReasonCode = "Creating"
	default:
		c.State, c.LastUpdateStatus = "Active", "Successful"
	}
	return c
}

// ---- routes ----

func (s *Server) lambdaRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /2015-03-31/functions", s.createFunction)
	m.HandleFunc("POST /2015-03-31/functions/", s.createFunction)
	m.HandleFunc("GET /2015-03-31/functions", s.listFunctions)
	m.HandleFunc("GET /2015-03-31/functions/", s.listFunctions)
	m.HandleFunc("GET /2015-03-31/functions/{name}", s.getFunction)
	m.HandleFunc("GET /2015-03-31/functions/{name}/configuration", s.getFunctionConfiguration)
	m.HandleFunc("DELETE /2015-03-31/functions/{name}", s.deleteFunction)
	m.HandleFunc("PUT /2015-03-31/functions/{name}/code", s.updateFunctionCode)
	m.HandleFunc("PUT /2015-03-31/functions/{name}/configuration", s.updateFunctionConfiguration)
	m.HandleFunc("POST /2015-03-31/functions/{name}/invocations", s.invokeHandler)
	m.HandleFunc("POST /2015-03-31/functions/{name}/policy", s.addPermission)
	m.HandleFunc("GET /2015-03-31/functions/{name}/policy", s.getPolicy)
	m.HandleFunc("DELETE /2015-03-31/functions/{name}/policy/{sid}", s.removePermission)
	m.HandleFunc("PUT /2017-10-31/functions/{name}/concurrency", s.putConcurrency)
	m.HandleFunc("DELETE /2017-10-31/functions/{name}/concurrency", s.deleteConcurrency)
	m.HandleFunc("GET /2019-09-30/functions/{name}/concurrency", s.getConcurrency)
	m.HandleFunc("GET /2016-08-19/account-settings", s.accountSettings)
	m.HandleFunc("GET /2016-08-19/account-settings/", s.accountSettings)
}

var functionNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// resolveFunctionName accepts a name, a full or partial ARN, or name:qualifier
// and returns the name and qualifier.
func resolveFunctionName(s string) (name, qualifier string) {
	if rest, ok := strings.CutPrefix(s, "arn:"); ok {
		parts := strings.Split(rest, ":") // aws lambda region account function name [qualifier]
		if len(parts) >= 6 && parts[4] == "function" {
			name = parts[5]
			if len(parts) >= 7 {
				qualifier = parts[6]
			}
			return name, qualifier
		}
		return s, ""
	}
	parts := strings.Split(s, ":")
	switch {
	case len(parts) >= 3 && parts[1] == "function": // account:function:name[:qualifier]
		name = parts[2]
		if len(parts) >= 4 {
			qualifier = parts[3]
		}
	case len(parts) == 2:
		name, qualifier = parts[0], parts[1]
	default:
		name = s
	}
	return name, qualifier
}

func (s *Server) functionARN(name string) string {
	return fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", s.cfg.Region, s.cfg.AccountID, name)
}

// lookupLocked finds the function a path label names.
func (s *Server) lookupLocked(label string) (*function, error) {
	name, q := resolveFunctionName(label)
	f, ok := s.lm.functions[name]
	if !ok || (q != "" && q != "$LATEST") {
		return nil, errLambdaNotFound("Function not found: %s", s.functionARN(name)+qualSuffix(q))
	}
	return f, nil
}

func qualSuffix(q string) string {
	if q == "" {
		return ""
	}
	return ":" + q
}

// reserved environment variable names Lambda refuses in a configuration.
var reservedVars = []string{
	"_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
	"AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
	"AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
	"AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
	"AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}

func checkVars(vars map[string]string) error {
	var bad []string
	for k := range vars {
		if slices.Contains(reservedVars, k) {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return errLambdaInvalid("Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: %s", strings.Join(bad, ", "))
	}
	return nil
}

func checkRuntime(rt string) error {
	if !strings.HasPrefix(rt, "python3") {
		return errLambdaInvalid("Value %s at 'runtime' failed to satisfy constraint: localcloud runs python3.x runtimes only", rt)
	}
	return nil
}

func checkLimits(timeout, memory *int) error {
	if timeout != nil && (*timeout < 1 || *timeout > 900) {
		return errLambdaInvalid("1 validation error detected: Value '%d' at 'timeout' failed to satisfy constraint: Member must have value less than or equal to 900 and greater than or equal to 1", *timeout)
	}
	if memory != nil && (*memory < 128 || *memory > 10240) {
		return errLambdaInvalid("1 validation error detected: Value '%d' at 'memorySize' failed to satisfy constraint: Member must have value less than or equal to 10240 and greater than or equal to 128", *memory)
	}
	return nil
}

// storeCode validates and unzips a package into a new code version.
func (s *Server) storeCode(name string, zipBytes []byte) (*codeVersion, error) {
	if len(zipBytes) == 0 {
		return nil, errLambdaInvalid("Please provide a source for function code (ZipFile); S3 and image sources are not supported by localcloud.")
	}
	if len(zipBytes) > maxZipBytes {
		return nil, errorf(http.StatusRequestEntityTooLarge, "RequestEntityTooLargeException",
			"Request must be smaller than %d bytes for the CreateFunction operation", maxZipBytes)
	}
	id := newRequestID()[:8]
	dir, err := os.MkdirTemp(s.dir, "code-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("create code dir for %s: %w", name, err)
	}
	if err := unzipTo(zipBytes, dir); err != nil {
		os.RemoveAll(dir)
		return nil, errLambdaInvalid("Could not unzip uploaded file. Please check your file, then try to upload again. (%v)", err)
	}
	if err := os.WriteFile(dir+".zip", zipBytes, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("keep the package of %s: %w", name, err)
	}
	return &codeVersion{id: id, dir: dir, sha256: codeSha256(zipBytes), size: int64(len(zipBytes))}, nil
}

type createFunctionInput struct {
	FunctionName string `json:"FunctionName"`
	Runtime      string `json:"Runtime"`
	Role         string `json:"Role"`
	Handler      string `json:"Handler"`
	Code         struct {
		ZipFile  []byte `json:"ZipFile"`
		S3Bucket string `json:"S3Bucket"`
		ImageURI string `json:"ImageUri"`
	} `json:"Code"`
	Description   string             `json:"Description"`
	Timeout       *int               `json:"Timeout"`
	MemorySize    *int               `json:"MemorySize"`
	PackageType   string             `json:"PackageType"`
	Environment   *environmentConfig `json:"Environment"`
	Architectures []string           `json:"Architectures"`
	Tags          map[string]string  `json:"Tags"`
}

func (s *Server) createFunction(w http.ResponseWriter, r *http.Request) {
	var in createFunctionInput
	if err := decodeJSON(r, maxControlBodySize, &in, errLambdaInvalid); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case !functionNameRE.MatchString(in.FunctionName):
		writeError(w, errLambdaInvalid("1 validation error detected: Value '%s' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+ (1-64 characters)", in.FunctionName))
		return
	case in.Role == "":
		writeError(w, errLambdaInvalid("The role defined for the function cannot be assumed by Lambda."))
		return
	case in.PackageType != "" && in.PackageType != "Zip":
		writeError(w, errLambdaInvalid("localcloud supports PackageType Zip only"))
		return
	case in.Handler == "":
		writeError(w, errLambdaInvalid("Handler is required for Zip functions"))
		return
	}
	if err := checkRuntime(in.Runtime); err != nil {
		writeError(w, err)
		return
	}
	if err := checkLimits(in.Timeout, in.MemorySize); err != nil {
		writeError(w, err)
		return
	}
	var vars map[string]string
	if in.Environment != nil {
		vars = in.Environment.Variables
	}
	if err := checkVars(vars); err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	_, exists := s.lm.functions[in.FunctionName]
	s.mu.Unlock()
	if exists {
		writeError(w, errLambdaConflict("Function already exist: %s", in.FunctionName))
		return
	}
	code, err := s.storeCode(in.FunctionName, in.Code.ZipFile)
	if err != nil {
		writeError(w, err)
		return
	}
	now := s.cfg.Now()
	f := &function{
		name:         in.FunctionName,
		arn:          s.functionARN(in.FunctionName),
		runtime:      in.Runtime,
		role:         in.Role,
		handler:      in.Handler,
		description:  in.Description,
		timeout:      3,
		memoryMB:     128,
		vars:         vars,
		architecture: []string{"x86_64"},
		tags:         in.Tags,
		code:         code,
		revisionID:   newRequestID(),
		lastModified: now,
		settleAt:     now.Add(s.cfg.TransitionDelay),
		creating:     true,
		policySids:   map[string]bool{},
		envs:         map[*environment]struct{}{},
	}
	if in.Timeout != nil {
		f.timeout = *in.Timeout
	}
	if in.MemorySize != nil {
		f.memoryMB = *in.MemorySize
	}
	if len(in.Architectures) > 0 {
		f.architecture = in.Architectures
	}
	s.mu.Lock()
	if _, exists := s.lm.functions[f.name]; exists || s.lm.closed {
		s.mu.Unlock()
		code.remove()
		writeError(w, errLambdaConflict("Function already exist: %s", in.FunctionName))
		return
	}
	s.lm.functions[f.name] = f
	out := s.configurationLocked(f)
	s.mu.Unlock()
	s.log.Info("localcloud: function created", "function", f.name, "sha256", code.sha256, "size", code.size)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) listFunctions(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := slices.Sorted(maps.Keys(s.lm.functions))
	list := make([]functionConfiguration, 0, len(names))
	for _, n := range names {
		list = append(list, s.configurationLocked(s.lm.functions[n]))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"Functions": list})
}

func (s *Server) getFunction(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	out := map[string]any{
		"Configuration": s.configurationLocked(f),
		"Code": map[string]string{
			"RepositoryType": "S3",
			"Location":       "http://" + r.Host + "/_localcloud/code/" + f.name + ".zip",
		},
	}
	if len(f.tags) > 0 {
		out["Tags"] = f.tags
	}
	if f.reserved != nil {
		out["Concurrency"] = map[string]int{"ReservedConcurrentExecutions": *f.reserved}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getFunctionConfiguration(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	out := s.configurationLocked(f)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	delete(s.lm.functions, f.name)
	f.deleted = true
	s.lm.gone.add(f.counters)
	stop := s.retireLocked(f)
	f.code.retired = true
	removeCode := f.code.refs == 0
	s.mu.Unlock()
	s.stopAll(stop)
	if removeCode {
		f.code.remove()
	}
	s.log.Info("localcloud: function deleted", "function", f.name)
	w.WriteHeader(http.StatusNoContent)
}

// retireLocked bumps the function's generation after an update: idle
// environments are taken out to be stopped now, busy ones stop when they
// finish. The old code version goes once nothing uses it.
func (s *Server) retireLocked(f *function) []*environment {
	f.gen++
	out := f.idle
	for _, e := range out {
		e.dead = true
	}
	f.idle = nil
	return out
}

func (s *Server) stopAll(envs []*environment) {
	for _, e := range envs {
		s.stopEnv(e)
	}
}

// updateGuardLocked refuses a change while the previous one is settling, as
// Lambda does.
func (s *Server) updateGuardLocked(f *function, revision string) error {
	if s.cfg.Now().Before(f.settleAt) {
		if f.creating {
			return errLambdaConflict("The operation cannot be performed at this time. The function is currently in the following state: Pending")
		}
		return errLambdaConflict("The operation cannot be performed at this time. An update is in progress for resource: %s", f.arn)
	}
	if revision != "" && revision != f.revisionID {
		return errorf(http.StatusPreconditionFailed, "PreconditionFailedException",
			"The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id")
	}
	return nil
}

func (s *Server) markUpdatedLocked(f *function) {
	now := s.cfg.Now()
	f.creating = false
	f.lastModified = now
	f.settleAt = now.Add(s.cfg.TransitionDelay)
	f.revisionID = newRequestID()
}

type updateCodeInput struct {
	ZipFile    []byte `json:"ZipFile"`
	S3Bucket   string `json:"S3Bucket"`
	ImageURI   string `json:"ImageUri"`
	DryRun     bool   `json:"DryRun"`
	RevisionID string `json:"RevisionId"`
}

func (s *Server) updateFunctionCode(w http.ResponseWriter, r *http.Request) {
	var in updateCodeInput
	if err := decodeJSON(r, maxControlBodySize, &in, errLambdaInvalid); err != nil {
		writeError(w, err)
		return
	}
	s.mu.Lock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err == nil {
		err = s.updateGuardLocked(f, in.RevisionID)
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	code, err := s.storeCode(f.name, in.ZipFile)
	if err != nil {
		writeError(w, err)
		return
	}
	if in.DryRun {
		code.remove()
		s.mu.Lock()
		out := s.configurationLocked(f)
		s.mu.Unlock()
		out.CodeSha256, out.CodeSize = code.sha256, code.size
		writeJSON(w, http.StatusOK, out)
		return
	}
	s.mu.Lock()
	if err := s.updateGuardLocked(f, in.RevisionID); err != nil || f.deleted {
		s.mu.Unlock()
		code.remove()
		if err == nil {
			err = errLambdaNotFound("Function not found: %s", f.arn)
		}
		writeError(w, err)
		return
	}
	old := f.code
	f.code = code
	s.markUpdatedLocked(f)
	stop := s.retireLocked(f)
	old.retired = true
	removeOld := old.refs == 0
	out := s.configurationLocked(f)
	s.mu.Unlock()
	s.stopAll(stop)
	if removeOld {
		old.remove()
	}
	s.log.Info("localcloud: function code updated", "function", f.name, "sha256", code.sha256)
	writeJSON(w, http.StatusOK, out)
}

type updateConfigInput struct {
	Role        *string            `json:"Role"`
	Handler     *string            `json:"Handler"`
	Description *string            `json:"Description"`
	Timeout     *int               `json:"Timeout"`
	MemorySize  *int               `json:"MemorySize"`
	Environment *environmentConfig `json:"Environment"`
	Runtime     *string            `json:"Runtime"`
	RevisionID  string             `json:"RevisionId"`
}

func (s *Server) updateFunctionConfiguration(w http.ResponseWriter, r *http.Request) {
	var in updateConfigInput
	if err := decodeJSON(r, 1<<20, &in, errLambdaInvalid); err != nil {
		writeError(w, err)
		return
	}
	if err := checkLimits(in.Timeout, in.MemorySize); err != nil {
		writeError(w, err)
		return
	}
	if in.Runtime != nil {
		if err := checkRuntime(*in.Runtime); err != nil {
			writeError(w, err)
			return
		}
	}
	if in.Environment != nil {
		if err := checkVars(in.Environment.Variables); err != nil {
			writeError(w, err)
			return
		}
	}
	s.mu.Lock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err == nil {
		err = s.updateGuardLocked(f, in.RevisionID)
	}
	if err != nil {
		s.mu.Unlock()
		writeError(w, err)
		return
	}
	if in.Role != nil {
		f.role = *in.Role
	}
	if in.Handler != nil {
		f.handler = *in.Handler
	}
	if in.Description != nil {
		f.description = *in.Description
	}
	if in.Timeout != nil {
		f.timeout = *in.Timeout
	}
	if in.MemorySize != nil {
		f.memoryMB = *in.MemorySize
	}
	if in.Runtime != nil {
		f.runtime = *in.Runtime
	}
	if in.Environment != nil {
		f.vars = in.Environment.Variables
	}
	s.markUpdatedLocked(f)
	stop := s.retireLocked(f)
	out := s.configurationLocked(f)
	s.mu.Unlock()
	s.stopAll(stop)
	s.log.Info("localcloud: function configuration updated", "function", f.name)
	writeJSON(w, http.StatusOK, out)
}

type addPermissionInput struct {
	StatementID   string `json:"StatementId"`
	Action        string `json:"Action"`
	Principal     string `json:"Principal"`
	SourceArn     string `json:"SourceArn"`
	SourceAccount string `json:"SourceAccount"`
	RevisionID    string `json:"RevisionId"`
}

// permission is one statement of a function's resource policy, kept in a
// form execute-api can check.
type permission struct {
	Sid       string `json:"Sid"`
	Effect    string `json:"Effect"`
	Principal struct {
		Service string `json:"Service,omitempty"`
		AWS     string `json:"AWS,omitempty"`
	} `json:"Principal"`
	Action    string         `json:"Action"`
	Resource  string         `json:"Resource"`
	Condition map[string]any `json:"Condition,omitempty"`
}

func (s *Server) addPermission(w http.ResponseWriter, r *http.Request) {
	var in addPermissionInput
	if err := decodeJSON(r, 1<<20, &in, errLambdaInvalid); err != nil {
		writeError(w, err)
		return
	}
	if in.StatementID == "" || in.Action == "" || in.Principal == "" {
		writeError(w, errLambdaInvalid("StatementId, Action and Principal are required"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	if f.policySids[in.StatementID] {
		writeError(w, errLambdaConflict("The statement id (%s) provided already exists. Please provide a new statement id, or remove the existing statement.", in.StatementID))
		return
	}
	var p permission
	p.Sid, p.Effect, p.Action, p.Resource = in.StatementID, "Allow", in.Action, f.arn
	if strings.Contains(in.Principal, ".") {
		p.Principal.Service = in.Principal
	} else {
		p.Principal.AWS = in.Principal
	}
	cond := map[string]any{}
	if in.SourceArn != "" {
		cond["ArnLike"] = map[string]string{"AWS:SourceArn": in.SourceArn}
	}
	if in.SourceAccount != "" {
		cond["StringEquals"] = map[string]string{"AWS:SourceAccount": in.SourceAccount}
	}
	if len(cond) > 0 {
		p.Condition = cond
	}
	b, err := json.Marshal(p)
	if err != nil {
		writeError(w, fmt.Errorf("encode policy statement: %w", err))
		return
	}
	f.policy = append(f.policy, b)
	f.policySids[in.StatementID] = true
	f.revisionID = newRequestID()
	writeJSON(w, http.StatusCreated, map[string]string{"Statement": string(b)})
}

func (s *Server) policyDocLocked(f *function) string {
	stmts := make([]json.RawMessage, len(f.policy))
	copy(stmts, f.policy)
	b, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Id": "default", "Statement": stmts})
	return string(b)
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	if len(f.policy) == 0 {
		writeError(w, errLambdaNotFound("The resource you requested does not exist."))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"Policy": s.policyDocLocked(f), "RevisionId": f.revisionID})
}

func (s *Server) removePermission(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	sid := r.PathValue("sid")
	if !f.policySids[sid] {
		writeError(w, errLambdaNotFound("Statement %s is not found in resource policy.", sid))
		return
	}
	delete(f.policySids, sid)
	f.policy = slices.DeleteFunc(f.policy, func(raw json.RawMessage) bool {
		var p permission
		return json.Unmarshal(raw, &p) == nil && p.Sid == sid
	})
	w.WriteHeader(http.StatusNoContent)
}

// permitsLocked reports whether the function's policy lets principal invoke it
// from sourceArn.
func (s *Server) permitsLocked(f *function, principal, sourceArn string) bool {
	for _, raw := range f.policy {
		var p permission
		if json.Unmarshal(raw, &p) != nil {
			continue
		}
		if p.Principal.Service != principal && p.Principal.AWS != "*" {
			continue
		}
		if p.Action != "lambda:InvokeFunction" && p.Action != "lambda:*" && p.Action != "*" {
			continue
		}
		if like, ok := p.Condition["ArnLike"].(map[string]any); ok {
			pattern, _ := like["AWS:SourceArn"].(string)
			if !globMatch(pattern, sourceArn) {
				continue
			}
		}
		return true
	}
	return false
}

// globMatch matches s against pattern where * matches any run of characters
// (including '/') and ? one character, as IAM's ArnLike does.
func globMatch(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

type concurrencyInput struct {
	ReservedConcurrentExecutions *int `json:"ReservedConcurrentExecutions"`
}

func (s *Server) putConcurrency(w http.ResponseWriter, r *http.Request) {
	var in concurrencyInput
	if err := decodeJSON(r, 1<<20, &in, errLambdaInvalid); err != nil {
		writeError(w, err)
		return
	}
	if in.ReservedConcurrentExecutions == nil || *in.ReservedConcurrentExecutions < 0 {
		writeError(w, errLambdaInvalid("ReservedConcurrentExecutions must be ≥ 0"))
		return
	}
	if *in.ReservedConcurrentExecutions > s.cfg.Concurrency {
		writeError(w, errLambdaInvalid("Specified ReservedConcurrentExecutions for function exceeds account limit of %d", s.cfg.Concurrency))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	n := *in.ReservedConcurrentExecutions
	f.reserved = &n
	writeJSON(w, http.StatusOK, map[string]int{"ReservedConcurrentExecutions": n})
}

func (s *Server) deleteConcurrency(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	f.reserved = nil
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getConcurrency(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.lookupLocked(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := map[string]int{}
	if f.reserved != nil {
		out["ReservedConcurrentExecutions"] = *f.reserved
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) accountSettings(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.lm.functions)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"AccountLimit": map[string]any{
			"ConcurrentExecutions":           s.cfg.Concurrency,
			"UnreservedConcurrentExecutions": s.cfg.Concurrency,
			"CodeSizeZipped":                 maxZipBytes,
			"CodeSizeUnzipped":               maxUnzippedBytes,
		},
		"AccountUsage": map[string]any{"FunctionCount": n},
	})
}
