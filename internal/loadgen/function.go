package loadgen

import (
	"context"
	"errors"
	"fmt"

	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

// ErrOneFunction is wrapped by ResolveFunction's error when a call names a
// function that a target serving one function only does not serve.
var ErrOneFunction = errors.New("the target serves one function only")

// ResolveFunction says how calls reach the function called name, and
// returns the name to call it by ("" for the target's one function, which
// call_faas(param) and invoke(param) reach, as they do without a name).
//
// An empty name stays empty and nothing is asked. Otherwise the target is
// asked for functions(): one that has it serves many functions, and name is
// returned as it is (an unknown name is for the calls to report, with fault
// -32010). One without it (an lb from before many functions, or the
// reference gateway) serves one function: taken to be dflt
// (FAAS_FUNCTION_NAME), so name is then "" when it is dflt, and an error
// wrapping ErrOneFunction otherwise.
func ResolveFunction(ctx context.Context, cl *xmlrpc.Client, name, dflt string) (string, error) {
	if name == "" {
		return "", nil
	}
	err := cl.Call(ctx, "functions", nil, nil)
	switch {
	case err == nil:
		return name, nil
	case !MethodMissing(err):
		return "", fmt.Errorf("ask for the functions served: %w", err)
	case name == dflt:
		return "", nil
	}
	return "", fmt.Errorf("%w (it has no functions method), taken to be %q (FAAS_FUNCTION_NAME), not %q", ErrOneFunction, dflt, name)
}

// Call calls the function named fn with param: call(fn, param), or
// call_faas(param) when fn is "" (the target's default function).
func Call(ctx context.Context, cl *xmlrpc.Client, fn string, param any) (any, error) {
	var res any
	var err error
	if fn == "" {
		err = cl.Call(ctx, "call_faas", []any{param}, &res)
	} else {
		err = cl.Call(ctx, "call", []any{fn, param}, &res)
	}
	return res, err
}

// withFunction returns options with the member "function": fn added (a
// copy; options itself is shared by the run's callers), or options as they
// are when fn is "".
func withFunction(options map[string]any, fn string) map[string]any {
	if fn == "" {
		return options
	}
	out := make(map[string]any, len(options)+1)
	for k, v := range options {
		out[k] = v
	}
	out["function"] = fn
	return out
}
