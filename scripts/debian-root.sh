#!/usr/bin/env bash
# Prints the path of a tarball of a minimal Debian bookworm root (debootstrap
# --variant=minbase, plus systemd, dbus and procps so the package's dependencies and
# maintainer scripts have what they use), built once and cached outside the
# clone, keyed by this script's own hash:
#   ${EDGESEG_CACHE:-~/.cache/edgeseg}/debootstrap-bookworm-<hash>.tar
# The mirror is the one this machine's apt uses (/etc/apt/sources.list*),
# else deb.debian.org. Needs root (debootstrap) and the network once.
set -euo pipefail
self=$(readlink -f "$0")
cache=${EDGESEG_CACHE:-$HOME/.cache/edgeseg}
hash=$(sha256sum "$self" | cut -c1-12)
tar="$cache/debootstrap-bookworm-$hash.tar"
if [ -s "$tar" ]; then
    echo "$tar"
    exit 0
fi
mkdir -p "$cache"
mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "debian-root: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
work=$(mktemp -d "$cache/root.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "debian-root: debootstrap bookworm from $mirror (once; cached as $tar)" >&2
debootstrap --variant=minbase --include=systemd,dbus,init-system-helpers,procps bookworm "$work/root" "$mirror" >&2
rm -rf "$work/root/var/cache/apt/archives/"*.deb
tar -C "$work/root" -cf "$tar.part" .
mv "$tar.part" "$tar"
echo "$tar"
