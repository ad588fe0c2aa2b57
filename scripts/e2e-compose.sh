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
if pool and pool.get("max", 0) <= pool.get("min", 0): problems.append(f"pool did not grow: {pool}")
print(f"e2e: {r.get('ok')} ok, {r.get('errors')} errors, routes "
      + ", ".join(f"{k}={v.get('count')}" for k, v in routes.items())
      + f", reasons {r.get('offload_reasons')}, pool {pool.get('min')}..{pool.get('max')}", file=sys.stderr)
if problems:
    sys.exit("e2e: FAIL: " + "; ".join(problems))
PY
# The update must have rolled the pool: every worker runs version 2.
deadline=$((SECONDS + 60))
while :; do
	versions=$(docker ps --filter "label=spillway.pool=$POOL_NAME" --format '{{.Label "spillway.version"}}' | sort -u | tr '\n' ' ')
	[[ $versions == "2 " ]] && break
	((SECONDS < deadline)) || die "workers after the update run versions: ${versions:-none} (want only 2)"
	sleep 1
done
log "all workers run version 2"
out=$(bin/client call 20)
[[ $out == *6765* ]] || die "client call 20 after the update returned: $out"
