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
# PROVIDER=openvino (petct-2c only): `process --provider openvino` with the
#   onnxruntime-openvino library bench/e2e.sh makes (venv-openvino-<hash> in
#   ${EDGESEG_CACHE:-~/.cache/edgeseg}); BF16=1 adds --bf16.
# EDGESEG_BIN=/path/to/edgeseg uses that binary and skips the cargo build (a
#   release build made elsewhere, e.g. another checkout's target/release/edgeseg).
# SKIP_SETUP=1 skips scripts/deps.sh and scripts/venv.sh (the Debian packages
#   and the .venv are already there; the venv script would rebuild a shared venv).
# The own-spacing cases' labels are checked against bench/memory_labels.py (the
#   label map the point-wise models must give, from the image with numpy).
# REF_BIN=/path/to/older/edgeseg also runs that binary on every predict case
#   (logs and output in WORK/CASE/ref), prints its peak RSS as "before" and
#   compares the two label maps (and probabilities) voxel by voxel with
#   numpy/nibabel.
# RSS_SAMPLE=1 also samples the process's VmRSS every 0.5 s into WORK/CASE/rss.tsv
#   (seconds since start, VmRSS and VmHWM, the peak so far, in KiB), to see which
#   stage makes the peak, or the peak so far of a run stopped before its end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$root/target/bench-memory}
shape=${SHAPE:-512 512 1000}
cases=${CASES:-own-2c-f0 res15-2c-f0 own-3c-5f-tta}
if [ "${SKIP_SETUP:-0}" != 1 ]; then
    "$root/scripts/deps.sh"
    "$root/scripts/venv.sh"
fi
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)}
if [ -n "${EDGESEG_BIN:-}" ]; then
    bin=$EDGESEG_BIN
else
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    bin=${CARGO_TARGET_DIR:-$root/target}/release/edgeseg
fi
echo "edgeseg: $("$bin" --version); load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
# measure LOGDIR COMMAND...: runs COMMAND under GNU time (LOGDIR/time.log, stdout in
# LOGDIR/stdout.log) and, with RSS_SAMPLE=1, samples its VmRSS into LOGDIR/rss.tsv.
measure() {
    local d=$1
    shift
    if [ "${RSS_SAMPLE:-0}" = 1 ]; then
        /usr/bin/time -v "$@" 2>"$d/time.log" >"$d/stdout.log" &
        local tpid=$! pid="" t0
        t0=$(date +%s.%N)
        : >"$d/rss.tsv"
        while kill -0 "$tpid" 2>/dev/null; do
            [ -n "$pid" ] || pid=$(pgrep -P "$tpid" | head -1 || true)
            if [ -n "$pid" ]; then
                awk -v t="$(echo "$(date +%s.%N) - $t0" | bc -l)" '/^VmRSS/ {r = $2} /^VmHWM/ {h = $2}
                    END {if (r != "") printf "%.1f\t%s\t%s\n", t, r, h}' \
                    "/proc/$pid/status" >>"$d/rss.tsv" 2>/dev/null || true
            fi
            sleep 0.5
        done
        wait "$tpid"
    else
        /usr/bin/time -v "$@" 2>"$d/time.log" >"$d/stdout.log"
    fi
}
for c in $cases; do
    if [ "$c" = petct-2c ]; then
        d=$work/petct-2c
        if [ ! -f "$d/study/truth/truth.json" ]; then
            "$root/.venv/bin/python" "$root/tests/fixtures/phantom.py" --out "$d/study" --size wholebody-1000 -q
        fi
        rm -rf "$d/out"
        lib=$ORT_DYLIB_PATH
        if [ "${PROVIDER:-cpu}" = openvino ]; then
            ovenv="${EDGESEG_CACHE:-$HOME/.cache/edgeseg}/venv-openvino-$(sha256sum "$root/requirements/openvino.txt" | cut -c1-16)"
            [ -f "$ovenv/.complete" ] || { echo "memory: no $ovenv (run PROVIDER=openvino bench/e2e.sh once)" >&2; exit 2; }
            lib=$(ls "$ovenv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)
        fi
        measure "$d" env ORT_DYLIB_PATH="$lib" "$bin" process "$d/study/dicom" --model "$root/models/demo-petct" \
            --out "$d/out" --threads "$(nproc)" --provider "${PROVIDER:-cpu}" ${BF16:+--bf16}
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
    # The probabilities cases share their model and input with the plain ones;
    # every case has its own logs and output in l.
    d=$work/${c%-probs}-${shape// /x}
    l=$work/$c-${shape// /x}
    mkdir -p "$l"
    if [ ! -f "$d/input/CASE_0000.nii.gz" ]; then
        # The image depends on the shape alone: made once in WORK/input-SHAPE and
        # linked into every case of that shape.
        img=$work/input-${shape// /x}
        only=()
        [ -f "$img/CASE_0000.nii.gz" ] && only=(--model-only)
        # shellcheck disable=SC2086
        "$root/.venv/bin/python" "$root/bench/make_large_ct.py" --out "$d" --shape $shape \
            --model-spacing "$sp" "$sp" "$zsp" --classes "$classes" --folds "$folds" "${only[@]}" >/dev/null
        mkdir -p "$img" "$d/input"
        [ -f "$img/CASE_0000.nii.gz" ] || ln "$d/input/CASE_0000.nii.gz" "$img/CASE_0000.nii.gz"
        [ -f "$d/input/CASE_0000.nii.gz" ] || ln "$img/CASE_0000.nii.gz" "$d/input/CASE_0000.nii.gz"
    fi
    rm -rf "$l/out"
    measure "$l" "$bin" predict -i "$d/input" -o "$l/out" -m "$d/model" "${flags[@]}" --threads "$(nproc)"
    rss=$(awk '/Maximum resident/ {print $6}' "$l/time.log")
    wall=$(awk '/Elapsed \(wall/ {print $8}' "$l/time.log")
    vox=$(echo "$shape" | awk '{print $1*$2*$3}')
    printf '%s (%s): peak RSS %.2f GiB = %.1f bytes a voxel, wall %s; %s\n' "$c" "$shape" \
        "$(echo "$rss / 1048576" | bc -l)" "$(echo "$rss * 1024 / $vox" | bc -l)" "$wall" "$(tail -1 "$l/stdout.log")"
    if [[ $c == own-* ]]; then
        printf '  '
        "$root/.venv/bin/python" "$root/bench/memory_labels.py" "$d/input/CASE_0000.nii.gz" "$l/out/CASE.nii.gz" \
            "$classes" || true
    fi
    if [ -n "${REF_BIN:-}" ]; then
        rm -rf "$l/ref"
        mkdir -p "$l/ref"
        measure "$l/ref" "$REF_BIN" predict -i "$d/input" -o "$l/ref/out" -m "$d/model" "${flags[@]}" \
            --threads "$(nproc)"
        rss=$(awk '/Maximum resident/ {print $6}' "$l/ref/time.log")
        wall=$(awk '/Elapsed \(wall/ {print $8}' "$l/ref/time.log")
        printf '  before (%s): peak RSS %.2f GiB, wall %s; ' "$("$REF_BIN" --version)" \
            "$(echo "$rss / 1048576" | bc -l)" "$wall"
        "$root/.venv/bin/python" - "$l/out" "$l/ref/out" <<'PY'
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

new, ref = Path(sys.argv[1]), Path(sys.argv[2])
a = np.asarray(nib.load(str(new / "CASE.nii.gz")).dataobj)
b = np.asarray(nib.load(str(ref / "CASE.nii.gz")).dataobj)
same = a.shape == b.shape and bool(np.array_equal(a, b))
what = "labels identical" if same else f"labels DIFFER in {int(np.count_nonzero(a != b)) if a.shape == b.shape else 'shape'} voxels"
if (new / "CASE.npz").exists():
    pa, pb = np.load(new / "CASE.npz")["probabilities"], np.load(ref / "CASE.npz")["probabilities"]
    what += ", probabilities " + ("identical" if pa.shape == pb.shape and np.array_equal(pa, pb) else
                                  f"differ (max |diff| {np.abs(pa - pb).max() if pa.shape == pb.shape else 'shape'})")
print(what)
PY
    fi
done
