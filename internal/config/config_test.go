package config

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) Lookup {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatalf("Load(empty) = %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"NumberOfServers", c.NumberOfServers, 2},
		{"MaxServers", c.MaxServers, 4},
		{"WorkerConcurrency", c.WorkerConcurrency, 1},
		{"LoadBalancerPort", c.LoadBalancerPort, 8000},
		{"LocalTimeout", c.LocalTimeout, 5 * time.Second},
		{"ElasticitySleep", c.ElasticitySleep, time.Second},
		{"ScaleDownDelay", c.ScaleDownDelay, 30 * time.Second},
		{"Scheduler", c.Scheduler, "round-robin"},
		{"OffloadPolicy", c.OffloadPolicy, "overflow"},
		{"FunctionName", c.FunctionName, "faas"},
		{"RedisAddr", c.RedisAddr, "127.0.0.1:6379"},
		{"PoolName", c.PoolName, "spillway"},
		{"DockerNetwork", c.DockerNetwork, "spillway-workers"},
		{"Cloud.Mode", c.Cloud.Mode, "local"},
		{"Cloud.Endpoint", c.Cloud.Endpoint, "http://127.0.0.1:4566"},
		{"Cloud.LambdaName", c.Cloud.LambdaName, "spillway-faas"},
		{"Cloud.LambdaMemory", c.Cloud.LambdaMemory, int32(3008)},
		{"LocalSlots", c.LocalSlots(), 4},
		{"CloudKeepWarmEvery", c.CloudKeepWarmEvery, 4 * time.Minute},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadParses(t *testing.T) {
	c, err := Load(env(map[string]string{
		"NUMBER_OF_SERVERS": "3", "LOCAL_TIMEOUT": "2.5", "ELASTICITY_SLEEP": "250ms",
		"WORKER_MEMORY": "512m", "SCHEDULER": "least-connections", "CLOUD": "off",
		"FAAS_FUNCTION_NAME": "fib",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxServers != 6 || c.LocalTimeout != 2500*time.Millisecond || c.ElasticitySleep != 250*time.Millisecond ||
		c.WorkerMemory != 512<<20 || c.Scheduler != "least-connections" || c.Cloud.Enabled() || c.Cloud.LambdaName != "spillway-fib" {
		t.Errorf("unexpected config: %+v", c)
	}
}

func TestLoadErrorsNameVariableAndValue(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want []string // substrings of the error
	}{
		{map[string]string{"NUMBER_OF_SERVERS": "two"}, []string{`NUMBER_OF_SERVERS="two"`, "not an integer"}},
		{map[string]string{"NUMBER_OF_SERVERS": "-1"}, []string{"NUMBER_OF_SERVERS=-1", "must not be negative"}},
		{map[string]string{"NUMBER_OF_SERVERS": "0", "MAX_SERVERS": "0"}, []string{"MAX_SERVERS=0", "at least 1"}},
		{map[string]string{"SCALE_TO_ZERO_AFTER": "0s"}, []string{"SCALE_TO_ZERO_AFTER=0s", "must be positive"}},
		{map[string]string{"NUMBER_OF_SERVERS": "3", "MAX_SERVERS": "2"}, []string{"MAX_SERVERS=2", "NUMBER_OF_SERVERS (3)"}},
		{map[string]string{"LOCAL_TIMEOUT": "soon"}, []string{`LOCAL_TIMEOUT="soon"`, "not a duration"}},
		{map[string]string{"LOCAL_TIMEOUT": "0"}, []string{"LOCAL_TIMEOUT=0s", "positive"}},
		{map[string]string{"SCHEDULER": "random"}, []string{`SCHEDULER="random"`, "round-robin, least-connections"}},
		{map[string]string{"OFFLOAD_POLICY": "sometimes"}, []string{`OFFLOAD_POLICY="sometimes"`}},
		{map[string]string{"CLOUD": "gcp"}, []string{`CLOUD="gcp"`}},
		{map[string]string{"CLOUD": "aws"}, []string{"AWS_ROLE", "role ARN"}},
		{map[string]string{"LOAD_BALANCER_PORT": "70000"}, []string{"LOAD_BALANCER_PORT=70000"}},
		{map[string]string{"WORKER_MEMORY": "lots"}, []string{`WORKER_MEMORY="lots"`}},
		{map[string]string{"FAAS_FUNCTION_NAME": "a b"}, []string{`FAAS_FUNCTION_NAME="a b"`}},
		{map[string]string{"LB_ID": "lb 1"}, []string{`LB_ID="lb 1"`}},
		{map[string]string{"AWS_ENDPOINT_URL": "localhost:4566"}, []string{"AWS_ENDPOINT_URL"}},
		{map[string]string{"LAMBDA_MEMORY": "64"}, []string{"LAMBDA_MEMORY=64"}},
		{map[string]string{"CLOUD_KEEP_WARM_EVERY": "500ms"}, []string{"CLOUD_KEEP_WARM_EVERY=500ms", "at least 1s"}},
		// several problems are reported together
		{map[string]string{"NUMBER_OF_SERVERS": "x", "SCHEDULER": "y"}, []string{"NUMBER_OF_SERVERS", "SCHEDULER"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.want, "/"), func(t *testing.T) {
			_, err := Load(env(tt.env))
			if err == nil {
				t.Fatalf("Load(%v) succeeded, want an error", tt.env)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true}, {"512k", 512 << 10, true}, {"256m", 256 << 20, true},
		{"1g", 1 << 30, true}, {"256MiB", 256 << 20, true}, {"2GB", 2 << 30, true},
		{"", 0, false}, {"-1", 0, false}, {"1t", 0, false}, {"99999999999g", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestExampleIsValid: the values .env.example shows (set or commented out)
// are a valid configuration for every binary that reads them.
func TestExampleIsValid(t *testing.T) {
	documented, err := documented("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { v, ok := documented[k]; return v, ok }
	if _, err := Load(lookup); err != nil {
		t.Errorf(".env.example is not a valid lb configuration: %v", err)
	}
	if _, err := LoadWorker(lookup); err != nil {
		t.Errorf(".env.example is not a valid worker environment: %v", err)
	}
	if _, err := LoadLocalcloud(lookup); err != nil {
		t.Errorf(".env.example is not a valid localcloud configuration: %v", err)
	}
	if _, err := LoadClient(lookup); err != nil {
		t.Errorf(".env.example is not a valid client configuration: %v", err)
	}
}

// TestListenBeyondLoopbackNeedsTokenOrConsent: lb refuses to listen on an
// address other callers can reach unless it has a token or is told that
// anonymous callers are fine. The protection-off rows (token set, or
// LB_ALLOW_ANONYMOUS=true) load; only the unprotected one fails.
func TestListenBeyondLoopbackNeedsTokenOrConsent(t *testing.T) {
	tests := []struct {
		env     map[string]string
		wantErr bool
	}{
		{map[string]string{}, false}, // default 127.0.0.1
		{map[string]string{"LB_LISTEN_HOST": "127.0.0.1"}, false},
		{map[string]string{"LB_LISTEN_HOST": "127.0.0.2"}, false},
		{map[string]string{"LB_LISTEN_HOST": "::1"}, false},
		{map[string]string{"LB_LISTEN_HOST": "[::1]"}, false},
		{map[string]string{"LB_LISTEN_HOST": "localhost"}, false},
		{map[string]string{"LB_LISTEN_HOST": "0.0.0.0"}, true},
		{map[string]string{"LB_LISTEN_HOST": "::"}, true},
		{map[string]string{"LB_LISTEN_HOST": "192.168.1.10"}, true},
		{map[string]string{"LB_LISTEN_HOST": "::ffff:10.0.0.1"}, true},
		{map[string]string{"LB_LISTEN_HOST": "lb.example"}, true},
		{map[string]string{"LB_LISTEN_HOST": "0.0.0.0", "LB_AUTH_TOKEN": "s3cret"}, false},
		{map[string]string{"LB_LISTEN_HOST": "0.0.0.0", "LB_ALLOW_ANONYMOUS": "true"}, false},
		{map[string]string{"LB_LISTEN_HOST": "0.0.0.0", "LB_ALLOW_ANONYMOUS": "false"}, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.env), func(t *testing.T) {
			_, err := Load(env(tt.env))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Load(%v) = %v, want error %v", tt.env, err, tt.wantErr)
			}
			if err != nil {
				for _, w := range []string{"LB_LISTEN_HOST=" + strconv.Quote(tt.env["LB_LISTEN_HOST"]), "LB_AUTH_TOKEN", "LB_ALLOW_ANONYMOUS=true"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
			}
		})
	}
}

func TestRedisPassword(t *testing.T) {
	c, err := Load(env(map[string]string{"REDIS_PASSWORD": "pw"}))
	if err != nil || c.RedisPassword != "pw" {
		t.Fatalf("REDIS_PASSWORD: %q, %v", c.RedisPassword, err)
	}
}

// NUMBER_OF_SERVERS=0 scales every function to zero: the ceiling then
// defaults to 2 and the autoscaler learns SCALE_TO_ZERO_AFTER.
func TestScaleToZeroConfig(t *testing.T) {
	c, err := Load(env(map[string]string{"NUMBER_OF_SERVERS": "0", "SCALE_TO_ZERO_AFTER": "90s"}))
	if err != nil {
		t.Fatal(err)
	}
	sc := c.ScaleConfig()
	if c.NumberOfServers != 0 || c.MaxServers != 2 || sc.N != 0 || sc.ZeroAfter != 90*time.Second {
		t.Errorf("N %d max %d, scale config %+v", c.NumberOfServers, c.MaxServers, sc)
	}
	if err := sc.Validate(); err != nil {
		t.Errorf("the autoscaler refuses a minimum of 0: %v", err)
	}
}
