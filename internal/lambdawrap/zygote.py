"""Spillway's script zygote: runs a script-style function.py in the worker,
once per call, in a child forked from this small process, as a fresh
`python3 function.py ARG` would run it.

    python3 zygote.py FUNCTION SPARES MAX_RESULT_BYTES

The zygote compiles the function once, imports the standard-library modules
the function's code imports (so that a call does not import them again), puts
an empty __main__ module in place, freezes its heap and forks SPARES prepared
children. Then it only waits: when children exit it forks others. A prepared
child has its stdout on an in-memory file and waits in a read of the request
pipe, which the prepared children share: the worker writes each request in one
write of at most PIPE_BUF bytes, which the kernel hands whole to one reader.
That child runs the function as __main__, writes the answer itself and leaves
with os._exit, without the interpreter's teardown. Whatever a call changes
dies with its child: each call starts from the same state, as a spawned
process does. The zygote is on no call's path and does no work per call but
one fork and one wait.

The worker speaks over descriptors 3 (requests), 4 (answers) and 5 (the
arguments of large requests), never stdout; the function's stdout is
captured, its stderr is the zygote's:
  ready:   b"ready PID PYTHON_VERSION N1 N2 N3\\n" then the function's compile
           error as three fields (type, message, traceback), all 0 if none
  request: b"ID N\\n" then N bytes of UTF-8 argument; N = -1: no argument;
           b"ID N bulk\\n" when the request would be over PIPE_BUF bytes:
           the child that reads it then reads the N bytes from descriptor 5
  answer:  b"ID OUTLEN KIND CODE N1 N2 N3\\n" then OUTLEN bytes of stdout
           (valid UTF-8) and three fields of N1, N2, N3 bytes, where KIND is
    ok        the script ended, or raised SystemExit (fields: -, message, -)
    raised    an uncaught exception (type, message, traceback)
    exit      the child left without a word (os._exit); CODE is its status
    signal    the child was killed; CODE is the signal number
    toolarge  stdout over MAX_RESULT_BYTES (OUTLEN is 0)
  and CODE is the exit status. The worker turns these into the results and
  errors that the shim's docstring (handler.py) describes. When a child dies
  after taking a request without answering it, the zygote answers for it;
  when one dies while writing its answer, the zygote ends the process group,
  since the answer stream may be cut.

Standard library only; Python 3.11+.
"""

import gc
import os
import sys
from mmap import mmap

_MAX_TEXT = 4096

# Standard-library modules never imported ahead: they act on import (print,
# open a browser) or pull in a GUI toolkit.
_NO_PREIMPORT = frozenset((
    "this", "antigravity", "__hello__", "__phello__", "idlelib", "tkinter",
    "turtle", "turtledemo", "readline", "__main__",
))

# A child's state, in its slot of the shared page: byte 0 the state, byte 1
# the length of the request ID, bytes 2.. the ID.
_SLOT = 32
_PREPARED, _TOOK, _ANSWERING, _ANSWERED, _EOF = range(5)
_MAX_CHILDREN = 4096 // _SLOT

_REQ, _ANS, _BULK = 3, 4, 5


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fields(*texts):
    """b"N1 N2 N3\\n" and the UTF-8 of three texts, to follow a header."""
    data = [t.encode("utf-8", "replace") for t in texts]
    return b"%d %d %d\n" % tuple(len(d) for d in data), b"".join(data)


def _imports(code, names):
    """Adds to names the modules that code (and the code nested in it) imports."""
    import opcode
    import_name, extended = opcode.opmap["IMPORT_NAME"], opcode.EXTENDED_ARG
    stack = [code]
    while stack:
        co = stack.pop()
        raw, high = co.co_code, 0
        for i in range(0, len(raw), 2):
            op, arg = raw[i], raw[i + 1] | high
            high = arg << 8 if op == extended else 0
            if op == import_name and arg < len(co.co_names):
                names.add(co.co_names[arg])
        stack.extend(c for c in co.co_consts if isinstance(c, type(co)))


def _preimport(code, folder):
    """Imports the standard-library modules the function imports, unless a
    file beside the function would shadow them."""
    names = set()
    try:
        _imports(code, names)
        beside = {n.split(".")[0] for n in os.listdir(folder)}
    except Exception:
        return
    for name in sorted(names):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names and top not in _NO_PREIMPORT and top not in beside:
            try:
                __import__(name)
            except Exception:
                pass


class Zygote:
    def __init__(self, path, spares, cap):
        self.path = path
        self.spares = max(1, min(spares, _MAX_CHILDREN - 2))
        self.cap = cap
        self.code = None
        self.init_error = None
        self.children = {}  # pid -> (slot, stdout file)
        self.free = list(range(_MAX_CHILDREN))
        self.shm = None
        self.closing = False

    def load(self):
        folder = os.path.dirname(self.path)
        sys.path[0] = folder  # as `python3 FUNCTION` has it
        sys.argv = [os.path.basename(self.path)]
        try:
            with open(self.path, "rb") as f:
                self.code = compile(f.read(), self.path, "exec", dont_inherit=True)
        except BaseException as exc:
            import traceback
            traceback.print_exc(file=sys.stderr)
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.init_error = (type(exc).__name__, str(exc)[:_MAX_TEXT], tb[-_MAX_TEXT:])
            return
        _preimport(self.code, folder)
        # A fresh __main__ for the function, as the interpreter makes it; every
        # child gets its own copy.
        import builtins
        main = type(sys)("__main__")
        main.__file__ = self.path
        main.__builtins__ = builtins
        main.__cached__ = None
        main.__annotations__ = {}
        main.__loader__ = sys.modules["_frozen_importlib_external"].SourceFileLoader(
            "__main__", self.path)
        sys.modules["__main__"] = main

    # -- the zygote's side

    def serve(self):
        for fd in (_REQ, _ANS, _BULK):
            os.set_inheritable(fd, False)  # never into a program a script runs
        if self.init_error is not None:
            return self.serve_error()
        self.shm = mmap(-1, 4096)
        sys.stdout.flush()
        sys.stderr.flush()
        _share_code_pages()
        gc.collect()
        gc.freeze()  # children never touch the zygote's objects for a collection
        for _ in range(self.spares):
            self.fork_child()
        head, body = _fields("", "", "")
        _write_all(_ANS, b"ready %d %s %s" % (
            os.getpid(), sys.version.split()[0].encode(), head) + body)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            if pid in self.children:
                self.child_left(pid, status)
            if not self.closing:
                while len(self.children) < self.spares:
                    self.fork_child()

    def serve_error(self):
        """Answers every request with the function's compile error."""
        requests = open(_REQ, "rb")
        head, body = _fields(*self.init_error)
        _write_all(_ANS, b"ready %d %s %s" % (
            os.getpid(), sys.version.split()[0].encode(), head) + body)
        while True:
            line = requests.readline()
            if not line:
                return
            rid, n = line.split()
            if int(n) > 0:
                requests.read(int(n))
            _write_all(_ANS, b"%s 0 raised 1 %s" % (rid, head) + body)

    def fork_child(self):
        slot = self.free.pop()
        out = os.memfd_create("spillway-stdout", os.MFD_CLOEXEC)
        self.shm[slot * _SLOT] = _PREPARED
        pid = os.fork()
        if pid == 0:  # never returns
            code = 70
            try:
                code = self.child(slot, out)
            finally:
                os._exit(code)
        self.children[pid] = (slot, out)

    def child_left(self, pid, status):
        """Reaps one child: answers for it when it took a request and left
        without answering."""
        slot, out = self.children.pop(pid)
        base = slot * _SLOT
        state = self.shm[base]
        self.shm[base] = _PREPARED
        self.free.append(slot)
        try:
            if state == _TOOK:
                rid = self.shm[base + 2:base + 2 + self.shm[base + 1]]
                _write_all(_ANS, rid + b" " + self.left_without_word(out, status))
            elif state == _ANSWERING:
                os.killpg(0, 9)  # its answer may be cut: the worker replaces us
            elif state == _EOF:
                self.closing = True  # the worker closed the requests
        finally:
            os.close(out)
        if state == _PREPARED and not self.closing:
            import time
            time.sleep(0.01)  # something kills children before they serve

    def left_without_word(self, out, status):
        if os.WIFSIGNALED(status):
            return b"0 signal %d 0 0 0\n" % os.WTERMSIG(status)
        data, size = _stdout(out, self.cap)
        if data is None:
            return b"0 toolarge 0 0 0 0\n"
        return b"%d exit %d 0 0 0\n" % (size, os.waitstatus_to_exitcode(status)) + data

    # -- the child's side

    def child(self, slot, out):
        """Runs in a forked child: waits for a request, runs the function as
        __main__ and answers; returns the exit status."""
        os.dup2(out, 1)
        shm, base = self.shm, slot * _SLOT

        data = os.read(_REQ, 65536)  # a whole request, or nothing at the end
        if not data:  # the worker closed the requests
            shm[base] = _EOF
            return 0
        nl = data.find(b"\n")
        head = data[:nl].split()
        rid, n = head[0], int(head[1])
        shm[base + 1] = len(rid)
        shm[base + 2:base + 2 + len(rid)] = rid
        shm[base] = _TOOK
        os.close(_REQ)
        if len(head) > 2:  # a large argument, on its own pipe
            arg = b""
            while len(arg) < n:
                more = os.read(_BULK, n - len(arg))
                if not more:
                    break
                arg += more
        else:
            arg = data[nl + 1:]
        os.close(_BULK)

        argv = [sys.argv[0]]
        if n >= 0:
            argv.append(arg.decode("utf-8", "surrogateescape"))
        sys.argv = argv
        me = os.getpid()
        main = sys.modules["__main__"]
        answer = None
        try:
            exec(self.code, main.__dict__)
        except SystemExit as exc:
            code, message = _exit_code(exc.code)
            if message:
                answer = b"ok", code, ("", message, "")
        except BaseException as exc:
            code = 1
            answer = (b"raised", 1, (type(exc).__name__, _str(exc)[:_MAX_TEXT],
                                     _print_exception(exc)[-_MAX_TEXT:]))
        else:
            code = 0
        code = _shutdown(code)
        if os.getpid() != me:
            return code  # a child the script forked came back here: not ours to answer
        try:
            data, size = _stdout(out, self.cap)
        except OSError:
            return code  # the script closed our descriptors: the zygote answers
        if data is None:
            head = b" 0 toolarge 0 0 0 0\n"
        elif answer is None:
            head = b" %d ok %d 0 0 0\n" % (size, code)
        else:
            kind, code, fields = answer
            h, body = _fields(*fields)
            head = b" %d %s %d %s" % (size, kind, code, h)
            data += body
        shm[base] = _ANSWERING
        frame = rid + head + (data or b"")
        try:
            n = os.write(_ANS, frame)
        except OSError:
            shm[base] = _TOOK  # nothing written: the zygote answers
            return code
        if n < len(frame):
            _write_all(_ANS, frame[n:])
        shm[base] = _ANSWERED
        return code


def _share_code_pages():
    """Makes fork copy the page-table entries of the interpreter's code and
    read-only data, so that a child does not fault them in again, one fault
    per 64 KiB of code it runs. The kernel copies those entries only for a
    mapping that has private pages; writing one byte of each mapping back
    through /proc/self/mem (as a debugger sets a breakpoint) gives it one.
    Best effort: a kernel that refuses the write leaves things as they were."""
    try:
        mem = os.open("/proc/self/mem", os.O_RDWR)
    except OSError:
        return
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                f = line.split()
                # A private, not writable mapping of a file: code or constants.
                if len(f) < 6 or not f[5].startswith("/") or f[1][1] != "-" or f[1][3] != "p":
                    continue
                at = int(f[0].split("-")[0], 16)
                try:
                    os.pwrite(mem, os.pread(mem, 1, at), at)
                except OSError:
                    return
    finally:
        os.close(mem)


def _stdout(fd, cap):
    """The call's stdout as valid UTF-8 and its length, or (None, 0) when it
    is over cap (its JSON would be larger still)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size + 2 > cap:
        return None, 0
    data = os.pread(fd, size, 0) if size else b""
    if not data.isascii():
        data = data.decode("utf-8", "replace").encode("utf-8")
    return data, len(data)


def _str(exc):
    try:
        return str(exc)
    except BaseException:
        return "<unprintable %s>" % type(exc).__name__


def _exit_code(code):
    """The exit status and message of SystemExit(code), as the interpreter
    has them."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code & 0xFF, str(code)[:_MAX_TEXT]
    message = _str(code)
    try:
        print(message, file=sys.stderr)
    except BaseException:
        pass
    return 1, message[:_MAX_TEXT]


def _print_exception(exc):
    """Prints exc through sys.excepthook, as the interpreter does at exit,
    and returns what it printed."""
    import io
    stderr, buf = sys.stderr, io.StringIO()
    sys.stderr = buf
    try:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    except BaseException:
        pass
    finally:
        sys.stderr = stderr
    text = buf.getvalue()
    try:
        stderr.write(text)
        stderr.flush()
    except BaseException:
        pass
    return text


def _shutdown(code):
    """What the interpreter does at exit before its teardown: waits for
    non-daemon threads, runs atexit functions, flushes stdout and stderr."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    atexit = sys.modules.get("atexit")
    if atexit is not None:
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            if stream is sys.stdout and code == 0:
                code = 120  # as the interpreter exits when stdout cannot be flushed
    return code


def _fork_cost(z, n):
    """Prints the CPU time (this process and its children) and the wall time
    of one bare fork and exit of the zygote in its serving state: heap frozen,
    spares forked. The measure of the zygote's size that a call pays."""
    z.shm = mmap(-1, 4096)
    _share_code_pages()
    gc.collect()
    gc.freeze()
    for _ in range(z.spares):
        z.fork_child()
    t0 = os.times()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    t1 = os.times()
    cpu = sum(t1[:4]) - sum(t0[:4])
    rss = [line.split()[1] for line in open("/proc/self/status")
           if line.startswith(("VmRSS:", "RssAnon:"))]
    print("fork_exit_cpu_us=%.1f fork_exit_wall_us=%.1f rss_kb=%s rss_anon_kb=%s" % (
        cpu / n * 1e6, (t1[4] - t0[4]) / n * 1e6, rss[0], rss[1]))
    sys.stdout.flush()
    for pid in z.children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    if sys.argv[1] == "--fork-cost":
        _n = int(sys.argv[2])
        _z = Zygote(os.path.abspath(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        _z.load()
        _fork_cost(_z, _n)
    else:
        _z = Zygote(os.path.abspath(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
        _z.load()
        _z.serve()
