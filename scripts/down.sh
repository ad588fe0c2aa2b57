#!/usr/bin/env bash
# down.sh: remove everything `make up` started: the compose stack with its
# volumes, then the worker containers, their volumes and networks labelled
# spillway.pool=$POOL_NAME (lb starts workers itself, so compose does not
# know them), and networks labelled spillway.stack=$POOL_NAME. Safe to run twice or when nothing is up.
#
# On a swarm (POOL_BACKEND=swarm make up) it removes the stack POOL_NAME: its
# lb services first, then the pool's worker services, containers and configs
# (labelled spillway.pool), then every service, network, secret and config of
# the stack, waiting (bounded by DOWN_TIMEOUT, default 90 s) until they are
# gone. It never leaves the swarm: `docker swarm leave --force` does that.
set -euo pipefail
SCRIPT_NAME=down
source "$(dirname "$0")/lib.sh"
load_env
need_docker
pool=$(cfg POOL_NAME spillway)
label=spillway.pool=$pool
backend=$(cfg POOL_BACKEND docker)
timeout_s=${DOWN_TIMEOUT:-90}

# until_gone WHAT COMMAND...: wait until COMMAND prints nothing.
until_gone() {
	local what=$1 deadline=$((SECONDS + timeout_s)) left
	shift
	while left=$("$@") && [[ -n $left ]]; do
		((SECONDS < deadline)) || die "$what still there after ${timeout_s}s: $(tr '\n' ' ' <<<"$left")"
		sleep 1
	done
}
stack_containers() { docker ps -aq --filter "label=com.docker.stack.namespace=$pool"; }
stack_left() {
	local k
	for k in service network secret config; do stack_ids "$k" "$pool"; done
	stack_containers
}
# The swarm part runs for POOL_BACKEND=swarm, or when a stack of this name
# is there; listings tolerate a swarm that goes meanwhile.
swarm=
if [[ -n $(swarm_node_id) ]] && [[ $backend == swarm || -n $(stack_ids service "$pool") ]]; then swarm=1; fi
if [[ -n $swarm && -n $(stack_ids service "$pool") ]]; then
	# Every lb replica first (SIGTERM, its drain), so none replaces the
	# workers removed below.
	lbs=$(docker service ls --filter "label=com.docker.stack.namespace=$pool" --format '{{.Name}}' |
		awk -v p="${pool}_" 'index($0, p) == 1 && substr($0, length(p) + 1) ~ /^lb(-[0-9]+)?$/')
	if [[ -n $lbs ]]; then
		log "removing the stack's lb services: $(tr '\n' ' ' <<<"$lbs")"
		# shellcheck disable=SC2086
		docker service rm $lbs >/dev/null
		lb_tasks() { local s; for s in $lbs; do docker ps -aq --filter "label=com.docker.swarm.service.name=$s"; done; }
		until_gone "lb containers" lb_tasks
	fi
fi
if [[ -n $swarm ]]; then
	# The swarm backend's workers: a service per function, and its configs.
	svcs=$(docker service ls -q --filter "label=$label" 2>/dev/null || true)
	[[ -z $svcs ]] || { log "removing $(wc -w <<<"$svcs") worker service(s) labelled $label"; docker service rm $svcs >/dev/null; }
fi

# Render for this configuration (pool name, network): compose.yml may be
# missing or from another one.
"$SPILLWAY_ROOT/scripts/render-compose.sh" 2>/dev/null || true
if [[ $backend != swarm || -n $(docker ps -aq --filter "label=com.docker.compose.project=$pool") ]] && [[ -f compose.yml ]]; then
	use_compose=1
else
	use_compose=
fi
if [[ -n $use_compose ]]; then
	find_compose
	# Stop every lb replica first (however many LB_REPLICAS started) so none
	# replaces the workers removed below.
	lbs=$(docker ps -q --filter "label=com.docker.compose.project=$pool" \
		--format '{{.ID}} {{.Label "com.docker.compose.service"}}' | awk '$2 ~ /^lb(-[0-9]+)?$/ {print $1}')
	# shellcheck disable=SC2086
	[[ -z $lbs ]] || docker stop -t 40 $lbs >/dev/null 2>&1 || true
fi

ids=$(docker ps -aq --filter "label=$label")
if [[ -n $ids ]]; then
	log "removing $(wc -w <<<"$ids") container(s) labelled $label"
	# shellcheck disable=SC2086
	docker rm -f -v $ids >/dev/null
fi

if [[ -n $use_compose ]]; then
	compose down -v --remove-orphans -t 20 || log "compose down reported an error; removing what is left"
fi

if [[ -n $swarm ]]; then
	swarm_workers() { docker service ls -q --filter "label=$label" 2>/dev/null || true; docker ps -aq --filter "label=$label"; }
	until_gone "the pool's worker services" swarm_workers
	cfgs=$(docker config ls -q --filter "label=$label" 2>/dev/null || true)
	[[ -z $cfgs ]] || { log "removing the pool's configs"; docker config rm $cfgs >/dev/null; }
	if [[ -n $(stack_left) ]]; then
		log "removing the stack '$pool' (services, networks, secrets, configs)"
		docker stack rm "$pool" >/dev/null 2>&1 || true
		# Swarm removes tasks after it answers; a network still in use by a
		# stopping task stays, so the removal is repeated until all is gone.
		deadline=$((SECONDS + timeout_s))
		while [[ -n $(stack_left) ]]; do
			((SECONDS < deadline)) || die "the stack '$pool' is still there after ${timeout_s}s: $(stack_left | tr '\n' ' ')"
			sleep 1
			[[ -n $(stack_containers) ]] && continue
			docker stack rm "$pool" >/dev/null 2>&1 || true
		done
	fi
fi

for l in "$label" "spillway.stack=$pool"; do
	vols=$(docker volume ls -q --filter "label=$l")
	[[ -z $vols ]] || { log "removing volumes labelled $l"; docker volume rm -f $vols >/dev/null; }
	nets=$(docker network ls -q --filter "label=$l")
	for n in $nets; do
		log "removing network $n labelled $l"
		docker network rm "$n" >/dev/null || log "network $n is still in use"
	done
done
# A workers' network lb made itself (lb on the host) may carry no label.
net=$(cfg DOCKER_NETWORK "$pool-workers")
if docker network inspect "$net" >/dev/null 2>&1; then
	docker network rm "$net" >/dev/null || log "network $net is still in use"
fi
left=$(docker ps -aq --filter "label=$label")
[[ -z $left ]] || die "containers labelled $label are still there: $left"
log "pool '$pool' is down"
