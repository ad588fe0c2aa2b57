// Command tool reads the environment past config in every way the scan
// knows.
package main

import (
	"fmt"
	"os"

	"example.com/envscan/internal/config"
)

// get is a helper: it passes its parameter on as the variable's name.
func get(key string) string { return os.Getenv(key) }

type env struct{ getenv func(string) string }

// withDefault returns a lookup with defaults: a factory of helpers.
func withDefault(env func(string) (string, bool)) func(key, def string) string {
	return func(key, def string) string {
		if v, ok := env(key); ok {
			return v
		}
		return def
	}
}

func main() {
	a, b := config.Load(os.LookupEnv) // through config: not a read here
	name := "DYNAMIC"
	e := env{getenv: os.Getenv}
	lookup := os.LookupEnv
	v, _ := lookup("VIA_VARIABLE")
	closure := func(name string) string { return os.Getenv(name) }
	factory := withDefault(os.LookupEnv)
	fmt.Println(a, b,
		os.Getenv("READ_OUTSIDE"), // documented, but outside config
		get("VIA_HELPER"),
		e.getenv("VIA_FIELD"),
		v,
		os.Getenv(name),
		len(os.Environ()),
		closure("VIA_CLOSURE"),
		factory("VIA_FACTORY", "x"),
	)
}
