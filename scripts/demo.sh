#!/usr/bin/env bash
# The main job on generated data, set-up included, on a fresh Debian machine:
#   scripts/demo.sh [OUT]        (default OUT: demo-out/)
# Generates a synthetic whole-body DOTATATE PET/CT study (tests/fixtures/phantom.py,
# pydicom), lists it with `edgeseg inspect`, converts it with `edgeseg convert`
# and, with the bundled demo model, segments it with `edgeseg process`.
# The data are synthetic and the outputs are not for clinical use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=$(realpath -m "${1:-demo-out}")
scripts/deps.sh
scripts/venv.sh
cargo build --release --locked -q
bin="$root/target/release/edgeseg"

study="$out/study"
if [ ! -f "$study/truth/truth.json" ]; then
    echo "== generating a synthetic PET/CT study (small, Siemens-style, Cu-64) in $study"
    .venv/bin/python tests/fixtures/phantom.py --out "$study" --size small --vendor siemens --nuclide cu64 -q
fi
echo "== edgeseg inspect $study/dicom"
"$bin" inspect "$study/dicom"
echo
echo "== edgeseg convert $study/dicom --out $out/nifti"
"$bin" convert "$study/dicom" --out "$out/nifti"
echo
echo "Outputs: $out/nifti/<SeriesInstanceUID>.nii.gz (PET in SUVbw, CT in HU, RAS) and .json (geometry, SUV method)."
model="$root/models/demo-petct"
if [ -f "$model/model.toml" ]; then
    lib=$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* | head -1)
    echo
    echo "== edgeseg process $study/dicom --model models/demo-petct --out $out/results"
    echo "   (demo model trained on synthetic phantoms: not for clinical use)"
    "$bin" process "$study/dicom" --model "$model" --out "$out/results" --onnxruntime "$lib"
    echo
    uid=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["study_instance_uid"])' "$study/truth/truth.json")
    echo "== study outputs in $out/results/$uid/ (docs/report.md):"
    ls -l "$out/results/$uid/"
    echo "(labels.nii.gz classes, lesions.nii.gz lesion numbers, suv.nii.gz PET in SUVbw, report.json lesion table,"
    echo " total tumour volume, lowest lesion SUVmean, liver reference and provenance, lesions.csv the lesion table,"
    echo " mip.png the coronal MIP with each lesion outlined and numbered)"
fi
