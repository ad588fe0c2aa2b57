"""A handler-style function that returns its parameter; used by the worker
benchmarks to measure per-call overhead."""


def handler(event, context):
    return event["parameter"]
