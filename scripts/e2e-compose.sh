#!/usr/bin/env bash
# e2e-compose.sh: the compose stack end to end, bounded, on its own pool name
# and free ports so it can run beside another stack:
#   make up → client bench (enough load to grow the pool and overflow to
#   localcloud) with a worker killed and the function updated mid-stream →
#   checks of the report (both routes, zero errors, pool grew) → make down →
#   nothing labelled with the pool is left.
# Needs bin/ built (make build). Exits non-zero with the reason on failure and
# always tears its stack down. E2E_KEEP=1 leaves the stack up for inspection.
# E2E_FRESH=1 first removes the project's images (base included), as on a
# fresh machine; other stacks on this engine then lose their images too.
set -euo pipefail
SCRIPT_NAME=e2e
source "$(dirname "$0")/lib.sh"
need_docker

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export POOL_NAME=${POOL_NAME:-e2e$$}
export LOAD_BALANCER_PORT=${E2E_LB_PORT:-$(free_port)}
export REDIS_PORT=${E2E_REDIS_PORT:-$(free_port)}
export LOCALCLOUD_PORT=${E2E_LOCALCLOUD_PORT:-$(free_port)}
export NUMBER_OF_SERVERS=${NUMBER_OF_SERVERS:-2}
export MAX_SERVERS=${MAX_SERVERS:-4}
export SCALE_DOWN_DELAY=${SCALE_DOWN_DELAY:-5s}
export FAAS_FUNCTION_NAME=faas
export LB_URL=http://127.0.0.1:$LOAD_BALANCER_PORT/
duration=${E2E_DURATION:-20s}
work=$(mktemp -d)

teardown() {
	local rc=$?
	[[ -z ${host_srv:-} ]] || kill "$host_srv" 2>/dev/null || true
	if [[ ${E2E_KEEP:-0} == 1 ]]; then
		log "E2E_KEEP=1: stack '$POOL_NAME' left up (POOL_NAME=$POOL_NAME make down removes it)"
	else
		"$SPILLWAY_ROOT/scripts/down.sh" >/dev/null 2>&1 || rc=1
		if [[ -n $(docker ps -aq --filter "label=spillway.pool=$POOL_NAME") ]] ||
			[[ -n $(docker network ls -q --filter "label=spillway.stack=$POOL_NAME") ]] ||
			docker network inspect "$POOL_NAME-workers" >/dev/null 2>&1; then
			log "FAIL: containers or networks of '$POOL_NAME' are left after make down"
			rc=1
		fi
	fi
	rm -rf "$work"
	((rc == 0)) && log "PASS" || log "FAILED"
	exit "$rc"
}
trap teardown EXIT

if [[ ${E2E_FRESH:-0} == 1 ]]; then
	log "E2E_FRESH=1: removing the project's images"
	tag=$(cfg IMAGE_TAG latest)
	for img in "$(cfg WORKER_IMAGE "spillway-worker:$tag")" "spillway-lb:$tag" "spillway-localcloud:$tag" spillway-base:bookworm; do
		docker rmi -f "$img" >/dev/null 2>&1 || true
	done
fi
log "pool $POOL_NAME, lb :$LOAD_BALANCER_PORT, redis :$REDIS_PORT, localcloud :$LOCALCLOUD_PORT"
UP_TIMEOUT=${UP_TIMEOUT:-180} "$SPILLWAY_ROOT/scripts/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; die "make up failed"; }
# make up generated (or kept) REDIS_PASSWORD in .env; addfaas below needs it.
load_env
export REDIS_PASSWORD=${CFG[REDIS_PASSWORD]:-}
[[ -n $REDIS_PASSWORD ]] || die "make up left REDIS_PASSWORD empty"
if grep -qF -- "$REDIS_PASSWORD" "$work/up.log"; then die "make up printed REDIS_PASSWORD"; fi

out=$(bin/client call 20)
[[ $out == *6765* ]] || die "client call 20 returned: $out"

# Load in the background; in the middle kill one worker and publish a new
# version of the function (same output, new source).
bin/client bench -c 8 -d "$duration" --param 25 --json --no-progress >"$work/bench.json" 2>"$work/bench.err" &
bench=$!
sleep 5
victim=$(docker ps -q --filter "label=spillway.pool=$POOL_NAME" | head -n1)
[[ -n $victim ]] || die "no worker container of pool $POOL_NAME is running"
docker kill "$victim" >/dev/null
log "killed worker $victim"
sleep 3
{ cat examples/fib.py; echo "# e2e update $(date +%s)"; } >"$work/fib_v2.py"
bin/addfaas --redis "127.0.0.1:$REDIS_PORT" --name faas "$work/fib_v2.py" >/dev/null
log "published version 2 mid-stream"
wait "$bench" || { cat "$work/bench.err" >&2; die "client bench failed"; }

/usr/bin/python3 - "$work/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
routes = r.get("latency_ms_by_route") or {}
pool = r.get("pool_size") or {}
problems = []
if r.get("errors"): problems.append(f"{r['errors']} errors: {r.get('errors_by_code')}")
if not r.get("ok"): problems.append("no successful calls")
for route in ("local", "cloud"):
    if not (routes.get(route) or {}).get("count"): problems.append(f"no calls on route {route}")
if not pool or "min" not in pool or "max" not in pool: problems.append(f"the report has no pool_size: {pool!r}")
elif pool["max"] <= pool["min"]: problems.append(f"pool did not grow: {pool}")
print(f"e2e: {r.get('ok')} ok, {r.get('errors')} errors, routes "
      + ", ".join(f"{k}={v.get('count')}" for k, v in routes.items())
      + f", reasons {r.get('offload_reasons')}, pool {pool.get('min')}..{pool.get('max')}", file=sys.stderr)
if problems:
    sys.exit("e2e: FAIL: " + "; ".join(problems))
PY
# The update must have rolled faas's pool: every worker of it runs version 2
# (the other example function, hello, keeps its version 1).
deadline=$((SECONDS + 60))
while :; do
	versions=$(docker ps --filter "label=spillway.pool=$POOL_NAME" --filter "label=spillway.function=faas" --format '{{.Label "spillway.version"}}' | sort -u | tr '\n' ' ')
	[[ $versions == "2 " ]] && break
	((SECONDS < deadline)) || die "workers after the update run versions: ${versions:-none} (want only 2)"
	sleep 1
done
log "all workers run version 2"
out=$(bin/client call 20)
[[ $out == *6765* ]] || die "client call 20 after the update returned: $out"
# Both example functions are served, over XML-RPC and plain HTTP.
out=$(bin/client call --fn hello e2e)
[[ $out == *"Hello, e2e!"* ]] || die "client call --fn hello e2e returned: $out"
out=$(curl -fsS -d 20 "http://127.0.0.1:$LOAD_BALANCER_PORT/function/faas")
[[ $out == *6765* ]] || die "curl -d 20 /function/faas returned: $out"
log "both functions answer, over XML-RPC and HTTP"

# ---- Security checks on the compose stack, each with its protection-off
# counterpart, so a check that passes for another reason is caught.

# Redis requires the password: without it a write is refused (NOAUTH);
# with it the same connection is served.
redis_try() { # AUTH_PASSWORD_OR_EMPTY
	/usr/bin/python3 - "$REDIS_PORT" "$1" <<'PY'
import socket, sys
port, pw = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
if pw:
    s.sendall(b"AUTH " + pw.encode() + b"\r\n")
    print(s.recv(256).decode().strip())
s.sendall(b"SET spillway:e2e:probe x\r\n")
print(s.recv(256).decode().strip())
PY
}
got=$(redis_try "")
[[ $got == -NOAUTH* ]] || die "Redis accepted a write without the password: $got"
got=$(redis_try "$REDIS_PASSWORD" | tr '\n' ' ')
[[ $got == "+OK +OK " ]] || die "Redis with the password answered: $got"
log "redis: refused without the password, served with it"

# Function code in a worker cannot call lb, although lb shares its network;
# lb itself (loopback) is served, and the refusal is counted.
# in_worker runs python3 in a running worker. The pool may shrink while the
# checks run (SCALE_DOWN_DELAY), so a worker removed under the exec is
# replaced by another one and the probe run again.
in_worker() {
	local worker out tries
	for tries in 1 2 3 4 5; do
		worker=$(docker ps -q --filter "label=spillway.pool=$POOL_NAME" --filter status=running | head -n1)
		if [[ -n $worker ]] && out=$(docker exec "$worker" /usr/bin/python3 "$@" 2>&1); then
			printf '%s\n' "$out"
			return 0
		fi
		sleep 1
	done
	die "no running worker could run the probe: ${out:-no worker}"
}
http_probe='import sys, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    print("answered", r.status)
except Exception as e:
    print("blocked", type(e).__name__)'
got=$(in_worker -c "$http_probe" "http://lb:$LOAD_BALANCER_PORT/healthz")
[[ $got == blocked* ]] || die "a worker reached lb: $got"
got=$(compose exec -T lb /usr/bin/python3 -c "$http_probe" "http://127.0.0.1:$LOAD_BALANCER_PORT/healthz")
[[ $got == "answered 200" ]] || die "lb does not answer on its own loopback: $got"
refused=$(curl -fsS --max-time 5 "${LB_URL}metrics" | awk '/^spillway_lb_refused_connections_total/ {print $2}')
[[ -n $refused ]] && /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 1 else 1)" "$refused" ||
	die "spillway_lb_refused_connections_total = '${refused:-absent}', want at least 1"
log "lb: refused from a worker ($refused refusals counted), served on loopback"

# Redis is not on the workers' network: a worker has no route to its
# address; lb, on both networks, reaches the same address.
redis_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(compose ps -q redis)" | awk '{print $1}')
[[ -n $redis_ip ]] || die "no address for the redis container"
connect_probe='import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as e:
    print("blocked", type(e).__name__)'
got=$(in_worker -c "$connect_probe" "$redis_ip" 6379)
[[ $got == blocked* ]] || die "a worker reached Redis at $redis_ip: $got"
got=$(compose exec -T lb /usr/bin/python3 -c "$connect_probe" "$redis_ip" 6379)
[[ $got == connected ]] || die "protection off (lb, on Redis's network): $got; the check above proves nothing"
log "redis: no route from a worker, reachable from lb"

# Offloaded calls ran in localcloud's environment containers: labelled with
# the pool, hardened, with no network; from one, Redis (which lb reaches
# above) is out of reach.
# One call forced to the cloud now, so a warm environment exists whatever
# the function update did to those of the bench.
forced=$(/usr/bin/python3 -c 'import sys, xmlrpc.client
r = xmlrpc.client.ServerProxy(sys.argv[1]).invoke("20", {"route": "cloud"})
print(r["route"], r["result"])' "$LB_URL")
[[ $forced == cloud* && $forced == *6765* ]] || die "a call forced to the cloud answered: $forced"
envs=$(docker ps -q --filter "label=spillway.localcloud=$POOL_NAME")
[[ -n $envs ]] || die "no localcloud environment container of $POOL_NAME after the offloaded calls"
env1=$(head -n1 <<<"$envs")
settings=$(docker inspect -f '{{.HostConfig.NetworkMode}} {{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{.HostConfig.CapDrop}}' "$env1")
[[ $settings == "none true 10001:10001 [ALL]" ]] || die "localcloud environment $env1: network, read-only root, user, cap-drop = $settings"
got=$(docker exec "$env1" /usr/bin/python3 -c "$connect_probe" "$redis_ip" 6379)
[[ $got == blocked* ]] || die "a localcloud environment reached Redis at $redis_ip: $got"
log "localcloud: $(wc -l <<<"$envs") environment container(s), no network ($settings), Redis unreachable"

# A host service listening on every address is out of reach from the
# compose-made workers' network (inhibit_ipv4); the same probe from an
# internal network without that option reaches it.
host_port=$(free_port)
/usr/bin/python3 -m http.server "$host_port" --bind 0.0.0.0 --directory "$work" >/dev/null 2>&1 &
host_srv=$!
gateway_of() { docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$1"; }
pool_net=$(cfg DOCKER_NETWORK "$POOL_NAME-workers")
got=$(in_worker -c "$connect_probe" "$(gateway_of "$pool_net")" "$host_port")
open_net=$POOL_NAME-e2e-no-inhibit
docker network create --internal --label "spillway.e2e=$POOL_NAME" "$open_net" >/dev/null
off=$(docker run --rm --network "$open_net" --user 10001 --entrypoint /usr/bin/python3 "$(cfg WORKER_IMAGE "spillway-worker:$(cfg IMAGE_TAG latest)")" \
	-c "$connect_probe" "$(gateway_of "$open_net")" "$host_port" 2>&1 || true)
docker network rm "$open_net" >/dev/null || true
kill "$host_srv" 2>/dev/null || true
[[ $got == blocked* ]] || die "a worker reached a host service through the gateway of $pool_net: $got"
[[ $off == connected ]] || die "protection off: from an internal network without inhibit_ipv4 the host service was not reached ($off); the check above proves nothing"
log "host: unreachable from the workers' network, reachable with the option off"
