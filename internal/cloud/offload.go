package cloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	ltypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/lambdawrap"
)

// Stats are the offloader's counters since it was built.
type Stats struct {
	Calls      int64 // Invoke calls that reached the breaker
	Succeeded  int64 // calls that returned a result
	Failed     int64 // calls that returned an error (function errors included)
	Retries    int64 // extra requests sent after a retriable answer
	Throttled  int64 // 429 / TooManyRequests answers seen
	Rejected   int64 // calls refused by the open breaker (or cloud off / not deployed)
	ColdStarts int64
	Pings      int64 // keep-warm pings sent (not counted in Calls)
	Breaker    BreakerState
}

// Offloader sends calls to the deployed function, through API Gateway with
// the API key or straight to Lambda Invoke (Config.OffloadVia). It retries
// 429/5xx/connection errors a bounded number of times within the caller's
// deadline, and a circuit breaker makes a dead cloud fail fast.
type Offloader struct {
	cfg    Config
	http   *http.Client
	lambda *lambda.Client // ViaInvoke only
	br     *Breaker
	log    *slog.Logger
	now    func() time.Time

	ep atomic.Pointer[Endpoint]

	calls, succeeded, failed, retries, throttled, rejected, coldStarts, pings atomic.Int64
}

// NewOffloader builds the offload client. awsCfg (from LoadAWSConfig) is used
// only with OFFLOAD_VIA=invoke. With Mode=off it returns a disabled Offloader
// whose Invoke always fails with spillway.ErrCloudUnavailable. Calls fail the
// same way until SetEndpoint has been given the deployed Endpoint.
func NewOffloader(awsCfg aws.Config, cfg Config, log *slog.Logger) *Offloader {
	cfg = cfg.withKnobs()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &Offloader{
		cfg: cfg,
		br:  NewBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown),
		log: log,
		now: time.Now,
	}
	if !cfg.Enabled() {
		return o
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          cfg.MaxConns,
		MaxIdleConnsPerHost:   cfg.MaxConns,
		MaxConnsPerHost:       cfg.MaxConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	o.http = &http.Client{Transport: tr}
	if cfg.OffloadVia == ViaAPIGateway && cfg.Timeout > apiGatewayLimit {
		log.Warn("cloud: LAMBDA_TIMEOUT is above API Gateway's integration limit; longer calls end in 504 (reported as a timeout)",
			"lambda_timeout", cfg.Timeout, "limit", apiGatewayLimit)
	}
	if cfg.OffloadVia == ViaInvoke {
		o.lambda = lambda.NewFromConfig(awsCfg, func(lo *lambda.Options) {
			lo.Retryer = aws.NopRetryer{} // retries are ours, bounded by the caller's deadline
			lo.HTTPClient = o.http
		})
	}
	return o
}

// SetEndpoint points the offloader at a deployed function. Safe to call
// while calls run (e.g. after a redeploy).
func (o *Offloader) SetEndpoint(ep Endpoint) { o.ep.Store(&ep) }

// Endpoint returns the current endpoint and whether one is set.
func (o *Offloader) Endpoint() (Endpoint, bool) {
	ep := o.ep.Load()
	if ep == nil {
		return Endpoint{}, false
	}
	return *ep, true
}

// Enabled reports whether a cloud is configured (CLOUD is not off).
func (o *Offloader) Enabled() bool { return o.cfg.Enabled() }

// Ready reports whether a call made now would be sent: the cloud is enabled,
// deployed, and the breaker is not open.
func (o *Offloader) Ready() bool {
	return o.Enabled() && o.ep.Load() != nil && o.br.State(o.now()) != BreakerOpen
}

// State is the breaker's state now.
func (o *Offloader) State() BreakerState { return o.br.State(o.now()) }

// Stats returns the counters.
func (o *Offloader) Stats() Stats {
	return Stats{
		Calls: o.calls.Load(), Succeeded: o.succeeded.Load(), Failed: o.failed.Load(),
		Retries: o.retries.Load(), Throttled: o.throttled.Load(), Rejected: o.rejected.Load(),
		ColdStarts: o.coldStarts.Load(), Pings: o.pings.Load(), Breaker: o.State(),
	}
}

// Close releases idle connections. Calls after Close still work.
func (o *Offloader) Close() {
	if o.http != nil {
		o.http.CloseIdleConnections()
	}
}

// apiGatewayLimit is API Gateway's default integration timeout.
const apiGatewayLimit = 29 * time.Second

// class is how one attempt ended.
type class int

const (
	classOK          class = iota // result or function error: done
	classFinal                    // an error not worth retrying, the cloud is fine (timeout, bad param)
	classRetry                    // 5xx or connection error: retry, counts as a failure at the end
	classThrottled                // 429: retry, neutral for the breaker
	classUnavailable              // the cloud refuses us (403, 404): no retry, counts as a failure
	classCaller                   // the caller's context ended
)

// CallIDHeader carries spillway.CloudCall.ID to the cloud.
const CallIDHeader = "X-Spillway-Call-Id"

// Invoke runs the function in the cloud with c.Param as the event's
// "parameter". Errors: *spillway.FunctionError when the function raised;
// spillway.ErrTimeout when Lambda timed it out or the caller's deadline
// passed; spillway.ErrCloudUnavailable when the cloud is off, not deployed,
// unreachable, rejects the key, or the breaker is open; spillway.ErrCloudNotRun as well
// where the function provably did not run.
func (o *Offloader) Invoke(ctx context.Context, c spillway.CloudCall) (spillway.CloudResult, error) {
	if !o.Enabled() {
		o.rejected.Add(1)
		return spillway.CloudResult{}, fmt.Errorf("offload: cloud is off: %w: %w", spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	ep := o.ep.Load()
	if ep == nil {
		o.rejected.Add(1)
		return spillway.CloudResult{}, fmt.Errorf("offload: function not deployed yet: %w: %w", spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	body, err := json.Marshal(map[string]any{"parameter": c.Param})
	if err != nil {
		return spillway.CloudResult{}, fmt.Errorf("offload: encode parameter: %v: %w", err, spillway.ErrInvalidParams)
	}
	start := o.now()
	if !o.br.Allow(start) {
		o.rejected.Add(1)
		return spillway.CloudResult{}, fmt.Errorf("offload to %s: circuit breaker open after %d consecutive failures, next probe in %s: %w: %w",
			o.target(ep), o.cfg.BreakerThreshold, o.br.RetryIn(start).Round(time.Millisecond), spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	o.calls.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.cfg.CallTimeout)
		defer cancel()
	}

	var (
		res   spillway.CloudResult
		cl    class
		lastE error
	)
	for attempt := 0; ; attempt++ {
		res.Attempts = attempt + 1
		var v any
		var cold bool
		v, cold, cl, lastE = o.once(ctx, ep, body, c.ID)
		if cl == classThrottled {
			o.throttled.Add(1)
		}
		if cl == classOK {
			res.Value, res.ColdStart = v, cold
		}
		if (cl != classRetry && cl != classThrottled) || attempt+1 >= o.cfg.MaxAttempts {
			break
		}
		why := resendReason(cl, lastE)
		if (why == "server_error" || why == "lost") && !c.Idempotent {
			break // the function may have run: at most once
		}
		wait := backoffDelay(attempt, o.cfg.BackoffBase, o.cfg.BackoffMax, rand.Float64())
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*wait {
			break // no time left for another try worth making
		}
		if !sleep(ctx, wait) {
			break
		}
		if c.Resend != nil && !c.Resend(why) {
			break
		}
		o.retries.Add(1)
	}
	res.Latency = o.now().Sub(start)
	o.br.Record(outcome(cl), o.now())

	if res.ColdStart {
		o.coldStarts.Add(1)
	}
	if lastE != nil {
		o.failed.Add(1)
		if cl == classRetry || cl == classThrottled {
			if ctx.Err() != nil {
				return res, fmt.Errorf("offload to %s: %v (gave up after %d attempts: %w): %w", o.target(ep), lastE, res.Attempts, ctx.Err(), spillway.ErrTimeout)
			}
			return res, fmt.Errorf("offload to %s: gave up after %d attempts: %w", o.target(ep), res.Attempts, lastE)
		}
		return res, lastE
	}
	o.succeeded.Add(1)
	return res, nil
}

// PingResult is how a keep-warm ping went.
type PingResult struct {
	ColdStart bool          // the ping started a new execution environment
	Latency   time.Duration // its round trip
}

// Ping sends the keep-warm ping (lambdawrap.PingEvent) by the path calls
// take (API Gateway with the key, or Lambda Invoke) and through the same
// breaker, so the function's Lambda keeps an execution environment warm
// without running the function. It is sent once, never retried: the next
// ping comes soon enough. The caller spends it from the cloud budget first
// (control.KeepWarm does). Errors are Invoke's; a deployed shim that ran
// the function instead of answering the ping is an error too.
func (o *Offloader) Ping(ctx context.Context) (PingResult, error) {
	if !o.Enabled() {
		return PingResult{}, fmt.Errorf("ping: cloud is off: %w: %w", spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	ep := o.ep.Load()
	if ep == nil {
		return PingResult{}, fmt.Errorf("ping: function not deployed yet: %w: %w", spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	start := o.now()
	if !o.br.Allow(start) {
		return PingResult{}, fmt.Errorf("ping %s: circuit breaker open, next probe in %s: %w: %w",
			o.target(ep), o.br.RetryIn(start).Round(time.Millisecond), spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.cfg.CallTimeout)
		defer cancel()
	}
	o.pings.Add(1)
	v, cold, cl, err := o.once(ctx, ep, lambdawrap.PingEvent(), "")
	res := PingResult{ColdStart: cold, Latency: o.now().Sub(start)}
	o.br.Record(outcome(cl), o.now())
	if cl == classThrottled {
		o.throttled.Add(1)
	}
	if err != nil {
		return res, fmt.Errorf("ping: %w", err)
	}
	if _, ok := v.(pong); !ok {
		return res, fmt.Errorf("ping %s: the deployed shim ran the function instead of answering the ping (an older deployment?)", o.target(ep))
	}
	return res, nil
}

// resendReason names why a request is sent again, for CloudCall.Resend.
func resendReason(cl class, err error) string {
	switch {
	case cl == classThrottled:
		return "throttled"
	case errors.Is(err, spillway.ErrCloudNotRun):
		return "not_sent"
	case errors.Is(err, errServerError):
		return "server_error"
	}
	return "lost"
}

// errServerError marks a 5xx answer: the function may have run.
var errServerError = errors.New("cloud answered with a server error")

func outcome(c class) Outcome {
	switch c {
	case classOK, classFinal:
		return OutcomeSuccess
	case classRetry, classUnavailable:
		return OutcomeFailure
	}
	return OutcomeNeutral
}

func (o *Offloader) target(ep *Endpoint) string {
	if o.cfg.OffloadVia == ViaInvoke {
		return "Lambda " + ep.FunctionName
	}
	return ep.InvokeURL
}

// once sends one request. A function error comes back as classOK with the
// error set: the call is done and the cloud is healthy.
func (o *Offloader) once(ctx context.Context, ep *Endpoint, body []byte, callID string) (any, bool, class, error) {
	if o.cfg.OffloadVia == ViaInvoke {
		return o.onceInvoke(ctx, ep, body, callID)
	}
	return o.onceHTTP(ctx, ep, body, callID)
}

func (o *Offloader) onceHTTP(ctx context.Context, ep *Endpoint, body []byte, callID string) (any, bool, class, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.InvokeURL, bytes.NewReader(body))
	if err != nil {
		return nil, false, classUnavailable, fmt.Errorf("offload: build request for %s: %v: %w: %w", ep.InvokeURL, err, spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("x-api-key", ep.APIKey)
	if callID != "" {
		req.Header.Set(CallIDHeader, callID)
	}
	resp, err := o.http.Do(req)
	if err != nil {
		return nil, false, o.transportClass(ctx), o.transportErr(ctx, ep.InvokeURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxPayload+1))
	if err != nil {
		return nil, false, o.transportClass(ctx), o.transportErr(ctx, ep.InvokeURL, fmt.Errorf("read response: %w", err))
	}
	if len(data) > maxPayload {
		return nil, false, classFinal, fmt.Errorf("offload to %s: %w: %w", ep.InvokeURL, errPayloadTooLarge, spillway.ErrPayloadTooLarge)
	}
	return classifyHTTP(resp.StatusCode, data, ep.InvokeURL)
}

// classifyHTTP maps an API Gateway answer to the call's outcome.
func classifyHTTP(status int, data []byte, url string) (any, bool, class, error) {
	switch {
	case status == http.StatusOK:
		v, cold, err := parsePayload(data, "")
		return v, cold, payloadClass(err), err
	case status == http.StatusForbidden:
		return nil, false, classUnavailable, fmt.Errorf("offload to %s: API key rejected (403 %s): %w: %w", url, apiMessage(data), spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	case status == http.StatusTooManyRequests:
		return nil, false, classThrottled, fmt.Errorf("offload to %s: throttled (429 %s): %w: %w", url, apiMessage(data), spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	case status == http.StatusRequestEntityTooLarge:
		return nil, false, classFinal, fmt.Errorf("offload to %s: 413 %s: %w: %w", url, apiMessage(data), spillway.ErrPayloadTooLarge, spillway.ErrCloudNotRun)
	case status == http.StatusGatewayTimeout:
		// API Gateway gave up on the integration (its 29 s limit).
		return nil, false, classFinal, fmt.Errorf("offload to %s: 504 %s: %w", url, apiMessage(data), spillway.ErrTimeout)
	case status >= 500:
		return nil, false, classRetry, fmt.Errorf("offload to %s: %d %s: %w: %w", url, status, apiMessage(data), spillway.ErrCloudUnavailable, errServerError)
	default:
		return nil, false, classUnavailable, fmt.Errorf("offload to %s: unexpected %d %s: %w", url, status, apiMessage(data), spillway.ErrCloudUnavailable)
	}
}

func payloadClass(err error) class {
	var fe *spillway.FunctionError
	switch {
	case err == nil, errors.As(err, &fe):
		return classOK
	default:
		return classFinal
	}
}

func (o *Offloader) onceInvoke(ctx context.Context, ep *Endpoint, body []byte, callID string) (any, bool, class, error) {
	var opts []func(*lambda.Options)
	if callID != "" {
		opts = append(opts, func(lo *lambda.Options) {
			lo.APIOptions = append(lo.APIOptions, smithyhttp.AddHeaderValue(CallIDHeader, callID))
		})
	}
	out, err := o.lambda.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(ep.FunctionName),
		Payload:        body,
		InvocationType: ltypes.InvocationTypeRequestResponse,
	}, opts...)
	if err != nil {
		return nil, false, o.invokeErrClass(ctx, err), o.invokeErr(ctx, ep.FunctionName, err)
	}
	if len(out.Payload) > maxPayload {
		return nil, false, classFinal, fmt.Errorf("offload to Lambda %s: %w: %w", ep.FunctionName, errPayloadTooLarge, spillway.ErrPayloadTooLarge)
	}
	v, cold, err := parsePayload(out.Payload, aws.ToString(out.FunctionError))
	return v, cold, payloadClass(err), err
}

func (o *Offloader) invokeErrClass(ctx context.Context, err error) class {
	if ctx.Err() != nil {
		return classCaller
	}
	var (
		tooMany *ltypes.TooManyRequestsException
		tooBig  *ltypes.RequestTooLargeException
		notF    *ltypes.ResourceNotFoundException
		resp    *awshttp.ResponseError
	)
	switch {
	case errors.As(err, &tooMany):
		return classThrottled
	case errors.As(err, &tooBig):
		return classFinal
	case errors.As(err, &notF):
		return classUnavailable
	case errors.As(err, &resp) && resp.HTTPStatusCode() != 0:
		switch code := resp.HTTPStatusCode(); {
		case code == http.StatusTooManyRequests:
			return classThrottled
		case code >= 500:
			return classRetry
		default:
			return classUnavailable
		}
	}
	return classRetry // no HTTP response (the SDK reports status 0): connection error
}

func (o *Offloader) invokeErr(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil {
		return o.transportErr(ctx, "Lambda "+name, err)
	}
	var tooBig *ltypes.RequestTooLargeException
	if errors.As(err, &tooBig) {
		return fmt.Errorf("offload to Lambda %s: %v: %w: %w", name, err, spillway.ErrPayloadTooLarge, spillway.ErrCloudNotRun)
	}
	var resp *awshttp.ResponseError
	if !errors.As(err, &resp) || resp.HTTPStatusCode() == 0 {
		if notSent(err) {
			return fmt.Errorf("offload to Lambda %s: cannot reach the cloud: %v: %w: %w", name, err, spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
		}
		return fmt.Errorf("offload to Lambda %s: cannot reach the cloud: %v: %w", name, err, spillway.ErrCloudUnavailable)
	}
	switch code := resp.HTTPStatusCode(); {
	case code >= 500:
		return fmt.Errorf("offload to Lambda %s: %v: %w: %w", name, err, spillway.ErrCloudUnavailable, errServerError)
	case code == http.StatusTooManyRequests || code == http.StatusForbidden || code == http.StatusNotFound:
		return fmt.Errorf("offload to Lambda %s: %v: %w: %w", name, err, spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	return fmt.Errorf("offload to Lambda %s: %v: %w", name, err, spillway.ErrCloudUnavailable)
}

func (o *Offloader) transportClass(ctx context.Context) class {
	if ctx.Err() != nil {
		return classCaller
	}
	return classRetry
}

// transportErr words an error that came without an HTTP answer.
func (o *Offloader) transportErr(ctx context.Context, target string, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("offload to %s: no answer before the deadline: %w", target, spillway.ErrTimeout)
	case ctx.Err() != nil:
		return fmt.Errorf("offload to %s: %w", target, ctx.Err())
	}
	if notSent(err) {
		return fmt.Errorf("offload to %s: cannot reach the cloud: %v: %w: %w", target, err, spillway.ErrCloudUnavailable, spillway.ErrCloudNotRun)
	}
	return fmt.Errorf("offload to %s: cannot reach the cloud or its answer was lost: %v: %w", target, err, spillway.ErrCloudUnavailable)
}

// notSent reports whether a transport error happened before the request
// could reach the cloud: the connection was never made (refused, no route,
// DNS), so the function did not run.
func notSent(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// sleep waits d or until ctx ends; it reports whether the full wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
