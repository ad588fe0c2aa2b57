package config

import (
	"strings"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/workerapi"
)

func TestLoadWorkerErrors(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"FUNCTION_STYLE": "lambda"}, `FUNCTION_STYLE="lambda"`},
		{map[string]string{"LOCAL_TIMEOUT": "soon"}, `LOCAL_TIMEOUT="soon"`},
		{map[string]string{"LOCAL_TIMEOUT": "0"}, `LOCAL_TIMEOUT=0s`},
		{map[string]string{"WORKER_CONCURRENCY": "0"}, `WORKER_CONCURRENCY=0`},
		{map[string]string{"WORKER_CONCURRENCY": "257"}, `WORKER_CONCURRENCY=257`},
		{map[string]string{"SERVER_PORT": "http"}, `SERVER_PORT="http"`},
		{map[string]string{"SERVER_PORT": "70000"}, `SERVER_PORT=70000`},
		{map[string]string{"FUNCTION_HANDLER": "main.run"}, `FUNCTION_HANDLER="main.run"`},
		{map[string]string{"FUNCTION_VERSION": "v2"}, `FUNCTION_VERSION="v2"`},
		{map[string]string{"MAX_RESULT_BYTES": "10"}, `MAX_RESULT_BYTES=10`},
		{map[string]string{"WORKER_MAX_REQUEST_BYTES": "10"}, `WORKER_MAX_REQUEST_BYTES=10`},
		{map[string]string{"LOG_LEVEL": "loud"}, `LOG_LEVEL="loud"`},
		{map[string]string{"FUNCTION_REUSE_PROCESS": "yes"}, `FUNCTION_REUSE_PROCESS="yes"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := LoadWorker(env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to name %s", err, tt.want)
			}
		})
	}
	c, err := LoadWorker(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := workerapi.Env{Port: 8001, FunctionPath: "/var/task/function.py", Style: spillway.StyleScript,
		Handler: "handler", FunctionName: "faas", Concurrency: 1, LocalTimeout: 5 * time.Second,
		Python: "/usr/bin/python3", MaxRequestBytes: 1 << 20, MaxResultBytes: 6 << 20, LogLevel: "info"}
	if c != want {
		t.Fatalf("defaults = %+v\nwant %+v", c, want)
	}
	c, err = LoadWorker(env(map[string]string{"LOCAL_TIMEOUT": "2.5"}))
	if err != nil || c.LocalTimeout != 2500*time.Millisecond {
		t.Fatalf("LOCAL_TIMEOUT=2.5: %v, %v", c.LocalTimeout, err)
	}
}

// TestWorkerReadsWhatLBWrites: the environment internal/docker builds
// (workerapi.Env.Env) is read back by the worker (LoadWorker) as the same
// values, and lb's and the worker's defaults of the variables they share
// agree.
func TestWorkerReadsWhatLBWrites(t *testing.T) {
	lb := Defaults()
	sent := workerapi.Env{Port: lb.WorkerPort, FunctionPath: workerapi.FunctionPath, Style: spillway.StyleScript,
		Handler: "main", ReuseProcess: true, Version: 12, Concurrency: 4, LocalTimeout: 1500 * time.Millisecond, MaxResultBytes: 2 << 20}
	vars := map[string]string{}
	for _, kv := range sent.Env() {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	got, err := LoadWorker(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	// What lb does not set keeps the worker's defaults.
	want := sent
	want.FunctionName, want.Python, want.MaxRequestBytes, want.LogLevel = "faas", "/usr/bin/python3", 1<<20, "info"
	if got != want {
		t.Fatalf("worker read %+v\nlb sent    %+v", got, want)
	}
	def, err := LoadWorker(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if def.Port != lb.WorkerPort || def.Concurrency != lb.WorkerConcurrency || def.LocalTimeout != lb.LocalTimeout ||
		def.MaxResultBytes != lb.MaxResultBytes || def.LogLevel != lb.LogLevel {
		t.Errorf("the worker's defaults %+v differ from lb's %+v", def, lb)
	}
}
