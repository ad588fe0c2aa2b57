#!/usr/bin/env bash
# images.sh: build the project's images from build/*.Dockerfile on the base
# chosen by choose-base.sh, with the binaries already built on the host in bin/
# (make build). Usage: images.sh [worker|localcloud|lb ...] (default: all).
#
# Tags: WORKER_IMAGE (default spillway-worker:$IMAGE_TAG),
# spillway-localcloud:$IMAGE_TAG and spillway-lb:$IMAGE_TAG; IMAGE_TAG
# (default latest) lets two checkouts on one engine keep their own images.
# Each records its base in the label spillway.base.
set -euo pipefail
SCRIPT_NAME=images
source "$(dirname "$0")/lib.sh"
load_env
need_docker

base=$("$SPILLWAY_ROOT/scripts/choose-base.sh")
IMAGE_TAG=$(cfg IMAGE_TAG latest)
[[ $IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "IMAGE_TAG='$IMAGE_TAG' is not a valid image tag"
names=("$@")
((${#names[@]})) || names=(worker localcloud lb)

for name in "${names[@]}"; do
	case $name in
	worker) tag=$(cfg WORKER_IMAGE "spillway-worker:$IMAGE_TAG") ;;
	localcloud | lb) tag=spillway-$name:$IMAGE_TAG ;;
	*) die "unknown image '$name' (worker, localcloud, lb)" ;;
	esac
	[[ -x bin/$name ]] || die "bin/$name is missing: ./cmd/$name does not build yet (run: make build)"
	if ! file_out=$(head -c 4 "bin/$name" | od -An -c | tr -d ' '); [[ $file_out != '177ELF' ]]; then
		die "bin/$name is not a Linux executable"
	fi
	log "building $tag from build/$name.Dockerfile on $base"
	start=$(date +%s)
	# The legacy builder is the one every engine/CLI pair here has; BuildKit
	# via buildx is used when the CLI has it.
	if docker buildx version >/dev/null 2>&1; then
		docker buildx build --load -q -f "build/$name.Dockerfile" --build-arg "BASE_IMAGE=$base" -t "$tag" . >/dev/null
	else
		# (The CLI's banner about the legacy builder is dropped; errors stay.)
		DOCKER_BUILDKIT=0 docker build -q -f "build/$name.Dockerfile" --build-arg "BASE_IMAGE=$base" -t "$tag" . \
			2> >(grep -Ev 'DEPRECATED: The legacy builder|BuildKit is currently disabled|environment-variable\.$|^$' >&2) >/dev/null
	fi
	size=$(docker image inspect --format '{{.Size}}' "$tag")
	log "built $tag in $(($(date +%s) - start))s ($((size / 1000000)) MB)"
done
