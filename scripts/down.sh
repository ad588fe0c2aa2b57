#!/usr/bin/env bash
# down.sh: remove everything `make up` started: the compose stack with its
# volumes, then the worker containers, their volumes and networks labelled
# spillway.pool=$POOL_NAME (lb starts workers itself, so compose does not
# know them), and networks labelled spillway.stack=$POOL_NAME. Safe to run twice or when nothing is up.
set -euo pipefail
SCRIPT_NAME=down
source "$(dirname "$0")/lib.sh"
load_env
need_docker
pool=$(cfg POOL_NAME spillway)
label=spillway.pool=$pool

# Render for this configuration (pool name, network): compose.yml may be
# missing or from another one.
"$SPILLWAY_ROOT/scripts/render-compose.sh" 2>/dev/null || true
if [[ -f compose.yml ]]; then
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

if [[ -f compose.yml ]]; then
	compose down -v --remove-orphans -t 20 || log "compose down reported an error; removing what is left"
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
