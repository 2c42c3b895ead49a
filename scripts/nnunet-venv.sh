#!/usr/bin/env bash
# The nnU-Net v2 / PyTorch / ONNX Runtime venv (requirements/nnunet.txt), kept OUTSIDE the
# repository because it is heavy (~6 GB with torch's CUDA wheels):
#
#   ${EDGESEG_CACHE:-$HOME/.cache/edgeseg}/venv-nnunet-<first 16 hex of sha256(requirements/nnunet.txt)>
#
# Built only when missing, in a temporary folder beside it that is renamed into place once
# everything installed and imports (so a half-built venv is never seen under the final name);
# concurrent callers wait on a lock. Editing requirements/nnunet.txt gives a new path.
#
# Usage:
#   scripts/nnunet-venv.sh            prints the venv path (the only thing on stdout)
#   scripts/nnunet-venv.sh --ort-lib  prints the absolute path of the venv's libonnxruntime.so.*
#                                     (onnxruntime's CPU wheel, site-packages/onnxruntime/capi/)
# Progress and pip's output go to stderr. EDGESEG_PYTHON picks the base interpreter (default python3).
set -euo pipefail

mode=venv
case "${1:-}" in
    "") ;;
    --ort-lib) mode=ort ;;
    -h | --help)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 0
        ;;
    *)
        echo "nnunet-venv: unknown argument ${1} (use --ort-lib or nothing)" >&2
        exit 1
        ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/requirements/nnunet.txt"
hash=$(sha256sum "$req" | cut -c1-16)
cache="${EDGESEG_CACHE:-$HOME/.cache/edgeseg}"
venv="$cache/venv-nnunet-$hash"
py="${EDGESEG_PYTHON:-python3}"

complete() { [ -x "$venv/bin/python" ] && [ -f "$venv/.edgeseg-complete" ]; }

if ! complete; then
    mkdir -p "$cache"
    exec 9>"$cache/.venv-nnunet-$hash.lock"
    flock 9
    if ! complete; then
        # Leftovers of an interrupted build of this same hash (we hold the lock).
        rm -rf "$cache/.venv-nnunet-$hash.tmp."* "$venv"
        tmp=$(mktemp -d "$cache/.venv-nnunet-$hash.tmp.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        echo "nnunet-venv: building $venv (requirements hash $hash; ~6 GB, several minutes)" >&2
        "$py" -m venv --prompt "venv-nnunet-$hash" "$tmp"
        "$tmp/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
        "$tmp/bin/python" -m pip install -q --disable-pip-version-check --no-compile -r "$req" >&2
        # Make the venv valid under its final name: script shebangs and activate files name
        # the folder they were built in; byte code records source paths.
        grep -rlI --null -F "$tmp" "$tmp/bin" "$tmp/pyvenv.cfg" 2>/dev/null |
            xargs -0 -r sed -i "s#$tmp#$venv#g"
        "$tmp/bin/python" -m compileall -q -j 0 -s "$tmp" -p "$venv" "$tmp/lib" >/dev/null 2>&1 || true
        "$tmp/bin/python" -c 'import torch, onnx, onnxruntime, nnunetv2, SimpleITK, nibabel' >&2
        sha256sum "$req" | cut -c1-64 >"$tmp/.edgeseg-complete"
        mv -T "$tmp" "$venv"
        trap - EXIT
        echo "nnunet-venv: ready" >&2
    fi
    flock -u 9
fi

case "$mode" in
    venv) echo "$venv" ;;
    ort)
        lib=$(find "$venv"/lib/python*/site-packages/onnxruntime/capi -maxdepth 1 \
            -name 'libonnxruntime.so*' ! -name '*providers*' 2>/dev/null | sort | tail -n 1)
        if [ -z "$lib" ]; then
            echo "nnunet-venv: no libonnxruntime.so under $venv/lib/python*/site-packages/onnxruntime/capi" >&2
            exit 1
        fi
        echo "$lib"
        ;;
esac
