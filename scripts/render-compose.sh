#!/usr/bin/env bash
# render-compose.sh: render compose.tmpl.yml into compose.yml (git-ignored)
# and the services' env files into .cache/compose/, from the configuration
# .env.example < .env < environment.
#
# render-compose.sh --stack [FILE] renders stack.tmpl.yml into stack.yml
# instead (POOL_BACKEND=swarm make up deploys it), with the env files in
# .cache/stack/ and the secrets (REDIS_PASSWORD, LB_AUTH_TOKEN, real AWS
# keys) in .cache/stack/secrets/, one file each, kept out of every env file.
# It needs an active swarm: the stack's services are placed on this node.
#
# In compose, lb reaches Redis and localcloud by service name and listens on
# all interfaces of its container; those values are set here over .env's
# host-side ones (REDIS_ADDR, AWS_ENDPOINT_URL, LB_LISTEN_HOST).
set -euo pipefail
SCRIPT_NAME=render
source "$(dirname "$0")/lib.sh"
load_env

mode=compose
if [[ ${1:-} == --stack ]]; then
	mode=stack
	shift
fi
out=${1:-$SPILLWAY_ROOT/$mode.yml}
envdir=$SPILLWAY_CACHE/$mode
mkdir -p "$envdir"

POOL_NAME=$(cfg POOL_NAME spillway)
[[ $POOL_NAME =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "POOL_NAME='$POOL_NAME': use lower-case letters, digits, '-' and '_' (it names the compose project)"
DOCKER_NETWORK=$(cfg DOCKER_NETWORK "$POOL_NAME-workers")
LOAD_BALANCER_PORT=$(cfg LOAD_BALANCER_PORT 8000)
REDIS_PORT=$(cfg REDIS_PORT 6379)
LOCALCLOUD_PORT=$(cfg LOCALCLOUD_PORT 4566)
IMAGE_TAG=$(cfg IMAGE_TAG latest)
WORKER_IMAGE=$(cfg WORKER_IMAGE "spillway-worker:$IMAGE_TAG")
CLOUD=$(cfg CLOUD local)
for v in LOAD_BALANCER_PORT REDIS_PORT LOCALCLOUD_PORT; do
	[[ ${!v} =~ ^[0-9]+$ ]] && ((${!v} > 0 && ${!v} < 65536)) || die "$v='${!v}' is not a TCP port"
done
LB_REPLICAS=$(cfg LB_REPLICAS 1)
[[ $LB_REPLICAS =~ ^[0-9]+$ ]] && ((LB_REPLICAS >= 1 && LB_REPLICAS <= 16)) ||
	die "LB_REPLICAS='$LB_REPLICAS': want 1 to 16 lb replicas"
((LOAD_BALANCER_PORT + LB_REPLICAS - 1 < 65536)) ||
	die "LOAD_BALANCER_PORT=$LOAD_BALANCER_PORT with LB_REPLICAS=$LB_REPLICAS passes the last TCP port"

# The base the images were built on (make images records it).
SPILLWAY_BASE=$(cat "$SPILLWAY_CACHE/base-image" 2>/dev/null || true)
SPILLWAY_BASE=${SPILLWAY_BASE:-spillway-base:bookworm}
# Redis runs from the offline base (it carries redis-server) unless told
# otherwise; a python:3.12-slim base does not have it.
REDIS_IMAGE=$(cfg REDIS_IMAGE)
if [[ -z $REDIS_IMAGE ]]; then
	if [[ $SPILLWAY_BASE == spillway-base:* ]] || docker image inspect spillway-base:bookworm >/dev/null 2>&1; then
		REDIS_IMAGE=spillway-base:bookworm
	else
		REDIS_IMAGE=redis:7-bookworm
	fi
fi

DOCKER_SOCKET=$(cfg DOCKER_SOCKET /var/run/docker.sock)
if [[ -S $DOCKER_SOCKET ]]; then
	DOCKER_SOCKET_GID=$(stat -c %g "$DOCKER_SOCKET")
else
	log "warning: $DOCKER_SOCKET is not a socket here; lb will not reach Docker"
	DOCKER_SOCKET_GID=0
fi

# lb waits DRAIN_TIMEOUT for in-flight calls on SIGTERM; give it that plus 10s.
drain=$(cfg DRAIN_TIMEOUT 30s)
drain=${drain%s}
[[ $drain =~ ^[0-9]+$ ]] || drain=30
STOP_GRACE="$((drain + 10))s"

# Service env files. Values are written verbatim (no quotes), one per line.
write_env() { # file key=value...
	local f=$1
	shift
	umask 077
	: >"$f.tmp"
	local kv
	for kv in "$@"; do printf '%s\n' "$kv" >>"$f.tmp"; done
	mv "$f.tmp" "$f"
}

skip_for_lb=" BASE_IMAGE REDIS_IMAGE REDIS_PORT LOCALCLOUD_PORT DOCKER_SOCKET LB_URL LB_REPLICAS LB_ID "
lb_env=()
declare -A set_by_us=(
	[LB_LISTEN_HOST]=0.0.0.0
	[LOAD_BALANCER_PORT]=$LOAD_BALANCER_PORT
	[REDIS_ADDR]=redis:6379
	[POOL_NAME]=$POOL_NAME
	[DOCKER_NETWORK]=$DOCKER_NETWORK
	[WORKER_IMAGE]=$WORKER_IMAGE
)
wa=$(cfg WORKER_ADDRESS auto)
[[ $wa == auto ]] && set_by_us[WORKER_ADDRESS]=name
# lb listens on all interfaces of its container. Its port is published on
# 127.0.0.1 only and lb refuses connections from the workers' network, so
# without a token compose lets anonymous callers in (the reference client
# works unchanged) unless LB_ALLOW_ANONYMOUS=false asks for a token. A stack
# publishes on every interface of the node (Swarm has no host address for a
# port): there nobody is let in anonymously unless LB_ALLOW_ANONYMOUS=true.
if [[ $mode == compose && -z $(cfg LB_AUTH_TOKEN) && -z $(cfg LB_ALLOW_ANONYMOUS) ]]; then
	set_by_us[LB_ALLOW_ANONYMOUS]=true
fi
if [[ $CLOUD == local ]]; then
	set_by_us[AWS_ENDPOINT_URL]=http://localcloud:4566
	# localcloud accepts any credentials, but the SDK signs with some. Never
	# the shell's (they may be real AWS keys): fixed dummies.
	set_by_us[AWS_ACCESS_KEY_ID]=localcloud
	set_by_us[AWS_SECRET_ACCESS_KEY]=localcloud
	set_by_us[AWS_SESSION_TOKEN]=
elif [[ $CLOUD == aws ]]; then
	# Real AWS: pass the SDK's credential variables from this shell, if set.
	for k in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION; do
		[[ -n ${!k:-} ]] && set_by_us[$k]=${!k}
	done
fi
# In a stack these go to lb as Swarm secrets, not in its env file.
secret_keys=" REDIS_PASSWORD LB_AUTH_TOKEN "
[[ $CLOUD == local ]] || secret_keys+="AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN "
declare -A lb_secrets=()
for k in "${CFG_KEYS[@]}"; do
	[[ $skip_for_lb == *" $k "* || -v set_by_us[$k] ]] && continue
	[[ -n ${CFG[$k]} ]] || continue
	if [[ $mode == stack && $secret_keys == *" $k "* ]]; then lb_secrets[$k]=${CFG[$k]}; else lb_env+=("$k=${CFG[$k]}"); fi
done
for k in "${!set_by_us[@]}"; do
	[[ -n ${set_by_us[$k]} ]] || continue
	if [[ $mode == stack && $secret_keys == *" $k "* ]]; then lb_secrets[$k]=${set_by_us[$k]}; else lb_env+=("$k=${set_by_us[$k]}"); fi
done
write_env "$envdir/lb.env" "${lb_env[@]}"

# Redis requires REDIS_PASSWORD (make up generates it into .env). Without
# one the redis service refuses to start rather than run open.
REDIS_PASSWORD=$(cfg REDIS_PASSWORD)
if [[ -z $REDIS_PASSWORD ]]; then
	log "warning: REDIS_PASSWORD is empty: the compose Redis will not start (make up generates one into .env)"
elif ! [[ $REDIS_PASSWORD =~ ^[A-Za-z0-9._~+/=-]+$ ]]; then
	die "REDIS_PASSWORD: use letters, digits and . _ ~ + / = - only (make up generates one when it is absent)"
fi
[[ $mode == stack ]] || write_env "$envdir/redis.env" "REDIS_PASSWORD=$REDIS_PASSWORD" "REDISCLI_AUTH=$REDIS_PASSWORD"

lc_env=()
for k in "${CFG_KEYS[@]}"; do
	[[ $k == LOCALCLOUD_* && $k != LOCALCLOUD_PORT && $k != LOCALCLOUD_ISOLATION && $k != LOCALCLOUD_INSTANCE && -n ${CFG[$k]} ]] &&
		lc_env+=("$k=${CFG[$k]}")
done
# Environments are containers of the worker image, labelled with the pool so
# that a restarted localcloud removes its own leftovers and no other stack's.
# unsafe-process is for tests without Docker, never for this stack.
[[ $(cfg LOCALCLOUD_ISOLATION container) == container ]] ||
	die "LOCALCLOUD_ISOLATION=$(cfg LOCALCLOUD_ISOLATION container): compose runs localcloud with container isolation only"
lc_env+=("LOCALCLOUD_ISOLATION=container" "LOCALCLOUD_INSTANCE=$POOL_NAME")
[[ -n $(cfg LOCALCLOUD_IMAGE "") ]] || lc_env+=("LOCALCLOUD_IMAGE=$WORKER_IMAGE")
lc_env+=("AWS_REGION=$(cfg AWS_REGION us-east-1)")
write_env "$envdir/localcloud.env" "${lc_env[@]}"

vars=(POOL_NAME DOCKER_NETWORK LOAD_BALANCER_PORT REDIS_PORT LOCALCLOUD_PORT WORKER_IMAGE IMAGE_TAG
	SPILLWAY_BASE REDIS_IMAGE DOCKER_SOCKET DOCKER_SOCKET_GID STOP_GRACE)
tmpl=$SPILLWAY_ROOT/compose.tmpl.yml
if [[ $mode == stack ]]; then
	tmpl=$SPILLWAY_ROOT/stack.tmpl.yml
	[[ -n $REDIS_PASSWORD ]] || die "REDIS_PASSWORD is empty: the stack's Redis requires one (make up generates one into .env)"
	# SWARM_NODE_ID in the environment renders for another node (tests).
	SWARM_NODE_ID=${SWARM_NODE_ID:-$(docker info -f '{{.Swarm.NodeID}}' 2>/dev/null || true)}
	[[ -n $SWARM_NODE_ID ]] || die "this Docker engine is in no swarm: the stack is placed on its node (SWARM_INIT=1 make up starts one)"
	# Redis runs as a uid of its own here, so that its secret is readable by
	# it alone (a numeric uid needs no account in the image).
	REDIS_UID=10004
	STACK_ENV_DIR=$envdir
	# Each secret is a file under .cache/stack/secrets/ (mode 600) and a
	# Swarm secret named <pool>_<key>_<hash of the value>.
	secdir=$envdir/secrets
	mkdir -p "$secdir"
	chmod 700 "$secdir"
	rm -f "$secdir"/*
	STACK_SECRETS=
	LB_SECRETS=
	for k in $(printf '%s\n' "${!lb_secrets[@]}" | sort); do
		key=${k,,}
		(umask 077 && printf '%s' "${lb_secrets[$k]}" >"$secdir/$k")
		sum=$(sha256sum "$secdir/$k" | cut -c1-12)
		STACK_SECRETS+="  $key: {name: ${POOL_NAME}_${key}_$sum, file: \"$secdir/$k\"}"$'\n'
		LB_SECRETS+="${LB_SECRETS:+, }{source: $key, target: env_$k, uid: \"10002\", gid: \"10002\", mode: 0400}"
	done
	LB_SECRETS="[$LB_SECRETS]"
	vars+=(SWARM_NODE_ID REDIS_UID STACK_ENV_DIR STACK_SECRETS LB_SECRETS)
fi
shell_format=
for v in "${vars[@]}"; do
	export "${v?}"
	shell_format+="\${$v} "
done
command -v envsubst >/dev/null || die "envsubst is missing (make deps installs gettext-base)"
# The lb block (between its marker lines) is rendered once per replica.
begin='^  # ---- lb replica'
end='^  # ---- end of lb replica'
grep -q "$begin" "$tmpl" && grep -q "$end" "$tmpl" || die "${tmpl##*/}: the lb replica markers are missing"
lb_urls=()
{
	echo "# Rendered from ${tmpl##*/} by scripts/render-compose.sh; edit the template or .env."
	awk -v b="$begin" '$0 ~ b {exit} {print}' "$tmpl" | envsubst "$shell_format"
	for ((i = 1; i <= LB_REPLICAS; i++)); do
		LB_SERVICE=lb
		((i == 1)) || LB_SERVICE=lb-$i
		LB_ID=lb-$i
		LB_PORT=$((LOAD_BALANCER_PORT + i - 1))
		export LB_SERVICE LB_ID LB_PORT
		awk -v b="$begin" -v e="$end" '$0 ~ b {on=1} on {print} $0 ~ e {on=0}' "$tmpl" |
			envsubst "$shell_format"'${LB_SERVICE} ${LB_ID} ${LB_PORT}'
		lb_urls+=("http://127.0.0.1:$LB_PORT/")
	done
	awk -v e="$end" 'found {print} $0 ~ e {found=1}' "$tmpl" | envsubst "$shell_format"
} >"$out.tmp"
mv "$out.tmp" "$out"
log "wrote ${out#"$SPILLWAY_ROOT/"} (pool $POOL_NAME, network $DOCKER_NETWORK, lb $(IFS=,; echo "${lb_urls[*]}"), base $SPILLWAY_BASE)"
