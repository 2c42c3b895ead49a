#!/usr/bin/env bash
# Builds the edgeseg workstation image: the .deb (scripts/package.sh), then
# `mkosi build` here. Needs root and loop devices (mkosi 14 partitions a disk
# image). Output: image-recipes/mkosi/edgeseg-workstation.raw
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
deb=$("$root/scripts/package.sh")
install -D -m 0644 "$deb" "$here/mkosi.extra/var/cache/edgeseg/edgeseg.deb"
trap 'rm -rf "$here/mkosi.extra/var"' EXIT
cd "$here"
mkosi --force build "$@"
