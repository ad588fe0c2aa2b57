package cloud

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

func TestParsePayload(t *testing.T) {
	tests := []struct {
		name     string
		payload  string
		fnErr    string
		want     any
		cold     bool
		wantErr  error  // errors.Is target
		wantFn   string // expected FunctionError text
		errMatch string // substring of the error
	}{
		{name: "script stdout", payload: `{"statusCode":200,"body":"fib(30) = 832040\n","coldStart":true}`,
			want: "fib(30) = 832040\n", cold: true},
		{name: "int result is int64", payload: `{"statusCode":200,"body":832040,"coldStart":false}`,
			want: int64(832040)},
		{name: "nested numbers", payload: `{"statusCode":200,"body":{"a":[1,2.5,"x",9007199254740993],"b":null,"c":true}}`,
			want: map[string]any{"a": []any{int64(1), 2.5, "x", int64(9007199254740993)}, "b": nil, "c": true}},
		{name: "out-of-range number kept as text", payload: `{"statusCode":200,"body":1e400}`, want: "1e400"},
		{name: "null body", payload: `{"statusCode":200,"body":null}`, want: nil},
		{name: "function raised", payload: `{"statusCode":500,"errorType":"ZeroDivisionError","errorMessage":"division by zero","coldStart":false}`,
			wantFn: "ZeroDivisionError: division by zero"},
		{name: "invalid event", payload: `{"statusCode":400,"errorType":"InvalidEvent","errorMessage":"no parameter"}`,
			wantErr: spillway.ErrInvalidParams, errMatch: "no parameter"},
		{name: "Lambda timeout through API Gateway", payload: `{"errorMessage":"2026-01-01T00:00:00Z abc Task timed out after 3.00 seconds","errorType":"Sandbox.Timedout"}`,
			wantErr: spillway.ErrTimeout, errMatch: "Task timed out"},
		{name: "Lambda timeout through Invoke", fnErr: "Unhandled", payload: `{"errorMessage":"Task timed out after 1.00 seconds"}`,
			wantErr: spillway.ErrTimeout},
		{name: "Lambda unhandled error", fnErr: "Unhandled", payload: `{"errorType":"Runtime.ExitError","errorMessage":"exited with signal 9"}`,
			wantErr: spillway.ErrRunnerCrashed, errMatch: "Runtime.ExitError: exited with signal 9"},
		{name: "proxy shape unwrapped", payload: `{"statusCode":200,"headers":{"Content-Type":"application/json"},"body":"{\"statusCode\":200,\"body\":7,\"coldStart\":true}"}`,
			want: int64(7), cold: true},
		{name: "proxy shape with error", payload: `{"statusCode":500,"headers":{},"body":"{\"statusCode\":500,\"errorType\":\"ValueError\",\"errorMessage\":\"bad\"}"}`,
			wantFn: "ValueError: bad"},
		{name: "not JSON", payload: `<html>`, errMatch: "decode Lambda payload"},
		{name: "no status code", payload: `{"foo":1}`, errMatch: "without statusCode"},
		{name: "other status", payload: `{"statusCode":502,"body":"x"}`, errMatch: "status 502"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cold, err := parsePayload([]byte(tt.payload), tt.fnErr)
			wantsErr := tt.wantErr != nil || tt.wantFn != "" || tt.errMatch != ""
			if !wantsErr {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("value (-want +got):\n- %#v\n+ %#v", tt.want, got)
				}
				if cold != tt.cold {
					t.Fatalf("coldStart = %v, want %v", cold, tt.cold)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, value %#v", got)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			if tt.errMatch != "" && !strings.Contains(err.Error(), tt.errMatch) {
				t.Errorf("error %q does not mention %q", err, tt.errMatch)
			}
			if tt.wantFn != "" {
				var fe *spillway.FunctionError
				if !errors.As(err, &fe) || fe.Error() != tt.wantFn {
					t.Errorf("error %v, want FunctionError %q", err, tt.wantFn)
				}
				if spillway.FaultCode(err) != spillway.FaultApplication {
					t.Errorf("fault code %d, want application", spillway.FaultCode(err))
				}
			}
		})
	}
}

func TestClassifyHTTP(t *testing.T) {
	tests := []struct {
		status  int
		body    string
		class   class
		wantErr error
		match   string
	}{
		{200, `{"statusCode":200,"body":"ok"}`, classOK, nil, ""},
		{200, `{"statusCode":500,"errorType":"KeyError","errorMessage":"'x'"}`, classOK, nil, "KeyError"},
		{200, `{"errorMessage":"Task timed out after 1.00 seconds"}`, classFinal, spillway.ErrTimeout, "timed out"},
		{403, `{"message":"Forbidden"}`, classUnavailable, spillway.ErrCloudUnavailable, "API key rejected"},
		{429, `{"message":"Too Many Requests"}`, classThrottled, spillway.ErrCloudUnavailable, "throttled"},
		{500, `{"message":"Internal server error"}`, classRetry, spillway.ErrCloudUnavailable, "Internal server error"},
		{502, `bad gateway`, classRetry, spillway.ErrCloudUnavailable, "502"},
		{503, ``, classRetry, spillway.ErrCloudUnavailable, "503"},
		{504, `{"message":"Endpoint request timed out"}`, classFinal, spillway.ErrTimeout, "Endpoint request timed out"},
		{413, `{"message":"Request Too Long"}`, classFinal, spillway.ErrPayloadTooLarge, "413"},
		{404, `{"message":"Not Found"}`, classUnavailable, spillway.ErrCloudUnavailable, "unexpected 404"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			_, _, cl, err := classifyHTTP(tt.status, []byte(tt.body), "http://x/dev/invoke")
			if cl != tt.class {
				t.Errorf("class = %d, want %d", cl, tt.class)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			if tt.match != "" && (err == nil || !strings.Contains(err.Error(), tt.match)) {
				t.Errorf("error %v does not mention %q", err, tt.match)
			}
			if tt.match == "" && err != nil {
				t.Errorf("unexpected error %v", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		match []string // substrings of the error; nil means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"off ignores the rest", func(c *Config) { c.Mode = ModeOff; c.Role = ""; c.Endpoint = "" }, nil},
		{"bad mode", func(c *Config) { c.Mode = "gcp" }, []string{`CLOUD="gcp"`}},
		{"local needs endpoint", func(c *Config) { c.Endpoint = "" }, []string{"AWS_ENDPOINT_URL"}},
		{"endpoint must be a URL", func(c *Config) { c.Endpoint = "localhost:4566" }, []string{"AWS_ENDPOINT_URL"}},
		{"aws needs a role", func(c *Config) { c.Mode = ModeAWS; c.Role = "" }, []string{"AWS_ROLE"}},
		{"memory", func(c *Config) { c.MemoryMB = 0 }, []string{"LAMBDA_MEMORY=0"}},
		{"timeout", func(c *Config) { c.Timeout = -1 }, []string{"LAMBDA_TIMEOUT"}},
		{"stage", func(c *Config) { c.Stage = "" }, []string{"API_STAGE"}},
		{"throttle", func(c *Config) { c.ThrottleRPS = 0; c.ThrottleBurst = -1 }, []string{"CLOUD_THROTTLE_RPS", "CLOUD_THROTTLE_BURST"}},
		{"via", func(c *Config) { c.OffloadVia = "carrier-pigeon" }, []string{"OFFLOAD_VIA"}},
		{"knobs", func(c *Config) { c.MaxAttempts = -1 }, []string{"knobs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig("fib")
			tt.edit(&c)
			err := c.Validate()
			if tt.match == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted a bad config")
			}
			for _, m := range tt.match {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not name %q", err, m)
				}
			}
		})
	}
}

// validConfig is a local-mode configuration for function, as internal/config
// builds it from an empty environment.
func validConfig(function string) Config {
	return Config{Mode: ModeLocal, Region: "us-east-1", Role: "arn:aws:iam::000000000000:role/spillway-lambda",
		Endpoint: "http://127.0.0.1:4566", LambdaName: "spillway-" + function, MemoryMB: 3008, Timeout: 30 * time.Second,
		APIName: "spillway-" + function, Stage: "dev", ThrottleRPS: 100, ThrottleBurst: 200, OffloadVia: ViaAPIGateway}
}
