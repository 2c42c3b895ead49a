#!/usr/bin/env bash
# Peak memory of `edgeseg predict` on a clinical-size CT (512×512×1000, int16
# NIfTI, 0.8×0.8×1.0 mm): a point-wise CT model at the input's own spacing (the
# heaviest case: the working resolution is the input's) and at 1.5 mm (the
# resampling path). Peak RSS from /usr/bin/time -v; one fold, no mirroring
# (memory does not depend on either: folds are summed one after another).
#   bench/memory.sh [WORKDIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$root/target/bench-memory}
"$root/scripts/deps.sh"
"$root/scripts/venv.sh"
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)}
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$root/target/release/edgeseg
for sp in 0.8 1.5; do
    d=$work/model-$sp
    if [ ! -f "$d/input/CASE_0000.nii.gz" ]; then
        zsp=$([ "$sp" = 0.8 ] && echo 1.0 || echo "$sp")
        "$root/.venv/bin/python" "$root/bench/make_large_ct.py" --out "$d" --model-spacing "$sp" "$sp" "$zsp" >/dev/null
    fi
    rm -rf "$d/out"
    /usr/bin/time -v "$bin" predict -i "$d/input" -o "$d/out" -m "$d/model" -f 0 --disable-tta --threads "$(nproc)" \
        2>"$d/time.log" >"$d/stdout.log"
    rss=$(awk '/Maximum resident/ {print $6}' "$d/time.log")
    wall=$(awk '/Elapsed \(wall/ {print $8}' "$d/time.log")
    printf 'model spacing %s mm: peak RSS %.2f GiB (input f32 volume 1.00 GiB), wall %s; %s\n' \
        "$sp" "$(echo "$rss / 1048576" | bc -l)" "$wall" "$(tail -1 "$d/stdout.log")"
done
