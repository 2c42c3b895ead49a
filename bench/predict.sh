#!/usr/bin/env bash
# Inference benchmark: `edgeseg predict` (ONNX Runtime CPU) against
# `nnUNetv2_predict -device cpu` on the same model (the parity models of
# scripts/test-nnunet-parity.sh, trained by nnunetv2 itself), the same inputs,
# folds (0 1), TTA on, and the same thread count, in one run: wall time and
# peak RSS (GNU time) of each whole command.
#   bench/predict.sh [THREADS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
threads=${1:-$(nproc)}
scripts/venv.sh
nnvenv=$(scripts/nnunet-venv.sh)
key=$(cat requirements/nnunet.txt tools/make_parity_models.py tools/nnunet_export.py tools/_nnunet_common.py | sha256sum | cut -c1-16)
models="${EDGESEG_PARITY:-${EDGESEG_CACHE:-$HOME/.cache/edgeseg}/parity-$key}"
[ -f "$models/summary.json" ] || scripts/test-nnunet-parity.sh
cargo build --release --locked -q
lib=$(scripts/nnunet-venv.sh --ort-lib)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| model | cases | voxels per case | nnUNetv2_predict s | edgeseg s | speed-up | nnU-Net peak RSS MiB | edgeseg peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for name in parity-petct parity-ct; do
    read -r dataset inputs pkg < <(.venv/bin/python -c "import json,sys; m=json.load(open('$models/summary.json'))['models']['$name']; print(m['dataset'], m['test_inputs'], m['package'])")
    env $(.venv/bin/python -c "import json; print(' '.join(f'{k}={v}' for k,v in json.load(open('$models/summary.json'))['env'].items()))") \
        OMP_NUM_THREADS="$threads" /usr/bin/time -f "%e %M" -o "$work/nn.time" \
        "$nnvenv/bin/nnUNetv2_predict" -i "$inputs" -o "$work/nn-$name" -d "$dataset" -c 3d_fullres -f 0 1 \
        -device cpu -npp 1 -nps 1 > /dev/null 2>&1
    /usr/bin/time -f "%e %M" -o "$work/es.time" target/release/edgeseg predict -i "$inputs" -o "$work/es-$name" \
        -m "$pkg" -f 0 1 --threads "$threads" --onnxruntime "$lib" > /dev/null
    .venv/bin/python - "$name" "$inputs" "$work/nn.time" "$work/es.time" <<'PY'
import sys, glob
import nibabel as nib
name, inputs, nn, es = sys.argv[1:]
files = sorted(glob.glob(inputs + "/*_0000.nii.gz"))
vox = [nib.load(f).shape for f in files]
ns, nk = open(nn).read().split(); es_, ek = open(es).read().split()
ns, es_ = float(ns), float(es_)
print(f"| {name} | {len(files)} | {', '.join('x'.join(map(str, v)) for v in vox)} | {ns:.1f} | {es_:.1f} | {ns/es_:.1f}x | {int(nk)/1024:.0f} | {int(ek)/1024:.0f} |")
PY
done
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%F); threads $threads; nnunetv2 2.8.1 (torch CPU), edgeseg $(target/release/edgeseg --version | cut -d' ' -f2-) with ONNX Runtime $(basename "$lib")"
