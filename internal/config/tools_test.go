package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway/internal/localcloud"
)

func TestLoadLocalcloud(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(localcloud.Config) bool
	}{
		{"empty", nil, "", func(c localcloud.Config) bool {
			return c.Concurrency == localcloud.DefaultConcurrency && c.Python == "" && c.Isolation == localcloud.IsolationContainer &&
				c.IdleTimeout == localcloud.DefaultIdleTimeout && c.Region == "us-east-1" && c.Instance == localcloud.DefaultInstance
		}},
		{"concurrency", map[string]string{"LOCALCLOUD_CONCURRENCY": "3"}, "", func(c localcloud.Config) bool { return c.Concurrency == 3 }},
		{"bad concurrency", map[string]string{"LOCALCLOUD_CONCURRENCY": "0"}, "LOCALCLOUD_CONCURRENCY", nil},
		{"python", map[string]string{"LOCALCLOUD_PYTHON": "/opt/py"}, "", func(c localcloud.Config) bool { return c.Python == "/opt/py" }},
		{"idle seconds", map[string]string{"LOCALCLOUD_IDLE_TIMEOUT": "30"}, "", func(c localcloud.Config) bool { return c.IdleTimeout == 30*time.Second }},
		{"idle duration", map[string]string{"LOCALCLOUD_IDLE_TIMEOUT": "2m"}, "", func(c localcloud.Config) bool { return c.IdleTimeout == 2*time.Minute }},
		{"bad idle", map[string]string{"LOCALCLOUD_IDLE_TIMEOUT": "soon"}, "LOCALCLOUD_IDLE_TIMEOUT", nil},
		{"region", map[string]string{"AWS_REGION": "eu-west-1"}, "", func(c localcloud.Config) bool { return c.Region == "eu-west-1" }},
		{"dir", map[string]string{"LOCALCLOUD_DIR": "/srv/lc"}, "", func(c localcloud.Config) bool { return c.Dir == "/srv/lc" }},
		{"image default", nil, "", func(c localcloud.Config) bool { return c.Image == "spillway-worker:latest" }},
		{"image follows IMAGE_TAG", map[string]string{"IMAGE_TAG": "cfg"}, "", func(c localcloud.Config) bool { return c.Image == "spillway-worker:cfg" }},
		{"unsafe process", map[string]string{"LOCALCLOUD_ISOLATION": "unsafe-process"}, "", func(c localcloud.Config) bool {
			return c.Isolation == localcloud.IsolationUnsafeProcess
		}},
		{"bad isolation", map[string]string{"LOCALCLOUD_ISOLATION": "process"}, "LOCALCLOUD_ISOLATION", nil},
		{"container limits", map[string]string{"LOCALCLOUD_IMAGE": "img:1", "LOCALCLOUD_INSTANCE": "stack-1", "LOCALCLOUD_PIDS_LIMIT": "64",
			"LOCALCLOUD_CPUS": "0.5", "LOCALCLOUD_MAX_MEMORY": "256"}, "", func(c localcloud.Config) bool {
			return c.Image == "img:1" && c.Instance == "stack-1" && c.PidsLimit == 64 && c.CPUs == 0.5 && c.MaxMemoryMB == 256
		}},
		{"bad instance", map[string]string{"LOCALCLOUD_INSTANCE": "a b"}, "LOCALCLOUD_INSTANCE", nil},
		{"bad pids", map[string]string{"LOCALCLOUD_PIDS_LIMIT": "2"}, "LOCALCLOUD_PIDS_LIMIT", nil},
		{"bad cpus", map[string]string{"LOCALCLOUD_CPUS": "0"}, "LOCALCLOUD_CPUS", nil},
		{"bad memory", map[string]string{"LOCALCLOUD_MAX_MEMORY": "8"}, "LOCALCLOUD_MAX_MEMORY", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lc, err := LoadLocalcloud(env(tt.env))
			c := lc.Server
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || !tt.check(c) {
				t.Errorf("LoadLocalcloud = %+v, %v", c, err)
			}
		})
	}
}

func TestLoadLocalcloudListen(t *testing.T) {
	c, err := LoadLocalcloud(env(nil))
	if err != nil || c.Listen != localcloud.DefaultListen || c.LogLevel != "info" {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	c, err = LoadLocalcloud(env(map[string]string{"LOCALCLOUD_LISTEN": "0.0.0.0:4566", "LOG_LEVEL": "debug"}))
	if err != nil || c.Listen != "0.0.0.0:4566" || c.LogLevel != "debug" {
		t.Fatalf("set: %+v, %v", c, err)
	}
	if _, err := LoadLocalcloud(env(map[string]string{"LOG_LEVEL": "chatty"})); err == nil || !strings.Contains(err.Error(), `LOG_LEVEL="chatty"`) {
		t.Fatalf("bad LOG_LEVEL: %v", err)
	}
}

func TestLoadClient(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // URL(); "" means an error
		tok  string
		fn   string // FunctionName; "" means faas
	}{
		{"default", nil, "http://127.0.0.1:8000/", "", ""},
		{"port", map[string]string{"LOAD_BALANCER_PORT": "9001"}, "http://127.0.0.1:9001/", "", ""},
		{"LB_URL wins", map[string]string{"LB_URL": "http://localhost:7000/RPC2", "LOAD_BALANCER_PORT": "1"}, "http://localhost:7000/RPC2", "", ""},
		{"list", map[string]string{"LB_URL": "http://a:1,http://b:2"}, "http://a:1,http://b:2", "", ""},
		{"token", map[string]string{"LB_AUTH_TOKEN": "s3cret"}, "http://127.0.0.1:8000/", "s3cret", ""},
		{"default function", map[string]string{"FAAS_FUNCTION_NAME": "fib"}, "http://127.0.0.1:8000/", "", "fib"},
		{"bad port", map[string]string{"LOAD_BALANCER_PORT": "eighty"}, "", "", ""},
		{"port out of range", map[string]string{"LOAD_BALANCER_PORT": "70000"}, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadClient(env(tt.env))
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), "LOAD_BALANCER_PORT") {
					t.Fatalf("err = %v, want one naming LOAD_BALANCER_PORT", err)
				}
				return
			}
			fn := tt.fn
			if fn == "" {
				fn = "faas"
			}
			if err != nil || c.URL() != tt.want || c.AuthToken != tt.tok || c.FunctionName != fn {
				t.Fatalf("LoadClient = %+v (URL %s), %v; want %s, token %q, function %s", c, c.URL(), err, tt.want, tt.tok, fn)
			}
		})
	}
}

// TestDotenv: the environment wins over the file, even when empty, unless
// NonEmpty drops its empty variables; a missing file is no file.
func TestDotenv(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(path, []byte("REDIS_ADDR=10.0.0.1:6379\nREDIS_PASSWORD=from-file\nFAAS_FUNCTION_NAME=fib\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	osEnv := env(map[string]string{"REDIS_ADDR": "127.0.0.2:6379", "REDIS_PASSWORD": ""})
	lookup, err := Dotenv(path, osEnv)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := LoadAddfaas(lookup)
	if a != (Addfaas{FunctionName: "fib", RedisAddr: "127.0.0.2:6379", RedisPassword: ""}) {
		t.Errorf("Dotenv: %+v", a)
	}
	lookup, err = Dotenv(path, NonEmpty(osEnv))
	if err != nil {
		t.Fatal(err)
	}
	a, _ = LoadAddfaas(lookup)
	if a != (Addfaas{FunctionName: "fib", RedisAddr: "127.0.0.2:6379", RedisPassword: "from-file"}) {
		t.Errorf("Dotenv over NonEmpty: %+v", a)
	}
	lookup, err = Dotenv(filepath.Join(t.TempDir(), "missing"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := LoadAddfaas(lookup); a != (Addfaas{FunctionName: "faas", RedisAddr: "127.0.0.1:6379"}) {
		t.Errorf("no file: %+v", a)
	}
}
