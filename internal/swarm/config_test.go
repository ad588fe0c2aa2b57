package swarm

import (
	"strings"
	"testing"
)

func TestConfigValidateAndNetwork(t *testing.T) {
	good := Config{Pool: "spillway", Image: "img", ServerPort: 8001}
	tests := []struct {
		name        string
		mutate      func(*Config)
		wantVar     string // "" means valid
		wantNetwork string
	}{
		{"defaults: the overlay is <pool>-workers", func(*Config) {}, "", "spillway-workers"},
		{"DOCKER_NETWORK names it", func(c *Config) { c.NetworkName = "mynet" }, "", "mynet"},
		{"bad network", func(c *Config) { c.NetworkName = "a b" }, "DOCKER_NETWORK", ""},
		{"empty pool", func(c *Config) { c.Pool = "" }, "POOL_NAME", ""},
		{"bad function", func(c *Config) { c.Function = "a/b" }, "function name", ""},
		{"no image", func(c *Config) { c.Image = "" }, "WORKER_IMAGE", ""},
		{"port 0", func(c *Config) { c.ServerPort = 0 }, "SERVER_PORT", ""},
		{"negative memory", func(c *Config) { c.Memory = -1 }, "WORKER_MEMORY", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.withDefaults().Validate()
			if tt.wantVar == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if got := c.Network(); got != tt.wantNetwork {
					t.Errorf("Network() = %q, want %q", got, tt.wantNetwork)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantVar) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.wantVar)
			}
		})
	}
}
