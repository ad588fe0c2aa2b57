// Package policy holds Spillway's pure decisions: which worker runs a call
// (Scheduler), whether a call runs locally or in the cloud (Offloader), how big
// the worker pool should be (Autoscaler), and the online estimates those
// decisions read (Estimator).
//
// Nothing here does I/O, starts goroutines or reads the clock: every decision
// receives the current time in its input, so tests and the simulator in
// policy/sim move time by hand. The lb collects observations, calls Decide, and
// acts on the decision (collect, decide, act).
//
// Concurrency: Scheduler, Offloader and Estimator values are safe for
// concurrent use (the request path calls them from many goroutines). An
// Autoscaler is also safe for concurrent use, but it is meant to be driven by
// one loop every ELASTICITY_SLEEP: its decisions depend on the sequence of
// snapshots it has seen.
package policy
