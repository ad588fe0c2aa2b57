"""A script-style function that does nothing but print its argument; used by
the worker benchmarks to measure per-call overhead."""
import sys

print(sys.argv[1] if len(sys.argv) > 1 else "")
