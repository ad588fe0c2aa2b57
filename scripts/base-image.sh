#!/usr/bin/env bash
# base-image.sh: make the offline base image (default spillway-base:bookworm)
# without any image registry.
#
# debootstrap a minimal Debian bookworm (--variant=minbase) with python3 (the
# full package: json, urllib, zipfile), ca-certificates and redis-server into a
# temporary folder, using the package mirror this machine's own apt sources
# name, then `docker import` it. Idempotent: exits at once when the image exists.
#
# Environment:
#   SPILLWAY_BASE_TAG   image tag to make (default spillway-base:bookworm)
#   DEBIAN_MIRROR       mirror URL to use instead of the one in the apt sources
#   DEBIAN_SUITE        suite (default bookworm)
#   BASE_UPDATES=0      skip applying bookworm-updates / bookworm-security
#   FORCE=1             rebuild even when the image exists
set -euo pipefail

tag=${SPILLWAY_BASE_TAG:-spillway-base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}
packages=python3,ca-certificates,redis-server

log() { echo "base-image: $*" >&2; }
die() { log "$*"; exit 1; }

if [[ ${FORCE:-0} != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
	log "$tag exists; nothing to do"
	exit 0
fi

# mirror_from_sources prints the first Debian mirror URI for $suite found in the
# machine's apt sources: deb822 *.sources stanzas first, then classic lists.
mirror_from_sources() {
	local f
	shopt -s nullglob
	for f in /etc/apt/sources.list.d/*.sources; do
		# Stanzas are separated by blank lines; take Types with "deb", a Suites
		# entry equal to $suite (not -security/-updates) and the first URI.
		awk -v suite="$suite" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uri != "") { print uri; found = 1; exit }
				types = ""; suites = ""; uri = ""; enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{
				key = tolower($1); sub(/:$/, "", key)
				val = $0; sub(/^[^:]*:[ \t]*/, "", val)
				if (key == "types") types = val
				else if (key == "suites") suites = val
				else if (key == "uris") { split(val, u, /[ \t]+/); uri = u[1] }
				else if (key == "enabled") enabled = tolower(val)
			}
			END { if (!found) flush() }
		' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		# deb [options] URI suite components...
		awk -v suite="$suite" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i+1) == suite) { print $i; exit }
			}
		' "$f"
	done
}

mirror=${DEBIAN_MIRROR:-$(mirror_from_sources | head -n1)}
[[ -n $mirror ]] || die "no Debian mirror for '$suite' in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set DEBIAN_MIRROR=http://your.mirror/debian"
[[ $(id -u) -eq 0 ]] || die "debootstrap needs root (run: sudo make base)"
if ! command -v debootstrap >/dev/null && [[ ! -x /usr/sbin/debootstrap ]]; then
	log "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
		die "debootstrap is not installed and could not be (run: make deps)"
fi
export PATH=$PATH:/usr/sbin:/sbin

keyring_args=()
for k in /usr/share/keyrings/debian-archive-keyring.gpg; do
	[[ -r $k ]] && keyring_args=(--keyring="$k")
done

work=$(mktemp -d "${TMPDIR:-/tmp}/spillway-base.XXXXXX")
cleanup() {
	# A failed debootstrap may leave proc/sys mounted inside the target.
	local m
	for m in proc sys dev/pts dev; do
		mountpoint -q "$work/root/$m" 2>/dev/null && umount -l "$work/root/$m" || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

start=$(date +%s)
log "debootstrap $suite ($packages) from $mirror"
if ! debootstrap --variant=minbase --include="$packages" "${keyring_args[@]}" \
	"$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
	tail -n 30 "$work/debootstrap.log" >&2
	[[ -f $work/root/debootstrap/debootstrap.log ]] && tail -n 30 "$work/root/debootstrap/debootstrap.log" >&2
	die "debootstrap failed"
fi

# Updates: bookworm-updates on the same mirror and bookworm-security from
# the machine's sources, when they name one. Best effort: the image is
# usable without them, and a warning says so.
root=$work/root
security=$(suite="$suite-security" mirror_from_sources | head -n1 || true)
{
	echo "deb $mirror $suite main"
	echo "deb $mirror $suite-updates main"
	[[ -n $security ]] && echo "deb $security $suite-security main"
} >"$root/etc/apt/sources.list"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
if [[ ${BASE_UPDATES:-1} == 0 ]]; then
	log "BASE_UPDATES=0: not applying updates"
elif chroot "$root" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq' >"$work/upgrade.log" 2>&1; then
	log "applied $suite-updates${security:+ and $suite-security}"
else
	tail -n 5 "$work/upgrade.log" >&2
	log "warning: could not apply updates; the image has the $suite release packages"
fi

# Trim what an image does not need: apt lists and caches, man pages, logs.
chroot "$root" apt-get clean >/dev/null 2>&1 || true
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
	"$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/* \
	"$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/doc/*/changelog* \
	"$root"/debootstrap "$root"/tmp/* "$root"/var/tmp/*
# No service may start during later `apt-get install` steps in image builds.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
# The machine's hostname and resolver are not the image's.
: >"$root/etc/hostname"
rm -f "$root/etc/resolv.conf"

log "docker import -> $tag"
tar --numeric-owner -C "$root" -c . | docker import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'ENV PYTHON=/usr/bin/python3' \
	--change 'CMD ["/bin/bash"]' \
	--change "LABEL org.opencontainers.image.title=spillway-base org.opencontainers.image.description=Debian_${suite}_minbase+python3+ca-certificates+redis-server" \
	- "$tag" >/dev/null
end=$(date +%s)

/usr/bin/env docker run --rm "$tag" python3 -c 'import json, urllib.request, zipfile, xmlrpc.client, ssl' \
	|| die "$tag: python3 lacks a module the project needs"
size=$(docker image inspect --format '{{.Size}}' "$tag")
log "made $tag in $((end - start))s, $((size / 1000000)) MB"
