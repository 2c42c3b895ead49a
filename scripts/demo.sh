#!/usr/bin/env bash
# The main job on generated data, set-up included, on a fresh Debian machine:
#   scripts/demo.sh [OUT]        (default OUT: demo-out/)
# Generates a synthetic whole-body DOTATATE PET/CT study (tests/fixtures/phantom.py,
# pydicom), lists it with `edgeseg inspect`, converts it with `edgeseg convert`
# and, with the bundled demo model, segments it with `edgeseg process`; then runs
# it the way a scanner-side box does: `edgeseg daemon` watching a temporary
# export folder, the study exported into it file by file, its outputs listed
# and the metrics URL printed; last, `edgeseg evaluate` prints the study's
# figures against the generator's truth (docs/evaluate.md).
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

    # The main job as it runs on a box: the daemon on an export folder.
    box="$out/box"
    rm -rf "$box"
    mkdir -p "$box/export"
    cat > "$box/edgeseg.toml" <<TOML
[watch]
folders = ["$box/export"]
settle_seconds = 3
[model]
path = "$model"
onnxruntime = "$lib"
[output]
folder = "$box/results"
[state]
folder = "$box/state"
[metrics]
listen = "127.0.0.1:0"
[dbus]
bus = "off"
TOML
    echo
    echo "== edgeseg daemon --config $box/edgeseg.toml (export folder $box/export)"
    "$bin" check-config "$box/edgeseg.toml"
    EDGESEG_LOG=info "$bin" daemon --config "$box/edgeseg.toml" 2> "$box/daemon.log" &
    daemon_pid=$!
    trap 'kill "$daemon_pid" 2>/dev/null || true' EXIT
    metrics=""
    for _ in $(seq 120); do
        metrics=$(grep -o 'metrics on http://[^ ]*' "$box/daemon.log" | head -1 | cut -d' ' -f3 || true)
        [ -n "$metrics" ] && break
        sleep 0.5
    done
    echo "   metrics: $metrics   (also /healthz and /readyz; docs/metrics.md)"
    echo "== the scanner exports the study into $box/export/ file by file"
    (cd "$study/dicom" && find . -type f | sort | while read -r f; do
        mkdir -p "$box/export/STUDY/$(dirname "$f")"
        cp "$f" "$box/export/STUDY/$f.part" && mv "$box/export/STUDY/$f.part" "$box/export/STUDY/$f"
    done)
    for _ in $(seq 600); do
        [ -f "$box/results/$uid/report.json" ] && break
        sleep 0.5
    done
    if [ ! -f "$box/results/$uid/report.json" ]; then
        echo "the daemon wrote no outputs; its log:" >&2
        cat "$box/daemon.log" >&2
        exit 1
    fi
    echo "== the daemon's outputs in $box/results/$uid/:"
    ls -l "$box/results/$uid/"
    echo "== from $metrics:"
    .venv/bin/python -c 'import sys, urllib.request; [print("  " + l) for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith(("edgeseg_studies_total", "edgeseg_queue_depth", "edgeseg_ready ", "edgeseg_model_info"))]' "$metrics"
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || true
    trap - EXIT
    echo "== daemon stopped (SIGTERM); its log: $box/daemon.log; its journal: $box/state/"

    # Site acceptance in small: the study's outputs against the generator's truth.
    echo
    echo "== edgeseg evaluate --pred $out/results/$uid --truth $study/truth/labels_pet.nii.gz --label 1 2"
    echo "   (label 1 lesion, 2 liver; figures defined in docs/evaluate.md)"
    "$bin" evaluate --pred "$out/results/$uid" --truth "$study/truth/labels_pet.nii.gz" --label 1 2 \
        --out "$out/evaluation"
    echo "== every figure as JSON and CSV: $out/evaluation/evaluation.json, $out/evaluation/cases.csv"
fi
