#!/usr/bin/env bash
# Peak memory of `edgeseg predict` on a clinical-size CT (512×512×1000 by
# default, int16 NIfTI, 0.8×0.8×1.0 mm) with CT models made by
# bench/make_large_ct.py (numpy/onnx, not edgeseg): point-wise or
# nearest-centre networks, so the network itself costs nothing and the figure
# is edgeseg's own buffers. Peak RSS from GNU time.
#   bench/memory.sh [WORKDIR]            the cases below
#   CASES="own-3c-5f" SHAPE="512 512 200" bench/memory.sh  some of them
# Cases: own-2c-f0      model at the input's spacing, 2 classes, fold 0, no mirroring
#        res15-2c-f0    model at 1.5 mm (resampling both ways), 2 classes, fold 0
#        own-3c-f0      model at the input's spacing, 3 classes, fold 0, no mirroring
#        own-3c-5f      the same with 5 folds
#        own-3c-5f-tta  model at the input's spacing, 3 classes, 5 folds, mirroring
#        res15-3c-5f-tta  1.5 mm, 3 classes, 5 folds, mirroring
#        own-3c-f0-tta  one fold with mirroring (what mirroring adds to own-3c-f0)
#        own-2c-f0-probs / res15-2c-f0-probs  the 2-class cases with --save-probabilities
#        petct-2c       a whole-body PET/CT in DICOM (tests/fixtures/phantom.py --size
#                       wholebody-1000: CT 512×512×1000, PET 200×200×500) through
#                       `edgeseg process` with the 2-channel demo model (both folds,
#                       mirroring); SHAPE does not apply
# SHAPE="512 512 300" changes the CT's size (x y z).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$root/target/bench-memory}
shape=${SHAPE:-512 512 1000}
cases=${CASES:-own-2c-f0 res15-2c-f0 own-3c-5f-tta}
"$root/scripts/deps.sh"
"$root/scripts/venv.sh"
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)}
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$root/target}/release/edgeseg
for c in $cases; do
    if [ "$c" = petct-2c ]; then
        d=$work/petct-2c
        if [ ! -f "$d/study/truth/truth.json" ]; then
            "$root/.venv/bin/python" "$root/tests/fixtures/phantom.py" --out "$d/study" --size wholebody-1000 -q
        fi
        rm -rf "$d/out"
        /usr/bin/time -v "$bin" process "$d/study/dicom" --model "$root/models/demo-petct" --out "$d/out" \
            --threads "$(nproc)" 2>"$d/time.log" >"$d/stdout.log"
        rss=$(awk '/Maximum resident/ {print $6}' "$d/time.log")
        wall=$(awk '/Elapsed \(wall/ {print $8}' "$d/time.log")
        printf '%s (CT 512x512x1000, PET 200x200x500): peak RSS %.2f GiB, wall %s\n' "$c" \
            "$(echo "$rss / 1048576" | bc -l)" "$wall"
        continue
    fi
    case $c in
        own-*) sp=0.8 zsp=1.0 ;;
        res15-*) sp=1.5 zsp=1.5 ;;
        *) echo "unknown case $c" >&2; exit 2 ;;
    esac
    case $c in *-2c-*) classes=2 ;; *) classes=3 ;; esac
    case $c in
        *-5f-tta) folds=5 flags=(-f 0 1 2 3 4) ;;
        *-5f) folds=5 flags=(-f 0 1 2 3 4 --disable-tta) ;;
        *-f0-tta) folds=2 flags=(-f 0) ;;
        *-f0-probs) folds=2 flags=(-f 0 --disable-tta --save-probabilities) ;;
        *) folds=2 flags=(-f 0 --disable-tta) ;;
    esac
    # The probabilities cases share their model and input with the plain ones.
    d=$work/${c%-probs}-${shape// /x}
    if [ ! -f "$d/input/CASE_0000.nii.gz" ]; then
        # shellcheck disable=SC2086
        "$root/.venv/bin/python" "$root/bench/make_large_ct.py" --out "$d" --shape $shape \
            --model-spacing "$sp" "$sp" "$zsp" --classes "$classes" --folds "$folds" >/dev/null
    fi
    rm -rf "$d/out"
    /usr/bin/time -v "$bin" predict -i "$d/input" -o "$d/out" -m "$d/model" "${flags[@]}" --threads "$(nproc)" \
        2>"$d/time.log" >"$d/stdout.log"
    rss=$(awk '/Maximum resident/ {print $6}' "$d/time.log")
    wall=$(awk '/Elapsed \(wall/ {print $8}' "$d/time.log")
    vox=$(echo "$shape" | awk '{print $1*$2*$3}')
    printf '%s (%s): peak RSS %.2f GiB = %.1f bytes a voxel, wall %s; %s\n' "$c" "$shape" \
        "$(echo "$rss / 1048576" | bc -l)" "$(echo "$rss * 1024 / $vox" | bc -l)" "$wall" "$(tail -1 "$d/stdout.log")"
done
