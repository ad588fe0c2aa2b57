# Probes that function code runs in the isolation tests: each tries to reach
# or change what function code must not, and answers "reached..." or
# "refused...". The tests append a handler that calls them.
import glob, http.client, os, socket, subprocess


def tcp(addr):
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return "reached " + addr
    except OSError as e:
        return "refused %s: %s" % (addr, e)

def other_runtime_api():
    # Another environment's Runtime API, found the way an attacker would:
    # in the environment variables of the processes in sight.
    mine = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    found = set()
    for p in glob.glob("/proc/[0-9]*/environ"):
        try:
            data = open(p, "rb").read()
        except OSError:
            continue
        for kv in data.split(b"\0"):
            if kv.startswith(b"AWS_LAMBDA_RUNTIME_API="):
                v = kv.split(b"=", 1)[1].decode()
                if v != mine and ":" in v:
                    found.add(v)
    for addr in sorted(found):
        host, port = addr.rsplit(":", 1)
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=3)
            c.request("POST", "/2018-06-01/runtime/invocation/forged/response", body=b"{}")
            return "reached %s: HTTP %d" % (addr, c.getresponse().status)
        except OSError:
            pass
    return "refused: no other environment's runtime API in sight (%d found)" % len(found)

def write_own_dir():
    d = os.path.dirname(os.path.abspath(__file__))
    try:
        with open(os.path.abspath(__file__), "a") as f:
            f.write("# rewritten\n")
        return "reached: rewrote " + __file__
    except OSError as e:
        try:
            open(os.path.join(d, "planted.py"), "w").close()
            return "reached: planted a file in " + d
        except OSError as e2:
            return "refused: %s; %s" % (e, e2)

def memory(mb):
    try:
        b = b"\x01" * (mb << 20)
        return "reached: held %d MB" % (len(b) >> 20)
    except MemoryError:
        return "refused: MemoryError"

def processes(n):
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(["sleep", "30"]))
        return "reached: %d processes" % len(procs)
    except OSError as e:
        return "refused after %d processes: %s" % (len(procs), e)
    finally:
        for p in procs:
            p.kill()
            p.wait()
