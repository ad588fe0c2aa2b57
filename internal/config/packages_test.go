package config

import (
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
)

func intp(n int) *int { return &n }

// TestSettingsFor: a function's own settings win; what it leaves unset is
// the .env value; the floor and ceiling never cross.
func TestSettingsFor(t *testing.T) {
	c, err := Load(env(map[string]string{
		"NUMBER_OF_SERVERS": "2", "MAX_SERVERS": "4", "WORKER_CONCURRENCY": "3", "LOCAL_TIMEOUT": "5s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  spillway.Settings
		want Settings
	}{
		{"unset: the .env values", spillway.Settings{}, Settings{2, 4, 3, 5 * time.Second}},
		{"all set", spillway.Settings{Min: intp(1), Max: intp(6), Concurrency: intp(8), Timeout: time.Second},
			Settings{1, 6, 8, time.Second}},
		{"min 0 scales to zero", spillway.Settings{Min: intp(0)}, Settings{0, 4, 3, 5 * time.Second}},
		{"min above MAX_SERVERS raises the ceiling", spillway.Settings{Min: intp(6)}, Settings{6, 6, 3, 5 * time.Second}},
		{"max below NUMBER_OF_SERVERS lowers the floor", spillway.Settings{Max: intp(1)}, Settings{1, 1, 3, 5 * time.Second}},
		{"min above max: min wins", spillway.Settings{Min: intp(3), Max: intp(2)}, Settings{3, 3, 3, 5 * time.Second}},
		{"concurrency only", spillway.Settings{Concurrency: intp(1)}, Settings{2, 4, 1, 5 * time.Second}},
		{"timeout only", spillway.Settings{Timeout: 250 * time.Millisecond}, Settings{2, 4, 3, 250 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn := spillway.Function{Name: "f", Settings: tt.set}
			if got := c.SettingsFor(fn); got != tt.want {
				t.Errorf("SettingsFor = %+v, want %+v", got, tt.want)
			}
			pc := c.PoolConfigFor(fn)
			if pc.Min != tt.want.Min || pc.Max != tt.want.Max || pc.Concurrency != tt.want.Concurrency ||
				pc.LocalTimeout != tt.want.Timeout || pc.MaxResultBytes != c.MaxResultBytes ||
				pc.Spare != (tt.want.Min == 0) {
				t.Errorf("PoolConfigFor = %+v, want the settings %+v", pc, tt.want)
			}
			sc := c.ScaleConfigFor(fn)
			base := c.ScaleConfig()
			if sc.N != tt.want.Min || sc.Max != tt.want.Max || sc.Concurrency != tt.want.Concurrency ||
				sc.Tick != base.Tick || sc.ScaleDownDelay != base.ScaleDownDelay || sc.TargetUtilization != base.TargetUtilization {
				t.Errorf("ScaleConfigFor = %+v, want the settings %+v on %+v", sc, tt.want, base)
			}
		})
	}
	// A function without settings gets exactly the old configurations.
	plain := spillway.Function{Name: "faas"}
	if got, want := c.PoolConfigFor(plain), c.PoolConfig(); got != want {
		t.Errorf("PoolConfigFor(no settings) = %+v, want PoolConfig() %+v", got, want)
	}
	if got, want := c.ScaleConfigFor(plain), c.ScaleConfig(); got != want {
		t.Errorf("ScaleConfigFor(no settings) = %+v, want ScaleConfig() %+v", got, want)
	}
}

// TestWorkerSpare: WORKER_SPARE gives a frozen spare to the pools whose
// minimum is 0, and to none when false.
func TestWorkerSpare(t *testing.T) {
	zero := spillway.Function{Name: "f", Settings: spillway.Settings{Min: intp(0)}}
	one := spillway.Function{Name: "g", Settings: spillway.Settings{Min: intp(1)}}
	tests := []struct {
		env       map[string]string
		zero, one bool
	}{
		{map[string]string{}, true, false},
		{map[string]string{"WORKER_SPARE": "false"}, false, false},
		{map[string]string{"WORKER_SPARE": "true"}, true, false},
	}
	for _, tt := range tests {
		c, err := Load(env(tt.env))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.PoolConfigFor(zero).Spare; got != tt.zero {
			t.Errorf("%v: min 0: Spare = %v, want %v", tt.env, got, tt.zero)
		}
		if got := c.PoolConfigFor(one).Spare; got != tt.one {
			t.Errorf("%v: min 1: Spare = %v, want %v", tt.env, got, tt.one)
		}
	}
}

// TestCloudConfigFor: LAMBDA_NAME and API_NAME name the default function's
// Lambda and REST API; every other function gets spillway-<function> for
// both, and the rest of the cloud configuration is shared.
func TestCloudConfigFor(t *testing.T) {
	tests := []struct {
		name                string
		env                 map[string]string
		function            string
		wantLambda, wantAPI string
	}{
		{"default function, default names", nil, "faas", "spillway-faas", "spillway-faas"},
		{"other function, default names", nil, "hello", "spillway-hello", "spillway-hello"},
		{"FAAS_FUNCTION_NAME moves the default", map[string]string{"FAAS_FUNCTION_NAME": "fib"}, "fib", "spillway-fib", "spillway-fib"},
		{"LAMBDA_NAME/API_NAME name the default function's",
			map[string]string{"LAMBDA_NAME": "my-lambda", "API_NAME": "my-api"}, "faas", "my-lambda", "my-api"},
		{"LAMBDA_NAME/API_NAME do not apply to another function",
			map[string]string{"LAMBDA_NAME": "my-lambda", "API_NAME": "my-api"}, "hello", "spillway-hello", "spillway-hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.CloudConfigFor(tt.function)
			if err != nil {
				t.Fatal(err)
			}
			if got.LambdaName != tt.wantLambda || got.APIName != tt.wantAPI {
				t.Errorf("CloudConfigFor(%q) names Lambda %q, API %q; want %q, %q", tt.function, got.LambdaName, got.APIName, tt.wantLambda, tt.wantAPI)
			}
			want := c.CloudConfig()
			want.LambdaName, want.APIName = got.LambdaName, got.APIName
			if got != want {
				t.Errorf("CloudConfigFor(%q) = %+v, want CloudConfig() but the names: %+v", tt.function, got, want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("CloudConfigFor(%q) does not validate: %v", tt.function, err)
			}
		})
	}
}

// TestDockerConfigFor: one backend per function, all on the pool's
// network with the pool's limits.
func TestDockerConfigFor(t *testing.T) {
	c, err := Load(env(map[string]string{"POOL_NAME": "p1"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"faas", "hello"} {
		got := c.DockerConfigFor(fn)
		want := c.DockerConfig()
		want.Function = fn
		if got != want {
			t.Errorf("DockerConfigFor(%q) = %+v, want %+v", fn, got, want)
		}
		if got.Network != "p1-workers" || got.Pool != "p1" {
			t.Errorf("DockerConfigFor(%q): pool %q network %q, want p1 and p1-workers", fn, got.Pool, got.Network)
		}
	}
}

// TestCloudConfigForRefusesAClash: a function whose own cloud name is the
// one LAMBDA_NAME or API_NAME gives the default function gets no cloud
// configuration (the two would deploy over each other), and the error names
// the variable; without the clash the same function gets its own names.
func TestCloudConfigForRefusesAClash(t *testing.T) {
	for _, tt := range []struct {
		env     map[string]string
		wantErr string
	}{
		{map[string]string{"LAMBDA_NAME": "spillway-hello"}, "LAMBDA_NAME=spillway-hello"},
		{map[string]string{"API_NAME": "spillway-hello"}, "API_NAME=spillway-hello"},
		{map[string]string{"LAMBDA_NAME": "spillway-other"}, ""},
	} {
		c, err := Load(env(tt.env))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.CloudConfigFor("hello")
		switch {
		case tt.wantErr == "" && (err != nil || got.LambdaName != "spillway-hello"):
			t.Errorf("%v: CloudConfigFor(hello) = %+v, %v; want spillway-hello", tt.env, got, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%v: CloudConfigFor(hello) error %v, want one naming %s", tt.env, err, tt.wantErr)
		}
	}
}
