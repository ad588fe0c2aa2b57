// Package testhelp is test support: only tests import it.
package testhelp

import "os"

// Knob reads a test knob (documented in .env.example).
func Knob() string { return os.Getenv("TEST_KNOB") }
