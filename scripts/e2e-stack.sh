#!/usr/bin/env bash
# e2e-stack.sh: the Swarm stack end to end, bounded, on its own pool name and
# free ports:
#   POOL_BACKEND=swarm SWARM_INIT=1 LB_REPLICAS=2 make up (after make up
#   without SWARM_INIT and no swarm has failed, saying why, when no swarm is
#   active) → call_faas through lb (bin/client
#   and Python's xmlrpc.client) and POST /function/faas → secrets, lb's port
#   and the workers' network checked → make down → nothing
#   of the stack is left (services, configs, secrets, networks, containers,
#   the pool's workers) → the swarm left again if this script started it.
#
# Swarm is shared by the whole engine, and other tests may use it at the same
# time. The lock file SWARM_LOCK (default /tmp/spillway-swarm.lock) keeps
# them apart: a user holds it shared while it needs the swarm; whoever
# starts the swarm (only when none is active) takes it exclusively before it
# leaves, so the swarm goes when the last user is done. A swarm that was
# active before is used and left on.
#
# Needs bin/ built and the images (make build images). Exits non-zero with
# the reason on failure and always tears down its stack, and the swarm when
# it started it. E2E_KEEP=1 leaves both up for inspection.
set -euo pipefail
SCRIPT_NAME=e2e-stack
source "$(dirname "$0")/lib.sh"
need_docker
command -v flock >/dev/null || die "flock (util-linux) is missing"

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export POOL_BACKEND=swarm SWARM_INIT=1
export POOL_NAME=${POOL_NAME:-e2es$$}
# Two lb replicas, on two consecutive free ports.
export LB_REPLICAS=2
while :; do
	LOAD_BALANCER_PORT=${E2E_LB_PORT:-$(free_port)}
	((LOAD_BALANCER_PORT < 65535)) && /usr/bin/python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' $((LOAD_BALANCER_PORT + 1)) 2>/dev/null && break
	[[ -z ${E2E_LB_PORT:-} ]] || die "E2E_LB_PORT=$E2E_LB_PORT: port $((E2E_LB_PORT + 1)) is taken"
done
export LOAD_BALANCER_PORT
export REDIS_PORT=${E2E_REDIS_PORT:-$(free_port)}
export NUMBER_OF_SERVERS=${NUMBER_OF_SERVERS:-1}
export MAX_SERVERS=${MAX_SERVERS:-2}
export FAAS_FUNCTION_NAME=faas
export LB_URL=http://127.0.0.1:$LOAD_BALANCER_PORT/
# A token of the test's own, in the environment: make up then writes none
# into the checkout's .env (which the compose e2e shares).
LB_AUTH_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export LB_AUTH_TOKEN
work=$(mktemp -d)
started_swarm=

exec {lock}>"${SWARM_LOCK:-/tmp/spillway-swarm.lock}"
flock -x -w 300 "$lock" || die "could not take the swarm lock within 300s"
if [[ -z $(swarm_node_id) ]]; then
	started_swarm=1
else
	log "a swarm is active already: using it, leaving it on"
fi

# leave_swarm leaves the swarm this script started once no other user holds
# the lock, and removes docker_gwbridge, so the engine is as it was.
leave_swarm() {
	[[ -n $started_swarm ]] || return 0
	flock -x -w 300 "$lock" || log "other users still hold the swarm lock after 300s; leaving anyway"
	docker swarm leave --force >/dev/null 2>&1 || true
	local i
	for i in 1 2 3 4 5 6 7 8 9 10; do
		docker network inspect docker_gwbridge >/dev/null 2>&1 || break
		docker network rm docker_gwbridge >/dev/null 2>&1 && break
		sleep 1
	done
	[[ -z $(swarm_node_id) ]] || { log "FAIL: the swarm is still active"; return 1; }
	log "left the swarm this test started"
}

teardown() {
	local rc=$?
	[[ -z ${host_srv:-} ]] || kill "$host_srv" 2>/dev/null || true
	if [[ ${E2E_KEEP:-0} == 1 ]]; then
		log "E2E_KEEP=1: stack '$POOL_NAME' left up (POOL_BACKEND=swarm POOL_NAME=$POOL_NAME make down removes it)"
	else
		if [[ -n $(swarm_node_id) ]]; then
			t0=$SECONDS
			"$SPILLWAY_ROOT/scripts/down.sh" >"$work/down.log" 2>&1 || { cat "$work/down.log" >&2; rc=1; }
			log "make down took $((SECONDS - t0))s"
			left=$(
				for k in service config secret network; do stack_ids "$k" "$POOL_NAME"; done
				docker ps -aq --filter "label=com.docker.stack.namespace=$POOL_NAME"
				docker ps -aq --filter "label=spillway.pool=$POOL_NAME"
				docker service ls -q --filter "label=spillway.pool=$POOL_NAME"
				docker config ls -q --filter "label=spillway.pool=$POOL_NAME"
				docker network ls -q --filter "name=^$POOL_NAME-workers\$"
			)
			if [[ -n $left ]]; then
				log "FAIL: make down left: $(tr '\n' ' ' <<<"$left")"
				rc=1
			else
				log "make down left nothing of the stack"
			fi
		fi
		leave_swarm || rc=1
	fi
	rm -rf "$work"
	((rc == 0)) && log "PASS" || log "FAILED"
	exit "$rc"
}
trap teardown EXIT
# A signal ends the script through the EXIT trap, which cleans up.
trap 'exit 143' TERM INT

log "pool $POOL_NAME, lb :$LOAD_BALANCER_PORT, redis :$REDIS_PORT"
if [[ -n $started_swarm ]]; then
	# No swarm, and no SWARM_INIT: make up stops at once and says why.
	if SWARM_INIT=0 "$SPILLWAY_ROOT/scripts/up.sh" >"$work/noswarm.log" 2>&1; then
		die "make up with POOL_BACKEND=swarm and no swarm succeeded"
	fi
	grep -q "is in no swarm.*SWARM_INIT=1" "$work/noswarm.log" || { cat "$work/noswarm.log" >&2; die "make up without a swarm failed without saying so"; }
	[[ -z $(swarm_node_id) ]] || die "make up without SWARM_INIT started a swarm"
	log "without a swarm and SWARM_INIT, make up stops: $(grep -o 'this Docker engine is in no swarm' "$work/noswarm.log")"
fi
t0=$SECONDS
UP_TIMEOUT=${UP_TIMEOUT:-120} "$SPILLWAY_ROOT/scripts/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; die "make up failed"; }
log "make up took $((SECONDS - t0))s"
# Other users of the swarm may start now; this script still holds its share.
flock -s "$lock"
[[ -z $started_swarm || -n $(swarm_node_id) ]] || die "make up with SWARM_INIT=1 left no swarm"
load_env
export REDIS_PASSWORD=${CFG[REDIS_PASSWORD]:-}
for s in "$REDIS_PASSWORD" "$LB_AUTH_TOKEN"; do
	if grep -qF -- "$s" "$work/up.log"; then die "make up printed a secret"; fi
done
[[ $(docker stack ls --format '{{.Name}}') == *"$POOL_NAME"* ]] || die "no stack '$POOL_NAME' after make up"

# Secrets are Swarm secrets: on no command line, in no service spec.
for svc in $(stack_ids service "$POOL_NAME"); do
	spec=$(docker service inspect "$svc")
	for s in "$REDIS_PASSWORD" "$LB_AUTH_TOKEN"; do
		if grep -qF -- "$s" <<<"$spec"; then die "service $svc carries a secret in its spec"; fi
	done
done
n=$(stack_ids secret "$POOL_NAME" | wc -l)
((n >= 2)) || die "the stack has $n secrets, want REDIS_PASSWORD and LB_AUTH_TOKEN"
log "secrets: $n Swarm secrets, none in a service spec"

# lb is published in host mode and wants the token.
mode=$(docker service inspect -f '{{range .Endpoint.Ports}}{{.PublishMode}} {{end}}{{.Spec.EndpointSpec.Mode}}' "${POOL_NAME}_lb")
[[ $mode == "host dnsrr" ]] || die "lb's port: publish mode and endpoint mode = $mode, want host dnsrr"
code=$(curl -s -o /dev/null -w '%{http_code}' -d 20 "${LB_URL}function/faas")
[[ $code == 401 ]] || die "POST /function/faas without the token answered $code, want 401"

out=$(bin/client call 20)
[[ $out == *6765* ]] || die "client call 20 returned: $out"
out=$(/usr/bin/python3 -c 'import os, sys, xmlrpc.client as x
print(x.ServerProxy("http://t:%s@127.0.0.1:%s/" % (os.environ["LB_AUTH_TOKEN"], sys.argv[1])).call_faas("20"))' "$LOAD_BALANCER_PORT")
[[ $out == *6765* ]] || die "xmlrpc.client call_faas(\"20\") returned: $out"
out=$(curl -fsS -H "Authorization: Bearer $LB_AUTH_TOKEN" -d 20 "${LB_URL}function/faas")
[[ $out == *6765* ]] || die "curl -d 20 /function/faas returned: $out"
out=$(bin/client call --fn hello e2e)
[[ $out == *"Hello, e2e!"* ]] || die "client call --fn hello e2e returned: $out"
out=$(bin/client call --lb "http://127.0.0.1:$((LOAD_BALANCER_PORT + 1))/" 20)
[[ $out == *6765* ]] || die "client call 20 on lb-2 returned: $out"
mode=$(docker service inspect -f '{{range .Endpoint.Ports}}{{.PublishMode}}:{{.PublishedPort}} {{end}}' "${POOL_NAME}_lb-2")
[[ $mode == "host:$((LOAD_BALANCER_PORT + 1)) " ]] || die "lb-2's port: $mode"
log "call_faas (bin/client, xmlrpc.client), POST /function/faas and hello answer through lb; lb-2 on :$((LOAD_BALANCER_PORT + 1))"
workers=$(( $(docker ps -q --filter "label=spillway.pool=$POOL_NAME" | wc -l) + $(docker service ls -q --filter "label=spillway.pool=$POOL_NAME" | wc -l) ))
((workers > 0)) || die "no worker (container or service) labelled spillway.pool=$POOL_NAME"
log "the pool has $workers worker container(s)/service(s); a worker's memory: $(docker stats --no-stream --format '{{.MemUsage}}' "$(docker ps -q --filter "label=spillway.pool=$POOL_NAME" | head -n1)" 2>/dev/null || echo unknown)"

# Function code in a worker reaches no host service: the workers' overlay is
# internal, so a worker has no address on docker_gwbridge and no route to
# the host, neither through the overlay's gateway nor the bridge's. lb (on
# the stack's other, non-internal overlay) reaches the same host service
# through docker_gwbridge: the probe itself works.
connect_probe='import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as e:
    print("blocked", type(e).__name__)'
host_port=$(free_port)
/usr/bin/python3 -m http.server "$host_port" --bind 0.0.0.0 --directory "$work" >/dev/null 2>&1 &
host_srv=$!
sleep 0.5
pool_gw=$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$POOL_NAME-workers")
bridge_gw=$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' docker_gwbridge)
[[ -n $pool_gw && -n $bridge_gw ]] || die "no gateway address for $POOL_NAME-workers ($pool_gw) or docker_gwbridge ($bridge_gw)"
worker=$(docker ps -q --filter "label=spillway.pool=$POOL_NAME" --filter status=running | head -n1)
[[ -n $worker ]] || die "no running worker container of $POOL_NAME"
for gw in "$pool_gw" "$bridge_gw"; do
	got=$(docker exec "$worker" /usr/bin/python3 -c "$connect_probe" "$gw" "$host_port" 2>&1)
	[[ $got == blocked* ]] || { kill "$host_srv"; die "a worker reached a host service at $gw:$host_port: $got"; }
done
lb_task=$(docker ps -q --filter "label=com.docker.swarm.service.name=${POOL_NAME}_lb" | head -n1)
got=$(docker exec "$lb_task" /usr/bin/python3 -c "$connect_probe" "$bridge_gw" "$host_port" 2>&1)
kill "$host_srv" 2>/dev/null || true
[[ $got == connected ]] || die "protection off (lb, on docker_gwbridge): $got; the check above proves nothing"
log "host: unreachable from a worker (via $pool_gw and $bridge_gw), reachable from lb"

# What the swarm backend makes for a function, a service and a config
# labelled with the pool (made here by hand): make down removes them too.
printf 'def handler(e, c):\n    return e\n' | docker config create --label "spillway.pool=$POOL_NAME" "$POOL_NAME-probe-v1" - >/dev/null
docker service create --detach --quiet --no-resolve-image --name "$POOL_NAME-probe" --label "spillway.pool=$POOL_NAME" --network "$POOL_NAME-workers" \
	--config "source=$POOL_NAME-probe-v1,target=/var/task/function.py" --endpoint-mode dnsrr --entrypoint sleep \
	"$(cfg WORKER_IMAGE "spillway-worker:$(cfg IMAGE_TAG latest)")" 86400 >/dev/null
log "made a service and a config labelled spillway.pool=$POOL_NAME, as the swarm backend does, for make down to remove"
