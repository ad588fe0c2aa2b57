package testutil

import _ "embed"

// Probes is Python source for the isolation tests: functions that try, from
// function code, to reach Redis, lb, a host service or another environment's
// Runtime API, to rewrite the function's own code, to hold memory and to start
// processes. Each answers "reached…" or "refused…"; a test appends a handler.
//
//go:embed probe.py
var Probes string
