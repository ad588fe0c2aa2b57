"""Python's SimpleXMLRPCServer on 127.0.0.1:argv[1], for our Client to call."""
import sys
from xmlrpc.server import SimpleXMLRPCServer

server = SimpleXMLRPCServer(("127.0.0.1", int(sys.argv[1])), allow_none=True,
                            use_builtin_types=True, logRequests=False)


def echo(*args):
    return args[0] if len(args) == 1 else list(args)


def fail():
    raise ZeroDivisionError("division by zero")


def types():
    return {"int": 1, "bool": True, "str": "", "float": 0.5, "none": None,
            "bytes": b"\x00\xff", "list": [], "dict": {}}


server.register_function(echo)
server.register_function(fail)
server.register_function(types)
server.register_introspection_functions()
server.register_multicall_functions()
print("ready", flush=True)
server.serve_forever()
