"""Python's own xmlrpc.client against a Spillway XML-RPC server (argv[1]).

Prints one line per mismatch and exits 1 if there was any."""
import datetime
import sys
import xmlrpc.client

url = sys.argv[1]
proxy = xmlrpc.client.ServerProxy(url, allow_none=True, use_builtin_types=True)
fails = []


def check(name, got, want):
    if got != want or type(got) is not type(want):
        fails.append(f"{name}: got {got!r}, want {want!r}")


cases = [
    ("int", 42),
    ("negative", -7),
    ("int32 max", 2**31 - 1),
    ("true", True),
    ("false", False),
    ("string", "a & <b> ]]> c"),
    ("empty string", ""),
    ("unicode", "h\u00e9llo \u2713 \U0001d11e"),
    ("newlines and tabs", "a\nb\tc\n"),  # Python sends \r raw; XML parsers turn \r\n into \n
    ("double", 0.1),
    ("double big", 1.5e300),
    ("bytes", b"\x00\x01\xff"),
    ("none", None),
    ("list", [1, "x", None, [], {}, ""]),
    ("dict", {"a": [1, {"b": 2.5}], "e": "", "n": None}),
    ("date", datetime.datetime(2024, 3, 9, 7, 5, 1)),
]
for name, value in cases:
    try:
        check(name, proxy.echo(value), value)
    except Exception as e:  # report, keep going
        fails.append(f"{name}: {e!r}")

check("i8 from the server", proxy.big(), 2**40)
check("invoke-like struct", proxy.invoke("30"),
      {"result": "832040\n", "route": "local", "worker": "w1", "reason": "",
       "duration_ms": 1.5, "cold_start": False})
check("call_faas", proxy.call_faas("30"), "832040\n")

for method, code, text in [("fail", -32500, "ZeroDivisionError: division by zero"),
                           ("nosuch", -32601, None)]:
    try:
        getattr(proxy, method)()
        fails.append(f"{method}: no fault")
    except xmlrpc.client.Fault as f:
        check(f"{method} fault code", f.faultCode, code)
        if text is not None:
            check(f"{method} fault string", f.faultString, text)

multi = xmlrpc.client.MultiCall(proxy)
multi.echo(1)
multi.fail()
multi.echo("x")
results = multi()
check("multicall 0", results[0], 1)
try:
    results[1]
    fails.append("multicall 1: no fault")
except xmlrpc.client.Fault as f:
    check("multicall 1 code", f.faultCode, -32500)
check("multicall 2", results[2], "x")

methods = proxy.system.listMethods()
for m in ("echo", "fail", "system.listMethods", "system.methodHelp", "system.multicall"):
    if m not in methods:
        fails.append(f"listMethods lacks {m}: {methods!r}")
check("methodHelp", proxy.system.methodHelp("echo"), "echo(x) => x")

for line in fails:
    print(line)
sys.exit(1 if fails else 0)
