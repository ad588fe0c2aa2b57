"""A handler-style function: Lambda's `handler(event, context)` shape.

The event is {"parameter": <value>}; the return value, any JSON-serialisable
object, is the result (a struct over XML-RPC).
"""
import platform


def handler(event, context):
    name = event.get("parameter") or "world"
    return {
        "greeting": "Hello, %s!" % name,
        "length": len(str(name)),
        "python": platform.python_version(),
    }
