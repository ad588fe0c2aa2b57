#!/usr/bin/env bash
# deps.sh: make sure the host has what `make test` and `make up` use.
#
# As root it runs `apt-get update` once and installs what is missing; as any
# other user it names what is missing, prints the command that installs it and
# exits non-zero. It never removes or upgrades anything.
set -euo pipefail

missing=()      # Debian packages to install
problems=()     # things apt cannot fix

# have NAME: on PATH, or in an sbin directory a non-root PATH may lack.
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }

# redis-server: tests start private servers on loopback ports.
have redis-server || missing+=(redis-server)
# debootstrap: builds the offline base image (scripts/base-image.sh).
have debootstrap || missing+=(debootstrap)
# Debian's AWS CLI (/usr/bin/aws): an independent client for localcloud in
# tests. Another aws earlier on PATH (a pyenv shim, a pip install) does not
# count: the tests use Debian's.
if ! /usr/bin/aws --version >/dev/null 2>&1; then missing+=(awscli); fi
# Debian's own python3 (full package: json, zipfile, urllib, xmlrpc): tests and
# benchmarks use /usr/bin/python3, the interpreter the images carry.
if ! /usr/bin/python3 -c 'import json, zipfile, urllib.request, xmlrpc.client, ast' >/dev/null 2>&1; then
	missing+=(python3)
fi
# Debian's boto3 for /usr/bin/python3: the reference deployment sequence is
# replayed against localcloud with it (cmd/localcloud TestBoto3ReferenceDeployment).
if ! /usr/bin/python3 -c 'import boto3' >/dev/null 2>&1; then missing+=(python3-boto3); fi
# Debian's Chromium: the operator page's browser tests drive it headless,
# with a font so that the page lays out as it does for a person.
have chromium || missing+=(chromium)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
# envsubst renders compose.yml from compose.tmpl.yml.
have envsubst || missing+=(gettext-base)
# curl waits for health in `make up`.
have curl || missing+=(curl)
# HAProxy: examples/haproxy.cfg in front of the lb replicas is tested with
# Debian's (test/integration TestHAProxyInFrontOfReplicas).
have haproxy || missing+=(haproxy)
# Compose: either the plugin or the Python tool.
if ! docker compose version >/dev/null 2>&1 && ! have docker-compose; then
	missing+=(docker-compose)
fi
have go || problems+=("go (the Go toolchain, see go.mod for the version) is not on PATH")
if ! have docker; then
	missing+=(docker.io)
elif ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
	problems+=("the Docker engine does not answer (is dockerd running, and may $(id -un) use /var/run/docker.sock?)")
fi

if ((${#missing[@]})); then
	if [[ $(id -u) -eq 0 ]]; then
		echo "deps: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		echo "deps: installed ${missing[*]}"
	else
		echo "deps: missing Debian packages: ${missing[*]}" >&2
		echo "deps: install them with:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
		echo "deps: (or run 'sudo make deps')" >&2
		for p in "${problems[@]}"; do echo "deps: $p" >&2; done
		exit 1
	fi
fi

if ((${#problems[@]})); then
	for p in "${problems[@]}"; do echo "deps: $p" >&2; done
	exit 1
fi
echo "deps: ok"
