// Package cloud deploys a function to AWS Lambda behind an API Gateway REST
// API (or to localcloud, which speaks the same wire protocol) and offloads
// calls to it. The same code talks to real AWS and to localcloud: only the
// endpoint and the credentials differ.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// Mode says which cloud, if any, takes offloaded calls.
type Mode string

const (
	ModeAWS   Mode = "aws"   // real AWS, credentials from the SDK's standard chain
	ModeLocal Mode = "local" // localcloud at Config.Endpoint
	ModeOff   Mode = "off"   // no cloud: nothing is deployed, every offload fails fast
)

// Via says how an offloaded call reaches the function.
type Via string

const (
	ViaAPIGateway Via = "apigateway" // HTTPS POST to the stage's invoke URL with x-api-key
	ViaInvoke     Via = "invoke"     // Lambda Invoke through the SDK
)

// ResourcePath is the API Gateway resource (under the stage) that invoke URLs
// point at. The root resource carries the same method for clients that post to
// the stage itself.
const ResourcePath = "invoke"

// Handler is the Lambda handler string of every zip lambdawrap builds.
const Handler = "handler.handler"

// Config is the cloud part of the lb's configuration. internal/config
// builds it (config.Config.CloudConfig) from the variables named on the
// fields, with their defaults; the zero retry, breaker and wait knobs, which
// no variable sets, take the defaults of withKnobs.
type Config struct {
	Mode       Mode          // CLOUD
	Region     string        // AWS_REGION
	Role       string        // AWS_ROLE: the Lambda execution role ARN
	Endpoint   string        // AWS_ENDPOINT_URL: localcloud in local mode; optional in aws mode
	LambdaName string        // LAMBDA_NAME
	MemoryMB   int32         // LAMBDA_MEMORY
	Timeout    time.Duration // LAMBDA_TIMEOUT: the function's timeout in Lambda
	APIName    string        // API_NAME: REST API, API key and usage plan are found by this name
	Stage      string        // API_STAGE

	ThrottleRPS   float64 // CLOUD_THROTTLE_RPS: usage plan steady rate
	ThrottleBurst int32   // CLOUD_THROTTLE_BURST: usage plan burst

	OffloadVia Via // OFFLOAD_VIA

	// Offload client knobs.
	MaxAttempts      int           // tries per call on 429/5xx/connection errors (3)
	BackoffBase      time.Duration // first retry delay before jitter (50ms)
	BackoffMax       time.Duration // cap on one retry delay (1s)
	BreakerThreshold int           // consecutive failed calls that open the breaker (5)
	BreakerCooldown  time.Duration // open time before one probe is let through (5s)
	CallTimeout      time.Duration // deadline for a call whose context has none (Timeout+5s)
	MaxConns         int           // connections to the invoke host (256)

	// Deploy knobs.
	WaitTimeout time.Duration // longest wait for the function to become Active/Updated (3m)
}

// withKnobs fills the zero retry, breaker and wait knobs with their defaults.
func (c Config) withKnobs() Config {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = 50 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = time.Second
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = 5
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = 5 * time.Second
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = c.Timeout + 5*time.Second
	}
	if c.MaxConns == 0 {
		c.MaxConns = 256
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = 3 * time.Minute
	}
	return c
}

// Enabled reports whether a cloud is configured at all.
func (c Config) Enabled() bool { return c.Mode != ModeOff }

// Validate checks c's own invariants (a known mode and path, the names and
// the endpoint a deploy needs, positive throttles, sane knobs), naming the
// variable of each bad value. The ranges Lambda allows are internal/config's
// to check.
func (c Config) Validate() error {
	c = c.withKnobs()
	var errs []error
	bad := func(name string, v any, why string) {
		errs = append(errs, fmt.Errorf("%s=%v: %s", name, v, why))
	}
	switch c.Mode {
	case ModeAWS, ModeLocal, ModeOff:
	default:
		bad("CLOUD", fmt.Sprintf("%q", c.Mode), "want aws, local or off")
	}
	if !c.Enabled() {
		return errors.Join(errs...)
	}
	if c.Region == "" {
		bad("AWS_REGION", `""`, "must not be empty")
	}
	if c.Role == "" {
		bad("AWS_ROLE", `""`, "the Lambda execution role ARN is required")
	}
	if c.Mode == ModeLocal && c.Endpoint == "" {
		bad("AWS_ENDPOINT_URL", `""`, "CLOUD=local needs the localcloud URL")
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("AWS_ENDPOINT_URL", fmt.Sprintf("%q", c.Endpoint), "must be an http(s) URL")
		}
	}
	if c.LambdaName == "" {
		bad("LAMBDA_NAME", `""`, "must not be empty")
	}
	if c.MemoryMB <= 0 {
		bad("LAMBDA_MEMORY", c.MemoryMB, "must be positive")
	}
	if c.Timeout <= 0 {
		bad("LAMBDA_TIMEOUT", c.Timeout, "must be positive")
	}
	if c.APIName == "" {
		bad("API_NAME", `""`, "must not be empty")
	}
	if c.Stage == "" {
		bad("API_STAGE", `""`, "must not be empty")
	}
	if c.ThrottleRPS <= 0 {
		bad("CLOUD_THROTTLE_RPS", c.ThrottleRPS, "must be positive")
	}
	if c.ThrottleBurst <= 0 {
		bad("CLOUD_THROTTLE_BURST", c.ThrottleBurst, "must be positive")
	}
	switch c.OffloadVia {
	case ViaAPIGateway, ViaInvoke:
	default:
		bad("OFFLOAD_VIA", fmt.Sprintf("%q", c.OffloadVia), "want apigateway or invoke")
	}
	if c.MaxAttempts < 1 || c.BreakerThreshold < 1 || c.BackoffBase < 0 || c.BackoffMax < c.BackoffBase ||
		c.BreakerCooldown < 0 || c.CallTimeout <= 0 || c.MaxConns < 1 || c.WaitTimeout <= 0 {
		errs = append(errs, fmt.Errorf("cloud retry/breaker knobs out of range: attempts=%d backoff=%s..%s breaker=%d/%s call-timeout=%s conns=%d wait=%s",
			c.MaxAttempts, c.BackoffBase, c.BackoffMax, c.BreakerThreshold, c.BreakerCooldown, c.CallTimeout, c.MaxConns, c.WaitTimeout))
	}
	return errors.Join(errs...)
}

// localAccessKey is the dummy access key used against localcloud when the
// standard chain has no credentials; localcloud accepts any.
const localAccessKey = "spillway-local"

// LoadAWSConfig builds the SDK configuration for c: credentials from the SDK's
// standard chain (environment, shared files, SSO, container/instance roles),
// the region, and for localcloud the base endpoint. In local mode the instance
// metadata service is not asked (it is not on loopback) and, when the chain
// finds nothing, static dummy credentials are used. Mode=off returns a zero
// aws.Config. Credentials are never logged.
func LoadAWSConfig(ctx context.Context, c Config) (aws.Config, error) {
	if !c.Enabled() {
		return aws.Config{}, nil
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(c.Region)}
	if c.Mode == ModeLocal {
		opts = append(opts, awsconfig.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	if c.Endpoint != "" {
		ac.BaseEndpoint = aws.String(strings.TrimRight(c.Endpoint, "/"))
	}
	if c.Mode == ModeLocal && !hasCredentials(ctx, ac) {
		ac.Credentials = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(localAccessKey, "localcloud-accepts-any", ""))
	}
	return ac, nil
}

// hasCredentials reports whether the chain in ac resolves to credentials
// within a short bound.
func hasCredentials(ctx context.Context, ac aws.Config) bool {
	if ac.Credentials == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	creds, err := ac.Credentials.Retrieve(ctx)
	return err == nil && creds.HasKeys()
}
