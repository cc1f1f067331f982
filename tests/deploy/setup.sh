#!/usr/bin/env bash
# Prepares podman on this machine for the deploy tests and builds the ltxfs
# image from this source tree. Idempotent: what exists is kept.
#
#   tests/deploy/setup.sh [IMAGE]
#
# IMAGE defaults to localhost/ltxfs:src-HASH, HASH from the source tree's
# path, so that two checkouts on one machine do not overwrite each other's
# image.
#
# Prints the image's name as its last line of standard output; the rest
# goes to standard error.
#
# Rules:
#  1. podman, runc and mmdebstrap must be installed (scripts/install-deps);
#     a missing one is an error naming it.
#  2. /etc/containers/containers.conf: runc as the runtime (crun fails on
#     this kind of machine, cgroups v1/hybrid), default ulimits within the
#     hard limits (nofile = `ulimit -Hn`, nproc 32768), netavark as the
#     network backend. The file is written only when absent or when it is
#     the one this script wrote (its first line is MARK); someone else's is
#     left as it is, with a line saying so.
#  3. The base image localhost/debian:bookworm is made once, by mmdebstrap
#     (minbase) from the Debian mirror named in /etc/apt/sources.list.d or
#     /etc/apt/sources.list, then `podman import`; an existing one is kept.
#  4. The ltxfs image is built with `podman build --format docker` (keeps
#     the HEALTHCHECK) and BASE=localhost/debian:bookworm; podman's layer
#     cache makes a second build take seconds.
#  5. One run at a time on a machine (flock on /var/tmp/ltxfs-deploy.lock).
set -euo pipefail

MARK='# written by ltxfs tests/deploy/setup.sh'
BASE_IMAGE=localhost/debian:bookworm
SRC=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${1:-localhost/ltxfs:src-$(printf %s "$SRC" | sha1sum | cut -c1-8)}
CONF=/etc/containers/containers.conf

say() { echo "setup.sh: $*" >&2; }

need_tools() {
	local t missing=()
	for t in podman runc mmdebstrap; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	if [ "${#missing[@]}" -ne 0 ]; then
		say "missing ${missing[*]} (run scripts/install-deps)"
		exit 1
	fi
}

write_conf() {
	local hard
	hard=$(ulimit -Hn)
	if [ -e "$CONF" ] && [ "$(head -n 1 "$CONF")" != "$MARK" ]; then
		say "keeping $CONF (not ours); it needs runtime = \"runc\"" \
		    "and default_ulimits within ulimit -Hn ($hard)"
		return 0
	fi
	mkdir -p "$(dirname "$CONF")"
	cat >"$CONF.tmp" <<CONF_EOF
$MARK
[containers]
default_ulimits = ["nofile=$hard:$hard", "nproc=32768:32768"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
CONF_EOF
	if [ -e "$CONF" ] && cmp -s "$CONF.tmp" "$CONF"; then
		rm -f "$CONF.tmp"
	else
		mv "$CONF.tmp" "$CONF"
		say "wrote $CONF"
	fi
}

# The mirror's base URL for a suite, from deb822 .sources or sources.list.
mirror_for() {
	local suite=$1 f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		awk -v s="$suite" '
			/^URIs:/ { u = $2 }
			/^Suites:/ {
				for (i = 2; i <= NF; i++)
					if ($i == s) { print u; exit }
			}
			/^$/ { u = "" }' "$f"
	done | head -n 1 | grep . && return 0
	awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }' \
	    /etc/apt/sources.list 2>/dev/null | grep . && return 0
	return 1
}

make_base() {
	local main sec tmp
	if podman image exists "$BASE_IMAGE"; then
		return 0
	fi
	if ! main=$(mirror_for bookworm); then
		say "no bookworm mirror in apt's sources"
		exit 1
	fi
	sec=$(mirror_for bookworm-security) || sec=
	tmp=$(mktemp -d /var/tmp/ltxfs-base.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	say "making $BASE_IMAGE from $main (mmdebstrap, about a minute)"
	local lists=("deb $main bookworm main" "deb $main bookworm-updates main")
	[ -n "$sec" ] && lists+=("deb $sec bookworm-security main")
	mmdebstrap --quiet --variant=minbase bookworm "$tmp/rootfs.tar" \
	    "${lists[@]}" >&2
	podman import "$tmp/rootfs.tar" "$BASE_IMAGE" >/dev/null
	rm -rf "$tmp"
	trap - EXIT
}

build_image() {
	say "building $IMAGE from $SRC"
	podman build --quiet --format docker --build-arg BASE="$BASE_IMAGE" \
	    -f "$SRC/deploy/Dockerfile" -t "$IMAGE" "$SRC" >/dev/null
}

need_tools
exec 9>/var/tmp/ltxfs-deploy.lock
flock 9
write_conf
make_base
build_image
echo "$IMAGE"
