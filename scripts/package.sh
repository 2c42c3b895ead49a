#!/usr/bin/env bash
# Builds the Debian package: the release binary, the ONNX Runtime library from
# the onnxruntime wheel, then `cargo deb`. Prints the path of the .deb.
#
#   scripts/package.sh            # x86_64: target/debian/edgeseg_<version>_amd64.deb
#   scripts/package.sh --jetson   # arm64 variant (on a JetPack box or with a cross linker):
#                                 # cargo deb --variant jetson --target aarch64-unknown-linux-gnu
#
# cargo-deb is installed once (cargo install --locked) into a cache outside the
# clone: ${EDGESEG_TOOLS:-~/.cache/edgeseg/tools}.
#
# The ONNX Runtime library shipped as /usr/lib/edgeseg/libonnxruntime.so comes
# from, in order: $EDGESEG_ONNXRUNTIME (a libonnxruntime.so* file), or the
# onnxruntime (CPU) / onnxruntime-gpu wheel installed in .venv (scripts/venv.sh).
# For Jetson, set EDGESEG_ONNXRUNTIME to the library of an onnxruntime-gpu
# build for JetPack (docs/install.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

variant=()
target=()
features=()
if [ "${1:-}" = "--jetson" ]; then
    variant=(--variant jetson)
    target=(--target aarch64-unknown-linux-gnu)
    features=(--features tensorrt)   # as [package.metadata.deb.variants.jetson]
fi

tools=${EDGESEG_TOOLS:-$HOME/.cache/edgeseg/tools}
export PATH="$tools/bin:$PATH"
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "package: installing cargo-deb into $tools" >&2
    cargo install --locked --root "$tools" cargo-deb >&2
fi

# The ONNX Runtime library and its licence, staged where Cargo.toml's assets
# expect them: target/package/ of this tree (cargo-deb maps only
# target/release/ to CARGO_TARGET_DIR; other asset paths are tree-relative).
stage="$root/target/package"
mkdir -p "$stage"
lib=${EDGESEG_ONNXRUNTIME:-}
if [ -z "$lib" ]; then
    capi=$(ls -d "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi 2>/dev/null | head -1 || true)
    [ -n "$capi" ] && lib=$(ls "$capi"/libonnxruntime.so* 2>/dev/null | head -1 || true)
fi
# The wheel keeps LICENSE and ThirdPartyNotices.txt in the package folder,
# one level above capi/ (also where EDGESEG_ONNXRUNTIME points into a wheel).
pkgdir=$(dirname "$(dirname "${lib:-/nonexistent/x}")")
lic=$(ls "$pkgdir"/LICENSE* 2>/dev/null | head -1 || true)
notices=$(ls "$pkgdir"/ThirdPartyNotices* 2>/dev/null | head -1 || true)
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
    echo "package: no libonnxruntime.so: run scripts/venv.sh or set EDGESEG_ONNXRUNTIME" >&2
    exit 1
fi
install -m 0644 "$lib" "$stage/libonnxruntime.so"
if [ -n "$lic" ]; then
    install -m 0644 "$lic" "$stage/onnxruntime-LICENSE"
else
    printf 'ONNX Runtime (%s), MIT License, Copyright (c) Microsoft Corporation.\n' "$(basename "$lib")" \
        > "$stage/onnxruntime-LICENSE"
fi
if [ -n "$notices" ]; then
    install -m 0644 "$notices" "$stage/onnxruntime-ThirdPartyNotices.txt"
else
    printf 'See https://github.com/microsoft/onnxruntime/blob/main/ThirdPartyNotices.txt\n' \
        > "$stage/onnxruntime-ThirdPartyNotices.txt"
fi
echo "package: ONNX Runtime library $(basename "$lib") from $(dirname "$lib")" >&2

cargo build --release --locked ${target[@]+"${target[@]}"} ${features[@]+"${features[@]}"} --bin edgeseg >&2
# cargo deb prints the path of the package it wrote.
deb=$(cargo deb --no-build ${variant[@]+"${variant[@]}"} ${target[@]+"${target[@]}"} | tail -1)
[ -f "$deb" ] || { echo "package: cargo deb wrote no .deb" >&2; exit 1; }
echo "$deb"
