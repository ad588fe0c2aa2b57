# A gateway in the reference's shape: Python's SimpleXMLRPCServer with only
# call_faas(param). Usage: refserver.py PORT. Prints "ready" once listening.
import sys
from xmlrpc.server import SimpleXMLRPCServer

calls = 0


def call_faas(param):
    global calls
    calls += 1
    return "result(%s)" % (param,)


server = SimpleXMLRPCServer(("127.0.0.1", int(sys.argv[1])), logRequests=False, allow_none=True)
server.register_function(call_faas, "call_faas")
print("ready", flush=True)
server.serve_forever()
