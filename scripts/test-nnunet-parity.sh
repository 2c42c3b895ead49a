#!/usr/bin/env bash
# The slow peer check of the inference issue: edgeseg predict against
# nnUNetv2_predict (nnunetv2 2.8.1 from PyPI) on nnU-Net results folders that
# nnunetv2 itself planned, preprocessed and trained (tools/make_parity_models.py).
#   scripts/test-nnunet-parity.sh
#   EDGESEG_PROVIDER=openvino EDGESEG_ORT_LIB=.../libonnxruntime.so.1.24.1 scripts/test-nnunet-parity.sh
#       edgeseg with another provider and library (requirements/openvino.txt's wheel)
#   EDGESEG_PROVIDER=openvino EDGESEG_BF16=1 EDGESEG_ORT_LIB=... scripts/test-nnunet-parity.sh
#       the same with --bf16 (OpenVINO in bfloat16 on a CPU with AMX / AVX-512 BF16)
#   (pytest -s prints the Dice per class and case)
# The heavy venv (torch + nnunetv2) and the parity models are cached outside
# the clone, keyed by the hash of what makes them, and built when missing
# (first run: ~5 min venv + ~8 min models on 2 cores; later runs: ~3 min).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/venv.sh
nnvenv=$(scripts/nnunet-venv.sh)
key=$(cat requirements/nnunet.txt tools/make_parity_models.py tools/nnunet_export.py tools/_nnunet_common.py | sha256sum | cut -c1-16)
cache="${EDGESEG_CACHE:-$HOME/.cache/edgeseg}"
models="$cache/parity-$key"
if [ ! -f "$models/summary.json" ]; then
    echo "parity: building nnU-Net parity models in $models" >&2
    rm -rf "$models.tmp"
    "$nnvenv/bin/python" tools/make_parity_models.py --out "$models.tmp" >&2
    # The summary names absolute paths: rewrite them for the final folder.
    sed -i "s#$models.tmp#$models#g" "$models.tmp/summary.json"
    rm -rf "$models" && mv "$models.tmp" "$models"
fi
cargo build --locked -q
EDGESEG_BIN="$root/target/debug/edgeseg" EDGESEG_PARITY="$models" EDGESEG_NNUNET_VENV="$nnvenv" \
    .venv/bin/python -m pytest tests/peers_nnunet -q -p no:cacheprovider
