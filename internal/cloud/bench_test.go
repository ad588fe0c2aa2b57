package cloud_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/cloud"
	"github.com/spillway-faas/spillway/internal/localcloud"
)

// BenchmarkOffloadWarm is the steady-state round trip of an offloaded call to
// a no-op function in localcloud: JSON envelope, HTTP (or Lambda Invoke),
// the Runtime API and the shim, and back.
func BenchmarkOffloadWarm(b *testing.B) {
	env := startLocalcloud(b, localcloud.Config{TransitionDelay: -1})
	cfg := benchConfig(env.url)
	ep := deploy(b, env, cfg, noopFn)
	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		b.Run(string(via), func(b *testing.B) {
			c := cfg
			c.OffloadVia = via
			o := offloader(b, env, c, ep)
			invoke(b, o, nil) // warm the environment and the connection
			ctx := context.Background()
			for b.Loop() {
				res, err := o.Invoke(ctx, spillway.CloudCall{Param: nil})
				if err != nil || res.ColdStart {
					b.Fatalf("warm call: %+v %v", res, err)
				}
			}
			if st := o.Stats(); st.Retries > 0 {
				b.Fatalf("retries in a warm benchmark: %+v", st)
			}
		})
	}
}

// BenchmarkOffloadCold is the first call after the function's code changed:
// localcloud starts a new execution environment (Python, the shim, the
// function's import). The redeploy itself is not timed.
func BenchmarkOffloadCold(b *testing.B) {
	env := startLocalcloud(b, localcloud.Config{TransitionDelay: -1})
	cfg := benchConfig(env.url)
	for _, via := range []cloud.Via{cloud.ViaAPIGateway, cloud.ViaInvoke} {
		b.Run(string(via), func(b *testing.B) {
			c := cfg
			c.OffloadVia = via
			ep := deploy(b, env, c, noopFn)
			o := offloader(b, env, c, ep)
			ctx := context.Background()
			i := 0
			for b.Loop() {
				b.StopTimer()
				fn := noopFn
				i++
				fn.Code += fmt.Sprintf("# %s %d %d\n", via, i, time.Now().UnixNano())
				o.SetEndpoint(deploy(b, env, c, fn))
				b.StartTimer()
				res, err := o.Invoke(ctx, spillway.CloudCall{Param: nil})
				if err != nil || !res.ColdStart {
					b.Fatalf("cold call: %+v %v", res, err)
				}
			}
		})
	}
}

// benchConfig lifts the usage plan throttle so that it does not pace the
// benchmark.
func benchConfig(url string) cloud.Config {
	c := testConfig(url, "noop")
	c.ThrottleRPS, c.ThrottleBurst = 1e6, 1e6
	return c
}
