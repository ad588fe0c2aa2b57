#!/usr/bin/env bash
# up.sh: the whole stack from nothing: .env from .env.example if absent, the
# offline base image when needed, the images, compose.yml, `compose up -d`,
# a bounded wait for Redis and lb's /healthz, the example functions published
# with bin/addfaas, and the next commands. `make up` runs it after `make build`.
#
# Every setting comes from .env.example < .env < the environment, so a test
# can run its own stack beside another one, e.g.
#   POOL_NAME=e2e1 LOAD_BALANCER_PORT=18000 REDIS_PORT=16379 LOCALCLOUD_PORT=14566 make up
#   POOL_NAME=e2e1 make down
# (POOL_NAME is also the compose project name.) UP_TIMEOUT (default 180 s)
# bounds each wait; HANDLER_EXAMPLE/HANDLER_NAME choose the second function.
set -euo pipefail
SCRIPT_NAME=up
source "$(dirname "$0")/lib.sh"

if [[ ! -f .env ]]; then
	cp .env.example .env
	log "created .env from .env.example (edit it to change the configuration)"
fi
load_env
ensure_redis_password
# addfaas below reads it from here (the environment wins over .env).
export REDIS_PASSWORD=${CFG[REDIS_PASSWORD]}
need_docker
find_compose
timeout_s=${UP_TIMEOUT:-180}

for b in lb localcloud worker addfaas; do
	[[ -x bin/$b ]] || die "bin/$b is missing: ./cmd/$b does not build yet (run: make build)"
done

"$SPILLWAY_ROOT/scripts/images.sh"
"$SPILLWAY_ROOT/scripts/render-compose.sh"

port=$(cfg LOAD_BALANCER_PORT 8000)
redis_port=$(cfg REDIS_PORT 6379)
name=$(cfg FAAS_FUNCTION_NAME faas)
log "starting the stack with ${COMPOSE[*]}"
compose up -d --no-build --remove-orphans

# wait_for WHAT COMMAND...: retry COMMAND each second until it succeeds or
# timeout_s passes.
wait_for() {
	local what=$1 deadline=$((SECONDS + timeout_s))
	shift
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "$what did not come up within ${timeout_s}s; last logs:"
			compose ps >&2 || true
			compose logs --tail 40 >&2 || true
			die "giving up (the stack stays up for inspection; make down removes it)"
		fi
		sleep 1
	done
	log "$what is up"
}

redis_ping() { compose exec -T redis redis-cli ping | grep -q PONG; }
wait_for "redis (127.0.0.1:$redis_port)" redis_ping

# Publish before waiting on lb: lb serves once it has a function to serve.
log "publishing examples/fib.py as '$name'"
bin/addfaas --redis "127.0.0.1:$redis_port" --name "$name" examples/fib.py
handler=${HANDLER_EXAMPLE:-examples/hello_handler.py}
hname=${HANDLER_NAME:-hello}
if [[ -f $handler ]]; then
	log "publishing $handler as '$hname'"
	bin/addfaas --redis "127.0.0.1:$redis_port" --name "$hname" "$handler"
fi

replicas=$(cfg LB_REPLICAS 1)
lb_urls=()
for ((i = 0; i < replicas; i++)); do
	p=$((port + i))
	wait_for "lb-$((i + 1)) (http://127.0.0.1:$p/healthz)" curl -fsS --max-time 2 "http://127.0.0.1:$p/healthz"
	lb_urls+=("http://127.0.0.1:$p/")
done
lb_list=$(IFS=,; echo "${lb_urls[*]}")

pool=$(cfg POOL_NAME spillway)
lb_hint=
[[ $port == 8000 && $replicas == 1 ]] || lb_hint="export LB_URL=$lb_list   # bin/client's target(s)
  "
ui_hint=
[[ -z $(cfg LB_AUTH_TOKEN "") ]] || ui_hint=" (user: any, password: LB_AUTH_TOKEN)"
cat <<MSG

Spillway is up: $replicas lb on $lb_list serving '$name' and '$hname' (pool '$pool').
Operator page: http://127.0.0.1:$port/ui$ui_hint
Next:
  ${lb_hint}bin/client call 20                        # one call through lb
  bin/client bench -c 8 -d 20s --param 25   # load: the pool grows, overflow goes to localcloud
  bin/client status                         # pool members and counters
  python3 -c 'import xmlrpc.client as x; print(x.ServerProxy("http://127.0.0.1:$port/").call_faas("20"))'
  bin/addfaas --redis 127.0.0.1:$redis_port --name $name my_function.py   # publish a new version (REDIS_PASSWORD from .env)
  ${COMPOSE[*]} -p $pool -f compose.yml logs -f lb       # follow lb's log
  make down                                 # stop and remove everything
MSG
