# lib.sh: helpers shared by the Spillway scripts. Source it; it changes to the
# repository root.
# shellcheck shell=bash

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
SPILLWAY_ROOT=$PWD
SPILLWAY_CACHE=$SPILLWAY_ROOT/.cache

log() { echo "${SCRIPT_NAME:-spillway}: $*" >&2; }
die() { log "$*"; exit 1; }

# load_env fills the associative array CFG from .env.example (defaults), then
# .env, then the process environment (which wins), as lb itself does. Keys keep
# the order of first appearance in CFG_KEYS.
declare -gA CFG=()
declare -ga CFG_KEYS=()
load_env() {
	local f line key val
	for f in "$SPILLWAY_ROOT/.env.example" "$SPILLWAY_ROOT/.env"; do
		[[ -f $f ]] || continue
		while IFS= read -r line || [[ -n $line ]]; do
			line=${line%$'\r'}
			[[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=(.*)$ ]] || continue
			key=${BASH_REMATCH[2]}
			val=${BASH_REMATCH[3]}
			val=${val#"${val%%[![:space:]]*}"}
			if [[ $val =~ ^\"(.*)\"[[:space:]]*(#.*)?$ ]] || [[ $val =~ ^\'(.*)\'[[:space:]]*(#.*)?$ ]]; then
				val=${BASH_REMATCH[1]}
			else
				val=${val%%[[:space:]]#*}
				val=${val%"${val##*[![:space:]]}"}
			fi
			[[ -v CFG[$key] ]] || CFG_KEYS+=("$key")
			CFG[$key]=$val
		done <"$f"
	done
	for key in "${CFG_KEYS[@]}"; do
		if [[ -n ${!key+set} ]]; then CFG[$key]=${!key}; fi
	done
}

# cfg NAME DEFAULT prints the resolved value, or DEFAULT when empty/unset.
cfg() {
	local v=${CFG[$1]:-}
	[[ -n $v ]] || v=${!1:-}
	printf '%s' "${v:-${2:-}}"
}

# compose runs the Compose tool found here: the `docker compose` plugin when
# present, else the Python `docker-compose`.
COMPOSE=()
find_compose() {
	if ((${#COMPOSE[@]})); then return 0; fi
	if docker compose version >/dev/null 2>&1; then
		COMPOSE=(docker compose)
	elif command -v docker-compose >/dev/null 2>&1; then
		COMPOSE=(docker-compose)
	else
		die "neither 'docker compose' nor 'docker-compose' is installed (make deps installs docker-compose)"
	fi
}
compose() {
	find_compose
	"${COMPOSE[@]}" --project-directory "$SPILLWAY_ROOT" -p "$(cfg POOL_NAME spillway)" -f "$SPILLWAY_ROOT/compose.yml" "$@"
}

# need_docker fails fast when no engine answers.
need_docker() {
	command -v docker >/dev/null 2>&1 || die "docker is not installed"
	timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
		die "the Docker engine does not answer (is dockerd running? may $(id -un) use its socket?)"
}

# ensure_redis_password makes sure REDIS_PASSWORD has a value: the
# environment's or .env's when set, else a new random one written into .env
# (replacing an empty REDIS_PASSWORD= line). The value is never printed.
ensure_redis_password() {
	ensure_generated REDIS_PASSWORD "the compose Redis requires it; lb and addfaas read it there"
}

# ensure_generated KEY WHY gives KEY a random value in .env when neither the
# environment nor .env has one (replacing an empty KEY= line), and says so
# without printing it.
ensure_generated() {
	local key=$1 why=$2
	[[ -n $(cfg "$key") ]] && return 0
	local pw
	pw=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
	[[ ${#pw} == 48 ]] || die "could not read /dev/urandom for $key"
	local f=$SPILLWAY_ROOT/.env
	if [[ -f $f ]]; then
		sed -i "/^[[:space:]]*$key[[:space:]]*=[[:space:]]*\$/d" "$f"
		[[ -z $(tail -c1 "$f") ]] || echo >>"$f"
	fi
	(umask 077 && printf '%s=%s\n' "$key" "$pw" >>"$f")
	chmod go-rwx "$f"
	[[ -v CFG[$key] ]] || CFG_KEYS+=("$key")
	CFG[$key]=$pw
	log "generated $key into .env ($why)"
}

# swarm_node_id prints this engine's node id in its swarm, or nothing when
# the engine is in no active swarm.
swarm_node_id() {
	[[ $(docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null) == active ]] || return 0
	docker info -f '{{.Swarm.NodeID}}' 2>/dev/null
}

# stack_ids KIND STACK lists the ids of the stack's services, networks,
# secrets or configs (docker stack deploy labels each with its namespace).
stack_ids() {
	docker "$1" ls -q --filter "label=com.docker.stack.namespace=$2" 2>/dev/null || true
}
