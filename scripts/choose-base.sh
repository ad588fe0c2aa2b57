#!/usr/bin/env bash
# choose-base.sh: print the base image the project's images build FROM.
#
# BASE_IMAGE (default python:3.12-slim) when it is present locally or can be
# pulled within PULL_TIMEOUT seconds (default 20); otherwise the offline
# spillway-base:bookworm, made by scripts/base-image.sh when absent. The choice
# is recorded in .cache/base-image and printed on stdout.
set -euo pipefail
SCRIPT_NAME=choose-base
source "$(dirname "$0")/lib.sh"
load_env

want=$(cfg BASE_IMAGE python:3.12-slim)
offline=${SPILLWAY_BASE_TAG:-spillway-base:bookworm}
need_docker

chosen=
if docker image inspect "$want" >/dev/null 2>&1; then
	chosen=$want
elif [[ $want != "$offline" ]]; then
	log "trying: docker pull $want (at most ${PULL_TIMEOUT:-20}s)"
	if timeout "${PULL_TIMEOUT:-20}" docker pull -q "$want" >/dev/null 2>&1; then
		chosen=$want
	else
		log "$want cannot be pulled here; using the offline base $offline"
	fi
fi
if [[ -z $chosen ]]; then
	"$SPILLWAY_ROOT/scripts/base-image.sh" >&2
	chosen=$offline
fi
mkdir -p "$SPILLWAY_CACHE"
printf '%s\n' "$chosen" >"$SPILLWAY_CACHE/base-image"
printf '%s\n' "$chosen"
