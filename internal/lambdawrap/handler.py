"""Spillway's function shim: runs one user function, function.py, in either of
two styles with the same event, result and error shapes everywhere.

Styles
  script   a program run as `python function.py ARG`; its stdout is the result.
  handler  `def handler(event, context)`; its JSON-serialisable return value is
           the result.

Lambda mode (AWS Lambda, localcloud): the runtime imports this file as
`handler` and calls handler(event, context). function.py and spillway.json
({"style": ..., "handler": ...}) lie beside it. The event is
{"parameter": <value>}, or an API Gateway proxy event whose body is that
envelope as a JSON string. The return value is
  {"statusCode": 200, "body": <result>, "coldStart": <bool>}
  {"statusCode": 500, "errorType": "<Type>", "errorMessage": "<msg>", "coldStart": <bool>}
and, for a proxy event, that object JSON-encoded as the body of
  {"statusCode": ..., "headers": {"Content-Type": "application/json"}, "body": "..."}.
The event (or proxy body) {"spillway_ping": true}, with no "parameter" key,
is lb's keep-warm ping (CLOUD_KEEP_WARM): it is answered
  {"statusCode": 200, "ping": true, "coldStart": <bool>}
without running the function.

Worker mode (Spillway's worker): `python3 handler.py --worker --function PATH
--style STYLE [--handler NAME] [--in-fd 3] [--out-fd 4]` runs as one long-lived
process. It speaks line-delimited JSON with its parent over two dedicated file
descriptors, never stdout: the function's own stdout goes to stderr. First it
writes {"ready": true, "pid": N, "initError": null|{type, message}}, then for each
request line {"id": N, "param": <value>, "deadlineMs": <unix ms>} it writes one
response line:
  {"id": N, "ok": true, "result": <result>}
  {"id": N, "ok": false, "error": {"type", "message", "traceback"}}
  {"id": N, "ok": false, "crash": true, "error": {"type", "message"}}
  {"id": N, "ok": false, "tooLarge": true, "error": {"type", "message"}}
The last is a result whose JSON is over --max-result-bytes (MAX_RESULT_BYTES,
default 6 MiB, Lambda's own limit): it is dropped, and the runner stays. In
Lambda mode the same cap comes from spillway.json's "maxResultBytes" and the
answer is {"statusCode": 413, "errorType": "ResultTooLarge", ...}.
A handler that exits the process (sys.exit, os._exit, a crash) ends the stream;
the parent treats that as a crashed runner.

Script semantics, the same everywhere. The script is compiled once; each
call runs in a child forked from the warm process (the worker runs script-style
functions through zygote.py instead, a smaller process with the same
semantics), with sys.argv = [<file name>, str(param)] (no argument when param
is null), stdin /dev/null and stdout captured in an in-memory file, runs the
code as __main__ and leaves with os._exit. Then:
  - normal end, or SystemExit with any code, and some stdout: the result is
    stdout exactly (a usage line printed before sys.exit(1) is a result);
  - SystemExit with a non-zero code and no stdout: error SystemExit with the
    exit message or code;
  - an uncaught exception: error with its type and message (traceback on stderr);
  - the child killed by a signal: a crash (error type Runtime.ExitError).

Reuse-process mode (addfaas --reuse-process: in the worker `--reuse-process`,
in Lambda the environment variable SPILLWAY_REUSE_PROCESS=1) runs a script in
the warm process itself instead: each call gets a fresh __main__, its own
sys.argv, sys.stdin on /dev/null and its stdout (file descriptor 1 too)
captured, and SystemExit and uncaught exceptions are answered as above. After
each call the shim restores the working directory, os.environ, sys.path,
sys.argv, __main__ and the standard streams. What else a call changes stays
for the next: imported modules and their state, threads it started, open
files, atexit functions (they run when the process exits). os._exit or a
signal ends the process, which the worker replaces (a crash).

Standard library only; Python 3.11+.
"""

REUSE_PROCESS_ENV = "SPILLWAY_REUSE_PROCESS"

import builtins
import gc
import importlib.util
import io
import json
import os
import signal
import sys
import time
import traceback
import types

STYLE_SCRIPT = "script"
STYLE_HANDLER = "handler"

# Default cap on a result's JSON: Lambda's synchronous response limit.
DEFAULT_MAX_RESULT_BYTES = 6 * 1024 * 1024

# Limits on what travels back from a forked script child besides its stdout.
_MAX_STATUS = 16 * 1024
_MAX_TEXT = 4096

# Modules imported once in the warm process so a forked script finds them loaded.
# Kept short: every module makes the process larger and each fork slower.
_PREIMPORT = (
    "base64", "bisect", "collections", "copy", "datetime", "functools", "hashlib",
    "heapq", "itertools", "json", "math", "operator", "random", "re", "string",
    "struct", "time",
)


def _exit_status(exc):
    """The status of a script that raised SystemExit, as the process's exit
    would give it: None is 0, an int its low byte, anything else is printed
    to stderr and gives 1."""
    if exc.code is None:
        code = 0
    elif isinstance(exc.code, int):
        code = exc.code & 0xFF
    else:
        print(exc.code, file=sys.stderr)
        code = 1
    status = {"status": "exit", "code": code}
    if exc.code is not None:
        status["message"] = str(exc.code)[:_MAX_TEXT]
    return status


def _error(exc, with_traceback=True):
    """The error shape for an exception raised by the user's code."""
    err = {"type": type(exc).__name__, "message": str(exc)[:_MAX_TEXT]}
    if with_traceback:
        err["traceback"] = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TEXT:]
    return err


def _argv_param(param):
    if param is None:
        return []
    if isinstance(param, str):
        return [param]
    if isinstance(param, (dict, list)):
        return [json.dumps(param)]
    return [str(param)]


class Function:
    """One user function, loaded once, invoked many times."""

    def __init__(self, path, style, handler_name="handler", close_fds=(), reuse_process=False):
        self.path = os.path.abspath(path)
        self.style = style
        # A script runs in this process, not a forked child (reuse-process mode).
        self.reuse_process = reuse_process and style == STYLE_SCRIPT
        self._out_fd = None  # reuse-process mode: the calls' stdout, the process's fd 1, its cwd
        self._fd1 = None
        self._cwd = None
        self._stdout = None
        self._stdin = None
        self.handler_name = handler_name or "handler"
        self.close_fds = tuple(close_fds)  # closed in forked script children
        self.init_error = None
        self._code = None
        self._handler = None
        try:
            self._load()
        except Exception as exc:  # import or compile failed: every call reports it
            traceback.print_exc(file=sys.stderr)
            self.init_error = _error(exc)

    def _load(self):
        folder = os.path.dirname(self.path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        if self.style == STYLE_SCRIPT:
            with open(self.path, "rb") as f:
                source = f.read()
            self._code = compile(source, self.path, "exec", dont_inherit=True)
            for name in _PREIMPORT:
                try:
                    importlib.import_module(name)
                except Exception:
                    pass
        elif self.style == STYLE_HANDLER:
            spec = importlib.util.spec_from_file_location("function", self.path)
            module = importlib.util.module_from_spec(spec)
            sys.modules["function"] = module
            spec.loader.exec_module(module)
            fn = getattr(module, self.handler_name, None)
            if not callable(fn):
                raise AttributeError(
                    "function.py has no callable %r" % self.handler_name)
            self._handler = fn
        else:
            raise ValueError("unknown function style %r" % self.style)

    def invoke(self, param, context):
        """Run one call. Returns ("ok", result), ("error", err) or ("crash", err).

        A handler's SystemExit or KeyboardInterrupt is not caught: it ends the
        process, as it would a Lambda execution environment."""
        if self.init_error is not None:
            return "error", dict(self.init_error)
        if self.style == STYLE_HANDLER:
            try:
                return "ok", self._handler({"parameter": param}, context)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                return "error", _error(exc)
        if self.reuse_process:
            return self._run_in_process(param)
        return self._run_script(param)

    def _run_in_process(self, param):
        """Runs the script in this process (reuse-process mode) with the
        outcomes of _run_script, and restores what a call may change that is
        cheap to restore."""
        if self._out_fd is None:
            self._out_fd = _memfile()
            self._fd1 = os.dup(1)
            self._cwd = os.getcwd()
        out_fd = self._out_fd
        os.ftruncate(out_fd, 0)
        os.lseek(out_fd, 0, os.SEEK_SET)
        # os.environ's own bytes mapping: copied and compared at C speed.
        environ, env = os.environ, dict(os.environ._data)
        path_list, path = sys.path, list(sys.path)
        argv, main = sys.argv, sys.modules.get("__main__")
        streams = sys.stdin, sys.stdout, sys.stderr
        for s in streams[1:]:
            try:
                s.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os.dup2(out_fd, 1)
        if self._stdout is None or self._stdout.closed:
            self._stdout = open(1, "w", encoding=sys.stdout.encoding or "utf-8", closefd=False)
        if self._stdin is None or self._stdin.closed:
            self._stdin = open(os.devnull, "r")
        stdout, stdin = self._stdout, self._stdin
        module = types.ModuleType("__main__")
        module.__file__ = self.path
        module.__builtins__ = builtins
        module.__cached__ = None
        module.__annotations__ = {}
        sys.stdin, sys.stdout = stdin, stdout
        sys.modules["__main__"] = module
        sys.argv = [os.path.basename(self.path)] + _argv_param(param)
        status = {"status": "ok", "code": 0}
        try:
            exec(self._code, module.__dict__)
        except SystemExit as exc:
            status = _exit_status(exc)
        except BaseException as exc:
            traceback.print_exc(file=sys.stderr)
            status = dict(_error(exc), status="raised", code=1)
        finally:
            for s in (sys.stdout, stdout, sys.stderr):
                try:
                    s.flush()
                except BaseException:
                    pass
            os.dup2(self._fd1, 1)
            sys.stdin, sys.stdout, sys.stderr = streams
            sys.argv = argv
            if main is not None:
                sys.modules["__main__"] = main
            if os.getcwd() != self._cwd:
                os.chdir(self._cwd)
            if os.environ is not environ:
                os.environ = environ
            if os.environ._data != env:
                os.environ.clear()
                for k, v in env.items():
                    os.environ[os.fsdecode(k)] = os.fsdecode(v)
            if sys.path is not path_list:
                sys.path = path_list
            if sys.path != path:
                sys.path[:] = path
        out = _read_file(out_fd)
        if status["status"] == "raised":
            return "error", {k: status.get(k, "") for k in ("type", "message", "traceback")}
        code = status["code"]
        if code == 0 or out:
            return "ok", out.decode("utf-8", "replace")
        message = status.get("message") or "exit status %d" % code
        return "error", {"type": "SystemExit", "message": message, "traceback": ""}

    def _fork_child(self):
        """Forks a child that prepares itself and then waits for its argv.

        Returns (pid, argv pipe, stdout file, status pipe) of the parent's side.
        The child's stdout is an in-memory file the parent reads afterwards, so
        the parent wakes up once per call, when the status line arrives."""
        arg_r, arg_w = os.pipe()
        st_r, st_w = os.pipe()
        out_fd = _memfile()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 70
            try:
                os.close(arg_w)
                os.close(st_r)
                code = self._child(arg_r, out_fd, st_w)
            finally:
                os._exit(code)
        os.close(arg_r)
        os.close(st_w)
        return pid, arg_w, out_fd, st_r

    def _run_script(self, param):
        argv = [os.path.basename(self.path)] + _argv_param(param)
        pid, arg_w, out_fd, st_r = self._fork_child()
        try:
            try:
                _write_all(arg_w, json.dumps(argv).encode())
            except OSError:
                pass  # the child is gone; its wait status tells how
            os.close(arg_w)
            status = _read_line(st_r, _MAX_STATUS)
            try:
                st = json.loads(status) if status else {}
            except ValueError:
                st = {}
            if "code" in st:
                # The child has finished and is exiting with this code.
                code = st["code"]
                os.waitpid(pid, 0)
            else:
                # It ended without a word (os._exit, a signal): ask the kernel.
                _, wstatus = os.waitpid(pid, 0)
                if os.WIFSIGNALED(wstatus):
                    sig = os.WTERMSIG(wstatus)
                    try:
                        signame = signal.Signals(sig).name
                    except ValueError:
                        signame = str(sig)
                    return "crash", {"type": "Runtime.ExitError",
                                     "message": "function killed by signal %s" % signame}
                code = os.waitstatus_to_exitcode(wstatus)
            out = _read_file(out_fd)
        finally:
            os.close(out_fd)
        if st.get("status") == "raised":
            return "error", {k: st.get(k, "") for k in ("type", "message", "traceback")}
        if code == 0 or out:
            return "ok", out.decode("utf-8", "replace")
        message = st.get("message") or "exit status %d" % code
        return "error", {"type": "SystemExit", "message": message, "traceback": ""}

    def _child(self, arg_r, out_w, st_w):
        """Runs in the forked child: prepares, waits for argv, runs the script
        as __main__ and returns the exit code."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the script's children are its own
        for fd in self.close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        os.dup2(out_w, 1)
        os.close(out_w)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.__stdout__ = sys.stdout
        main = types.ModuleType("__main__")
        main.__file__ = self.path
        main.__builtins__ = builtins
        sys.modules["__main__"] = main

        data = _read_all(arg_r)
        if not data:
            return 0  # the runner went away before a call came
        sys.argv = json.loads(data)
        status = {"status": "ok", "code": 0}
        try:
            exec(self._code, main.__dict__)
        except SystemExit as exc:
            status = _exit_status(exc)
        except BaseException as exc:
            traceback.print_exc(file=sys.stderr)
            status = dict(_error(exc), status="raised", code=1)
        try:
            import atexit
            atexit._run_exitfuncs()
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        data = json.dumps(status).encode()
        if len(data) > _MAX_STATUS - 1:
            data = json.dumps({"status": status["status"], "code": status["code"],
                               "type": status.get("type", ""),
                               "message": "(status too large)"}).encode()
        try:
            _write_all(st_w, data + b"\n")
        except OSError:
            pass
        return status["code"]


def _memfile():
    """An anonymous in-memory file for a child's stdout."""
    try:
        return os.memfd_create("spillway-stdout", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile
        f = tempfile.TemporaryFile()
        fd = os.dup(f.fileno())
        f.close()
        return fd


def _read_file(fd):
    """Everything written to fd from its start."""
    chunks = []
    offset = 0
    while True:
        b = os.pread(fd, 1 << 20, offset)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        offset += len(b)


def _read_line(fd, limit):
    """Reads up to a newline (not included), EOF or limit bytes; closes fd."""
    chunks = []
    size = 0
    try:
        while size < limit:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
            size += len(b)
            if b.endswith(b"\n"):
                break
    finally:
        os.close(fd)
    return b"".join(chunks).split(b"\n", 1)[0]


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_all(fd, limit=None):
    chunks = []
    size = 0
    try:
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            if limit is None or size < limit:
                chunks.append(b)
            size += len(b)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data if limit is None else data[:limit]


def _too_large(cap):
    return "result over MAX_RESULT_BYTES (%d bytes)" % cap


def _json_size(value, cap):
    """The size of value's JSON, counting no further than just past cap, so an
    enormous result is never encoded whole (raises TypeError/ValueError as
    json.dumps does)."""
    size = 0
    for chunk in json.JSONEncoder(allow_nan=False).iterencode(value):
        size += len(chunk.encode("utf-8")) if not chunk.isascii() else len(chunk)
        if size > cap:
            return size
    return size


# ---------------------------------------------------------------------------
# Lambda mode

_COLD = True
_LAMBDA_FUNCTION = None


def _lambda_function():
    global _LAMBDA_FUNCTION
    if _LAMBDA_FUNCTION is None:
        here = os.path.dirname(os.path.abspath(__file__))
        conf = {}
        try:
            with open(os.path.join(here, "spillway.json")) as f:
                conf = json.load(f)
        except (OSError, ValueError):
            pass
        _LAMBDA_FUNCTION = Function(os.path.join(here, "function.py"),
                                    conf.get("style") or STYLE_SCRIPT,
                                    conf.get("handler") or "handler",
                                    reuse_process=os.environ.get(REUSE_PROCESS_ENV) == "1")
        _LAMBDA_FUNCTION.max_result_bytes = int(
            conf.get("maxResultBytes") or DEFAULT_MAX_RESULT_BYTES)
    return _LAMBDA_FUNCTION


def _is_proxy(event):
    return (isinstance(event, dict) and "parameter" not in event and "body" in event
            and ("httpMethod" in event or "requestContext" in event
                 or "headers" in event or "isBase64Encoded" in event))


def _event_envelope(event, proxy):
    """The envelope an event carries: the event itself, or a proxy event's
    body decoded from JSON (None when it has none)."""
    if proxy:
        body = event.get("body")
        if body is None or body == "":
            return None
        if event.get("isBase64Encoded"):
            import base64
            body = base64.b64decode(body).decode("utf-8")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ValueError("request body is not JSON: %s" % exc) from None
    return event


def _envelope_parameter(envelope):
    if isinstance(envelope, dict):
        return envelope.get("parameter")
    return envelope


# PING_KEY marks lb's keep-warm ping: the envelope {"spillway_ping": true}
# with no "parameter" key. lb sends every call's value under "parameter",
# whatever the value is, so no call's event is ever taken for a ping; and a
# ping is answered without touching the function.
PING_KEY = "spillway_ping"


def _is_ping(envelope):
    return (isinstance(envelope, dict) and "parameter" not in envelope
            and envelope.get(PING_KEY) is True)


def handler(event, context):
    """The Lambda entry point (handler string `handler.handler`)."""
    global _COLD
    cold, _COLD = _COLD, False
    proxy = _is_proxy(event)
    try:
        envelope = _event_envelope(event, proxy)
    except ValueError as exc:
        out = {"statusCode": 400, "errorType": "InvalidEvent",
               "errorMessage": str(exc), "coldStart": cold}
    else:
        if _is_ping(envelope):
            # The environment is warm now (the function was loaded at init);
            # the function does not run.
            out = {"statusCode": 200, "ping": True, "coldStart": cold}
        else:
            out = _run(_envelope_parameter(envelope), context, cold)
    if proxy:
        return {"statusCode": out["statusCode"],
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps(out)}
    return out


def _run(param, context, cold):
    kind, value = _lambda_function().invoke(param, context)
    if kind != "ok":
        return {"statusCode": 500, "errorType": value["type"],
                "errorMessage": value["message"], "coldStart": cold}
    cap = _lambda_function().max_result_bytes
    try:
        size = _json_size(value, cap)
    except (TypeError, ValueError) as exc:
        return {"statusCode": 500, "errorType": type(exc).__name__,
                "errorMessage": "result is not JSON-serialisable: %s" % exc,
                "coldStart": cold}
    if size > cap:
        return {"statusCode": 413, "errorType": "ResultTooLarge",
                "errorMessage": _too_large(cap), "coldStart": cold}
    return {"statusCode": 200, "body": value, "coldStart": cold}


if __name__ != "__main__":
    # Imported by a Lambda runtime: load the function during the init phase.
    _lambda_function()


# ---------------------------------------------------------------------------
# Worker mode


class _WorkerContext:
    """The subset of Lambda's context object a handler may reasonably use."""

    def __init__(self, request_id, deadline_ms, name, version):
        self.aws_request_id = request_id
        self.function_name = name
        self.function_version = version
        self.invoked_function_arn = ""
        self.memory_limit_in_mb = 0
        self.log_group_name = ""
        self.log_stream_name = ""
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        if not self._deadline_ms:
            return 0
        return max(0, int(self._deadline_ms - time.time() * 1000))


def _worker_main(args):
    import argparse
    p = argparse.ArgumentParser(prog="handler.py --worker")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--function", required=True)
    p.add_argument("--style", required=True, choices=(STYLE_SCRIPT, STYLE_HANDLER))
    p.add_argument("--handler", default="handler")
    p.add_argument("--name", default="function")
    p.add_argument("--version", default="0")
    p.add_argument("--in-fd", type=int, default=3)
    p.add_argument("--out-fd", type=int, default=4)
    p.add_argument("--max-result-bytes", type=int, default=DEFAULT_MAX_RESULT_BYTES)
    p.add_argument("--reuse-process", action="store_true")
    opts = p.parse_args(args)

    # The protocol has its own descriptors; anything the function prints goes
    # to stderr, so it can never corrupt a response.
    sys.stdout.flush()
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    fn = Function(opts.function, opts.style, opts.handler,
                  close_fds=(opts.in_fd, opts.out_fd), reuse_process=opts.reuse_process)
    requests = os.fdopen(opts.in_fd, "rb")
    responses = os.fdopen(opts.out_fd, "wb")
    gc.collect()
    gc.freeze()  # keep forked children from copying the warm heap

    def send(msg):
        responses.write(json.dumps(msg).encode() + b"\n")
        responses.flush()

    send({"ready": True, "pid": os.getpid(), "python": sys.version.split()[0],
          "initError": fn.init_error})
    for line in requests:
        try:
            req = json.loads(line)
        except ValueError as exc:
            send({"id": None, "ok": False,
                  "error": {"type": "ProtocolError", "message": str(exc)}})
            continue
        rid = req.get("id")
        ctx = _WorkerContext(str(rid), req.get("deadlineMs"), opts.name, opts.version)
        kind, value = fn.invoke(req.get("param"), ctx)
        if kind == "ok":
            try:
                if _json_size(value, opts.max_result_bytes) > opts.max_result_bytes:
                    data = json.dumps({"id": rid, "ok": False, "tooLarge": True, "error": {
                        "type": "ResultTooLarge",
                        "message": _too_large(opts.max_result_bytes)}})
                else:
                    data = json.dumps({"id": rid, "ok": True, "result": value},
                                      allow_nan=False)
            except (TypeError, ValueError) as exc:
                data = json.dumps({"id": rid, "ok": False, "error": {
                    "type": type(exc).__name__,
                    "message": "result is not JSON-serialisable: %s" % exc}})
        else:
            msg = {"id": rid, "ok": False, "error": value}
            if kind == "crash":
                msg["crash"] = True
            data = json.dumps(msg)
        responses.write(data.encode() + b"\n")
        responses.flush()


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        _worker_main(sys.argv[1:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
