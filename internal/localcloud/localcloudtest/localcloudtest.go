// Package localcloudtest runs localcloud in-process behind an httptest
// server for tests that drive it with the real AWS SDK.
package localcloudtest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/apigateway"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/spillway-faas/spillway/internal/localcloud"
	"github.com/spillway-faas/spillway/internal/testutil"
)

// Cloud is a running localcloud owned by a test.
type Cloud struct {
	Server *localcloud.Server
	HTTP   *httptest.Server
	URL    string     // endpoint, e.g. http://127.0.0.1:PORT
	AWS    aws.Config // region us-east-1 (or cfg.Region), static dummy credentials, BaseEndpoint URL
}

// Start runs localcloud with cfg (isolation defaults to unsafe-process,
// Python to testutil.Python, logs go to the test log at warn and above) and
// stops it when the test ends.
func Start(t testing.TB, cfg localcloud.Config) *Cloud {
	t.Helper()
	if cfg.Isolation == "" {
		// Tests on the host without Docker; container tests ask for
		// localcloud.IsolationContainer.
		cfg.Isolation = localcloud.IsolationUnsafeProcess
	}
	if cfg.Python == "" {
		cfg.Python = testutil.Python(t)
	}
	if cfg.Image == "" {
		cfg.Image = testutil.Image("worker") // the image make images built (IMAGE_TAG)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Region == "" {
		cfg.Region = localcloud.DefaultRegion
	}
	srv, err := localcloud.New(cfg)
	if err != nil {
		t.Fatalf("start localcloud: %v", err)
	}
	hs := httptest.NewServer(srv)
	c := &Cloud{Server: srv, HTTP: hs, URL: hs.URL}
	c.AWS = aws.Config{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDLOCALCLOUD", "localcloud-secret", ""),
		BaseEndpoint: aws.String(hs.URL),
	}
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close localcloud: %v", err)
		}
	})
	return c
}

// Lambda returns a Lambda client for the cloud; opts adjust it (e.g. the
// retryer).
func (c *Cloud) Lambda(opts ...func(*lambda.Options)) *lambda.Client {
	return lambda.NewFromConfig(c.AWS, opts...)
}

// APIGateway returns an API Gateway client for the cloud.
func (c *Cloud) APIGateway(opts ...func(*apigateway.Options)) *apigateway.Client {
	return apigateway.NewFromConfig(c.AWS, opts...)
}

// NoRetries is a Lambda option that turns the SDK's retries off, so a 429
// reaches the caller instead of being retried.
func NoRetries(o *lambda.Options) { o.RetryMaxAttempts = 1 }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
