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
#
# POOL_BACKEND=swarm: the same stack as a Swarm stack named POOL_NAME
# (stack.tmpl.yml, `docker stack deploy --resolve-image never`) on the swarm
# this engine is in; SWARM_INIT=1 first starts a one-node swarm when there is
# none. Its ports are published on every interface of the node, so lb gets a
# token (LB_AUTH_TOKEN, generated into .env when absent) unless
# LB_ALLOW_ANONYMOUS=true.
set -euo pipefail
SCRIPT_NAME=up
source "$(dirname "$0")/lib.sh"

if [[ ! -f .env ]]; then
	cp .env.example .env
	log "created .env from .env.example (edit it to change the configuration)"
fi
load_env
backend=$(cfg POOL_BACKEND docker)
[[ $backend == docker || $backend == swarm ]] || die "POOL_BACKEND='$backend': want docker or swarm"
ensure_redis_password
# addfaas below reads it from here (the environment wins over .env).
export REDIS_PASSWORD=${CFG[REDIS_PASSWORD]}
need_docker
timeout_s=${UP_TIMEOUT:-180}
pool=$(cfg POOL_NAME spillway)
if [[ $backend == swarm ]]; then
	command -v docker >/dev/null && docker stack --help >/dev/null 2>&1 || die "this docker client has no 'docker stack'"
	if [[ -z $(swarm_node_id) ]]; then
		[[ ${SWARM_INIT:-0} == 1 ]] ||
			die "POOL_BACKEND=swarm: this Docker engine is in no swarm. Start one (docker swarm init --advertise-addr 127.0.0.1), join one (docker swarm join), or run SWARM_INIT=1 make up"
		log "SWARM_INIT=1: starting a one-node swarm (docker swarm init --advertise-addr 127.0.0.1; docker swarm leave --force ends it)"
		docker swarm init --advertise-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
	fi
	[[ $(docker info -f '{{.Swarm.ControlAvailable}}') == true ]] ||
		die "POOL_BACKEND=swarm: this node is a swarm worker; run make up on a manager"
	[[ $(cfg LB_ALLOW_ANONYMOUS) == true ]] ||
		ensure_generated LB_AUTH_TOKEN "a stack publishes lb on every interface of the node; callers send it: export LB_AUTH_TOKEN from .env"
	export LB_AUTH_TOKEN=${CFG[LB_AUTH_TOKEN]:-}
else
	find_compose
fi

for b in lb localcloud worker addfaas; do
	[[ -x bin/$b ]] || die "bin/$b is missing: ./cmd/$b does not build yet (run: make build)"
done

"$SPILLWAY_ROOT/scripts/images.sh"
port=$(cfg LOAD_BALANCER_PORT 8000)
redis_port=$(cfg REDIS_PORT 6379)
name=$(cfg FAAS_FUNCTION_NAME faas)
if [[ $backend == swarm ]]; then
	"$SPILLWAY_ROOT/scripts/render-compose.sh" --stack
	log "deploying the stack '$pool' with docker stack deploy"
	# Local images only: there is no registry to resolve them in.
	docker stack deploy --resolve-image never --prune -c "$SPILLWAY_ROOT/stack.yml" "$pool" >&2
else
	"$SPILLWAY_ROOT/scripts/render-compose.sh"
	log "starting the stack with ${COMPOSE[*]}"
	compose up -d --no-build --remove-orphans
fi

# show_state prints what the stack is doing, for a wait that timed out.
show_state() {
	if [[ $backend == swarm ]]; then
		local s
		for s in $(stack_ids service "$pool"); do
			docker service ps --no-trunc "$s" >&2 || true
			docker service logs --tail 40 "$s" >&2 || true
		done
	else
		compose ps >&2 || true
		compose logs --tail 40 >&2 || true
	fi
}

# wait_for WHAT COMMAND...: retry COMMAND each second until it succeeds or
# timeout_s passes.
wait_for() {
	local what=$1 deadline=$((SECONDS + timeout_s))
	shift
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "$what did not come up within ${timeout_s}s; last logs:"
			show_state
			die "giving up (the stack stays up for inspection; make down removes it)"
		fi
		sleep 1
	done
	log "$what is up"
}

if [[ $backend == swarm ]]; then
	# The task's own health check (redis-cli ping with the password), then
	# the published port from here.
	redis_ping() {
		[[ -n $(docker ps -q --filter "label=com.docker.swarm.service.name=${pool}_redis" --filter health=healthy) ]] &&
			timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$redis_port"
	}
else
	redis_ping() { compose exec -T redis redis-cli ping | grep -q PONG; }
fi
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

lb_hint=
[[ $port == 8000 && $replicas == 1 ]] || lb_hint="export LB_URL=$lb_list   # bin/client's target(s)
  "
ui_hint=
[[ -z $(cfg LB_AUTH_TOKEN "") ]] || ui_hint=" (user: any, password: LB_AUTH_TOKEN)"
py_call="python3 -c 'import xmlrpc.client as x; print(x.ServerProxy(\"http://127.0.0.1:$port/\").call_faas(\"20\"))'"
logs_hint="${COMPOSE[*]} -p $pool -f compose.yml logs -f lb       # follow lb's log"
curl_call="curl -d 20 http://127.0.0.1:$port/function/$name"
where="pool '$pool'"
if [[ -n $(cfg LB_AUTH_TOKEN "") ]]; then
	# Never printed: the commands read it from the environment.
	lb_hint+="export LB_AUTH_TOKEN=\$(sed -n 's/^LB_AUTH_TOKEN=//p' .env)   # lb wants it (bin/client sends it)
  "
	py_call="python3 -c 'import os, xmlrpc.client as x; print(x.ServerProxy(\"http://t:%s@127.0.0.1:$port/\" % os.environ[\"LB_AUTH_TOKEN\"]).call_faas(\"20\"))'"
	curl_call="curl -H \"Authorization: Bearer \$LB_AUTH_TOKEN\" -d 20 http://127.0.0.1:$port/function/$name"
fi
if [[ $backend == swarm ]]; then
	logs_hint="docker service logs -f ${pool}_lb                 # follow lb's log"
	where="pool '$pool', stack '$pool' on swarm node $(swarm_node_id)"
fi
cat <<MSG

Spillway is up: $replicas lb on $lb_list serving '$name' and '$hname' ($where).
Operator page: http://127.0.0.1:$port/ui$ui_hint
Next:
  ${lb_hint}bin/client call 20                        # one call of '$name' through lb
  bin/client call --fn $hname world         # another function
  $curl_call   # plain HTTP
  bin/client functions                      # the served functions and their workers
  bin/client bench -c 8 -d 20s --param 25   # load: the pool grows, overflow goes to localcloud
  bin/client status                         # pool members and counters
  $py_call
  bin/addfaas --redis 127.0.0.1:$redis_port --name $name my_function.py   # publish a new version (REDIS_PASSWORD from .env)
  $logs_hint
  make down                                 # stop and remove everything
MSG
