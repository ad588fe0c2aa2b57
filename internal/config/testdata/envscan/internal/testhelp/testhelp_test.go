package testhelp_test

import (
	"testing"

	"example.com/envscan/internal/testhelp"
)

func TestKnob(t *testing.T) { _ = testhelp.Knob() }
