"""localcloud's Lambda runtime for Python: a Runtime API client.

localcloud starts one of these per execution environment: in a container
(`python3 -u -c <this file>` in /var/task, the Runtime API over stdio) or, in
the unsafe process mode, as `python3 -u bootstrap.py` in the unzipped
function directory (the Runtime API on a loopback port). It imports the
handler named by _HANDLER ("module.function") once, then loops: long-poll
GET /2018-06-01/runtime/invocation/next on AWS_LAMBDA_RUNTIME_API, call the
handler with the event and a context object, and POST the JSON result to
.../invocation/<id>/response or the error to .../invocation/<id>/error.
An import failure is posted to /runtime/init/error and ends the process.

After each invocation it writes one marker line to stdout so localcloud can
cut the logs of that invocation; the marker never reaches the caller.

Standard library only.
"""

import http.client
import importlib
import io
import json
import os
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
PREFIX = "/2018-06-01/runtime"
MARKER = "\x1eLOCALCLOUD_END "
# In a container localcloud carries the Runtime API over the container's
# stdin and stdout (the container has no network at all), and the function's
# output goes to stderr: AWS_LAMBDA_RUNTIME_API is then "stdio".
STDIO = API == "stdio"


class _KeepOpen(io.BufferedReader):
    """stdin as the read side of the Runtime API connection; http.client
    closes the file of each response, this one stays open."""

    def close(self):
        pass


class StdioSock:
    """The socket http.client needs, over stdin and a copy of stdout."""

    def __init__(self):
        self.out = os.dup(1)
        os.dup2(2, 1)  # print() and the log marker now go to stderr
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), line_buffering=True)
        self.r = _KeepOpen(io.FileIO(0, "rb", closefd=False))

    def sendall(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.out, view)
            view = view[n:]

    def makefile(self, mode, *args, **kwargs):
        return self.r

    def close(self):
        pass


class StdioConnection(http.client.HTTPConnection):
    def __init__(self, sock):
        super().__init__("localcloud")
        self._stdio = sock

    def connect(self):
        self.sock = self._stdio


class Conn:
    """One keep-alive HTTP connection to the Runtime API, reopened on error
    (over stdio there is one connection for the environment's life)."""

    def __init__(self):
        self.c = None
        self.stdio = StdioSock() if STDIO else None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.c is None:
                if self.stdio is not None:
                    self.c = StdioConnection(self.stdio)
                else:
                    host, _, port = API.rpartition(":")
                    self.c = http.client.HTTPConnection(host, int(port))
            try:
                self.c.request(method, PREFIX + path, body=body, headers=headers or {})
                resp = self.c.getresponse()
                data = resp.read()
                return resp, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.c.close()
                self.c = None
                if attempt or self.stdio is not None:
                    raise
        raise RuntimeError("unreachable")


class Context:
    """The subset of Lambda's Python context object handlers use."""

    def __init__(self, request_id, deadline_ms, arn, client_context):
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


def error_body(exc, error_type=None, request_id=""):
    tb = traceback.format_tb(exc.__traceback__) if exc.__traceback__ else []
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": request_id,
        "stackTrace": [line.rstrip("\n") for line in tb],
    }


def post_json(conn, path, obj, error_type=None):
    headers = {"Content-Type": "application/json"}
    if error_type:
        headers["Lambda-Runtime-Function-Error-Type"] = error_type
    conn.request("POST", path, json.dumps(obj).encode(), headers)


def load_handler(conn):
    name = os.environ.get("_HANDLER", "")
    module_name, _, func_name = name.rpartition(".")
    if not module_name or not func_name:
        err = {"errorMessage": "Bad handler '%s': not enough values to unpack (expected 2, got 1)" % name,
               "errorType": "Runtime.MalformedHandlerName", "requestId": "", "stackTrace": []}
        print("[ERROR] Runtime.MalformedHandlerName: " + err["errorMessage"], file=sys.stderr)
        post_json(conn, "/init/error", err, err["errorType"])
        sys.exit(1)
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except Exception as exc:  # the user's module failed to import
        err = error_body(exc, "Runtime.ImportModuleError")
        err["errorMessage"] = "Unable to import module '%s': %s" % (module_name, exc)
        print("[ERROR] Runtime.ImportModuleError: " + err["errorMessage"], file=sys.stderr)
        post_json(conn, "/init/error", err, err["errorType"])
        sys.exit(1)
    func = getattr(module, func_name, None)
    if not callable(func):
        err = {"errorMessage": "Handler '%s' missing on module '%s'" % (func_name, module_name),
               "errorType": "Runtime.HandlerNotFound", "requestId": "", "stackTrace": []}
        print("[ERROR] Runtime.HandlerNotFound: " + err["errorMessage"], file=sys.stderr)
        post_json(conn, "/init/error", err, err["errorType"])
        sys.exit(1)
    return func


def main():
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    conn = Conn()
    handler = load_handler(conn)
    while True:
        resp, body = conn.request("GET", "/invocation/next")
        if resp.status != 200:
            time.sleep(0.05)
            continue
        request_id = resp.getheader("Lambda-Runtime-Aws-Request-Id", "")
        deadline_ms = int(resp.getheader("Lambda-Runtime-Deadline-Ms", "0") or 0)
        arn = resp.getheader("Lambda-Runtime-Invoked-Function-Arn", "")
        client_context = resp.getheader("Lambda-Runtime-Client-Context")
        if client_context:
            try:
                client_context = json.loads(client_context)
            except ValueError:
                pass
        ctx = Context(request_id, deadline_ms, arn, client_context)
        try:
            event = json.loads(body) if body else {}
        except ValueError as exc:
            event, failed = None, error_body(exc, "Runtime.UnmarshalError", request_id)
        else:
            failed = None
        result = None
        if failed is None:
            try:
                result = handler(event, ctx)
            except Exception as exc:  # the function raised: reported, not fatal
                failed = error_body(exc, None, request_id)
                lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                print("[ERROR] %s: %s\n%s" % (failed["errorType"], failed["errorMessage"], lines),
                      file=sys.stderr, end="")
        payload = None
        if failed is None:
            try:
                payload = json.dumps(result).encode()
            except (TypeError, ValueError) as exc:
                failed = {"errorMessage": "Unable to marshal response: %s" % exc,
                          "errorType": "Runtime.MarshalError", "requestId": request_id,
                          "stackTrace": []}
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, (MARKER + request_id + "\n").encode())
        if failed is None:
            conn.request("POST", "/invocation/%s/response" % request_id, payload,
                         {"Content-Type": "application/json"})
        else:
            post_json(conn, "/invocation/%s/error" % request_id, failed, failed["errorType"])


if __name__ == "__main__":
    main()
