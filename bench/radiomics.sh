#!/usr/bin/env bash
# Radiomics benchmark: edgeseg radiomics against PyRadiomics 3.0.1 on the same
# machine in one run. A synthetic 512×512×300 chest CT (int16, 0.78×0.78×1.5 mm:
# body, two lungs at -850 HU with texture, a 40 mL soft-tissue tumour in the
# right lung) and three ROI masks (label 1): the tumour, a 5 mm
# peri-tumoural ring clipped to the body, the whole right lung minus the
# tumour. Default parameters (Original image, all classes, binWidth 25). Each
# tool extracts the three ROIs; wall time and peak memory (GNU time) per ROI.
#   bench/radiomics.sh
#   RAW=1 bench/radiomics.sh   both tools read uncompressed .nii copies
#   REPEAT=3 bench/radiomics.sh  each tool 3 times per ROI, alternating (PyRadiomics,
#                              then edgeseg): the median wall time, every run listed
#   ROIS="1 2" bench/radiomics.sh  only these ROIs (1 tumour, 2 ring, 3 lung)
#   BATCH=1 bench/radiomics.sh  instead, the three ROIs as one batch CSV in each
#                              tool's batch mode (`pyradiomics batch.csv -o out.csv -f csv`,
#                              `edgeseg radiomics batch.csv --csv`): a researcher's run
#   EDGESEG_BIN=path/to/edgeseg bench/radiomics.sh   (that binary as built: no
#   build, no venv refresh; the .venv must already hold PyRadiomics)
# The load column is the 1-minute load average when each run ended (other
# work on the machine shares the cores).
# Target (issue 15): at least 20× faster than PyRadiomics, peak memory no higher.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py="$root/.venv/bin/python"
if [ -n "${EDGESEG_BIN:-}" ]; then
    bin="$EDGESEG_BIN"
else
    scripts/venv.sh
    cargo build --release --locked -q
    bin="${CARGO_TARGET_DIR:-$root/target}/release/edgeseg"
fi
work="$root/.cache/bench/radiomics"
mkdir -p "$work"
"$py" - "$work" <<'PY'
import os, sys
import numpy as np, SimpleITK as sitk
work = sys.argv[1]
img_p, lab_p = os.path.join(work, "ct.nii.gz"), os.path.join(work, "roi3.nii.gz")
if not os.path.exists(lab_p):
    nx, ny, nz = 512, 512, 300
    sp = np.array([0.78, 0.78, 1.5])
    rng = np.random.default_rng(15)
    z, y, x = np.ogrid[:nz, :ny, :nx]
    X, Y, Z = (x - nx / 2) * sp[0], (y - ny / 2) * sp[1], (z - nz / 2) * sp[2]
    body = (X / 170) ** 2 + (Y / 120) ** 2 <= 1
    lung_r = ((X - 75) / 60) ** 2 + (Y / 80) ** 2 + (Z / 200) ** 2 <= 1
    lung_l = ((X + 75) / 55) ** 2 + (Y / 78) ** 2 + (Z / 195) ** 2 <= 1
    ct = np.full((nz, ny, nx), -1000.0)
    ct[np.broadcast_to(body, ct.shape)] = 40.0
    ct[lung_r | lung_l] = -850.0
    r = (40000 * 3 / (4 * np.pi)) ** (1 / 3)  # 40 mL
    d = np.sqrt((X - 80) ** 2 + (Y - 10) ** 2 + (Z - 20) ** 2)
    tumour = d <= r
    ct[tumour] = 35.0
    ct += rng.normal(0, 25, ct.shape)
    ct = np.clip(ct, -1024, 3000).astype(np.int16)
    ring = (d <= r + 5) & ~tumour & np.broadcast_to(body, ct.shape)
    lung = lung_r & ~tumour
    im = sitk.GetImageFromArray(ct)
    im.SetSpacing(tuple(float(s) for s in sp))
    sitk.WriteImage(im, img_p)
    for i, roi in enumerate((tumour, ring, lung), start=1):
        m = sitk.GetImageFromArray(roi.astype(np.uint8))
        m.SetSpacing(tuple(float(s) for s in sp))
        sitk.WriteImage(m, os.path.join(work, f"roi{i}.nii.gz"))
    print(f"tumour {tumour.sum() * sp.prod() / 1000:.1f} mL, ring {ring.sum() * sp.prod() / 1000:.1f} mL, lung {lung.sum() * sp.prod() / 1000:.1f} mL")
PY
cat > "$work/pyrad.py" <<'PY'
import json, sys
from radiomics import featureextractor
import logging
logging.getLogger("radiomics").setLevel(logging.ERROR)
r = featureextractor.RadiomicsFeatureExtractor().execute(sys.argv[1], sys.argv[2])
f = {k: float(v) for k, v in r.items() if not k.startswith("diagnostics_")}
json.dump(f, open(sys.argv[3], "w"))
print(len(f))
PY
# RAW=1: both tools read uncompressed .nii copies (gunzip of the same files),
# so the serial gzip decode is left out of both figures.
ext=nii.gz
if [ -n "${RAW:-}" ]; then
    ext=nii
    for f in ct roi1 roi2 roi3; do
        gzip -dc "$work/$f.nii.gz" > "$work/$f.nii"
    done
fi
echo "roi tool wall_s (median of REPEAT runs) peak_MiB (largest) features load (then: largest relative difference, edgeseg against PyRadiomics); inputs .$ext"
repeat=${REPEAT:-1}
# median of the numbers given (the middle one; the lower middle of an even count)
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# after one run of each tool: its wall time and peak (GNU time's files) kept
tally() {
    local s kb
    read -r s kb < "$work/t_es"
    es_all+=("$s")
    es_kb=$((kb > es_kb ? kb : es_kb))
    read -r s kb < "$work/t_py"
    py_all+=("$s")
    py_kb=$((kb > py_kb ? kb : py_kb))
}
if [ -n "${BATCH:-}" ]; then
    printf 'Image,Mask\n' > "$work/batch.csv"
    for label in ${ROIS:-1 2 3}; do
        printf '%s,%s\n' "$work/ct.$ext" "$work/roi$label.$ext" >> "$work/batch.csv"
    done
    pyrad_cli="$root/.venv/bin/pyradiomics"
    es_all=() py_all=() es_kb=0 py_kb=0
    for _ in $(seq "$repeat"); do
        /usr/bin/time -f "%e %M" -o "$work/t_es" "$bin" radiomics "$work/batch.csv" --csv > "$work/es_batch.csv"
        es_load=$(cut -d' ' -f1 /proc/loadavg)
        # pyradiomics appends to an existing output file
        rm -f "$work/py_batch.csv"
        /usr/bin/time -f "%e %M" -o "$work/t_py" "$pyrad_cli" "$work/batch.csv" -o "$work/py_batch.csv" -f csv 2> "$work/py_batch.log"
        py_load=$(cut -d' ' -f1 /proc/loadavg)
        tally
    done
    es_s=$(median "${es_all[@]}")
    py_s=$(median "${py_all[@]}")
    echo "batch of ROIs ${ROIS:-1 2 3}: edgeseg $es_s s (runs ${es_all[*]}) peak $((es_kb / 1024)) MiB, load $es_load"
    echo "batch of ROIs ${ROIS:-1 2 3}: pyradiomics $py_s s (runs ${py_all[*]}) peak $((py_kb / 1024)) MiB, load $py_load"
    echo "  speed-up of the medians $(echo "$py_s / $es_s" | bc -l | cut -c1-5)"
    "$py" "$root/bench/radiomics_diff.py" "$work/py_batch.csv" "$work/es_batch.csv"
    exit 0
fi
for label in ${ROIS:-1 2 3}; do
    es_all=() py_all=() es_kb=0 py_kb=0
    for _ in $(seq "$repeat"); do
        /usr/bin/time -f "%e %M" -o "$work/t_es" "$bin" radiomics "$work/ct.$ext" "$work/roi$label.$ext" --json > "$work/es_$label.json"
        es_load=$(cut -d' ' -f1 /proc/loadavg)
        /usr/bin/time -f "%e %M" -o "$work/t_py" "$py" "$work/pyrad.py" "$work/ct.$ext" "$work/roi$label.$ext" "$work/py_$label.json" > "$work/py_$label.txt"
        py_load=$(cut -d' ' -f1 /proc/loadavg)
        tally
    done
    n_es=$("$py" -c "import json,sys; print(len([k for k in json.load(open(sys.argv[1])) if not k.startswith('diagnostics_')]))" "$work/es_$label.json")
    es_s=$(median "${es_all[@]}")
    py_s=$(median "${py_all[@]}")
    echo "$label edgeseg $es_s $((es_kb / 1024)) $n_es $es_load"
    echo "$label pyradiomics $py_s $((py_kb / 1024)) $(cat "$work/py_$label.txt") $py_load"
    if [ "$repeat" -gt 1 ]; then
        echo "  runs: edgeseg ${es_all[*]}; pyradiomics ${py_all[*]}; speed-up of the medians $(echo "$py_s / $es_s" | bc -l | cut -c1-5)"
    fi
    "$py" "$root/bench/radiomics_diff.py" "$work/py_$label.json" "$work/es_$label.json"
done
