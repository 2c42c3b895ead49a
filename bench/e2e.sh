#!/usr/bin/env bash
# End to end on one generated PET/CT study in DICOM: `edgeseg process` against
# the pipeline a researcher assembles today (bench/e2e_peer.py), in one run,
# same cores, page cache warm. Each peer stage is its own process, timed by GNU
# time (wall, peak RSS); edgeseg is one process (peak RSS of the whole; its
# stage times from its report.json). Then Dice between the two label maps.
#
#   bench/e2e.sh NNUNET_RESULTS [WORKDIR]
#
# NNUNET_RESULTS: the nnU-Net results folder holding
#   Dataset777_DemoPETCT/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_{0,1}/checkpoint_final.pth,
#   i.e. the PyTorch checkpoints models/demo-petct was exported from (tools/train_demo.py
#   --work W leaves them in W/nnUNet_results).
# Environment:
#   SIZE=wholebody  phantom size (tests/fixtures/phantom.py --size): wholebody = PET
#                   200x200x300, CT 512x512x600; small = PET 96x96x64 (a quick check)
#   THREADS=2       threads for both (edgeseg --threads, torch/OMP for nnU-Net)
#   PROVIDER=cpu    edgeseg's execution provider; openvino takes the library of the
#                   onnxruntime-openvino wheel (requirements/openvino.txt), made once in
#                   ${EDGESEG_CACHE:-~/.cache/edgeseg}/venv-openvino-<hash>
#   BF16=1          with PROVIDER=openvino: edgeseg --bf16 (OpenVINO in bfloat16 on AMX / AVX-512 BF16)
#   SKIP_PEER=1     edgeseg only (e.g. a second provider after a full run)
#   MODEL=models/demo-petct  the edgeseg package exported from NNUNET_RESULTS (tools/nnunet_export.py)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
results=$(realpath "${1:?usage: bench/e2e.sh NNUNET_RESULTS [WORKDIR]}")
size=${SIZE:-wholebody}
threads=${THREADS:-2}
provider=${PROVIDER:-cpu}
model=$(realpath "${MODEL:-models/demo-petct}")
work=${2:-${CARGO_TARGET_DIR:-$root/target}/bench-e2e}
work=$(realpath -m "$work")
ckpt="$results/Dataset777_DemoPETCT/nnUNetTrainer__nnUNetPlans__3d_fullres"
for f in 0 1; do
    [ -f "$ckpt/fold_$f/checkpoint_final.pth" ] || { echo "e2e: no $ckpt/fold_$f/checkpoint_final.pth" >&2; exit 2; }
done
[ -x .venv/bin/python ] || { echo "e2e: no .venv (run scripts/venv.sh)" >&2; exit 2; }
nnvenv=$(scripts/nnunet-venv.sh)
case $provider in
    cpu) lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1) ;;
    openvino)
        cache=${EDGESEG_CACHE:-$HOME/.cache/edgeseg}
        ovenv="$cache/venv-openvino-$(sha256sum requirements/openvino.txt | cut -c1-16)"
        if [ ! -f "$ovenv/.complete" ]; then
            rm -rf "$ovenv"
            python3 -m venv "$ovenv" >&2
            "$ovenv/bin/pip" install -q --disable-pip-version-check -r requirements/openvino.txt >&2
            touch "$ovenv/.complete"
        fi
        lib=$(ls "$ovenv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)
        ;;
    *) echo "e2e: PROVIDER cpu or openvino" >&2; exit 2 ;;
esac
cargo build --release --locked -q
bin=${CARGO_TARGET_DIR:-$root/target}/release/edgeseg

study="$work/study-$size"
if [ ! -f "$study/truth/truth.json" ]; then
    .venv/bin/python tests/fixtures/phantom.py --out "$study" --size "$size" --vendor siemens --nuclide ga68 \
        --seed 2001 -q
fi
# Page cache warm: the study, the model package, the checkpoints, both programs' libraries.
cat "$study"/dicom/*/* "$model"/* "$ckpt"/fold_*/checkpoint_final.pth "$bin" "$lib" > /dev/null

timed() { # NAME COMMAND...: GNU time -v into $work/time-NAME.log
    local name=$1
    shift
    /usr/bin/time -v -o "$work/time-$name.log" "$@" > "$work/out-$name.log" 2>&1 ||
        { echo "e2e: $name failed:" >&2; tail -20 "$work/out-$name.log" >&2; exit 1; }
}
wall() { awk -F': ' '/Elapsed \(wall/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/time-$1.log"; }
rss() { awk '/Maximum resident/ {printf "%.0f", $6/1024}' "$work/time-$1.log"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$work/es"
timed edgeseg env ORT_DYLIB_PATH="$lib" "$bin" process "$study/dicom" --model "$model" --out "$work/es" \
    -f 0 1 --threads "$threads" --provider "$provider" ${BF16:+--bf16}
es_labels=$(ls "$work"/es/*/labels.nii.gz | head -1)
es_report=$(dirname "$es_labels")/report.json

if [ -z "${SKIP_PEER:-}" ]; then
    rm -rf "$work/peer"
    mkdir -p "$work/peer"
    timed convert .venv/bin/python bench/e2e_peer.py convert "$study/dicom" "$work/peer"
    timed predict env nnUNet_results="$results" nnUNet_raw="$work/peer/raw" nnUNet_preprocessed="$work/peer/pre" \
        OMP_NUM_THREADS="$threads" "$nnvenv/bin/nnUNetv2_predict" -i "$work/peer/in" -o "$work/peer/pred" \
        -d Dataset777_DemoPETCT -c 3d_fullres -tr nnUNetTrainer -p nnUNetPlans -f 0 1 -device cpu -npp 1 -nps 1
    timed post .venv/bin/python bench/e2e_peer.py post "$work/peer"
    timed rtstruct .venv/bin/python bench/e2e_peer.py rtstruct "$study/dicom" "$work/peer"
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

.venv/bin/python - "$work" "$es_report" "$size" "$provider" "${SKIP_PEER:-}" <<'PY'
import json, re, sys
from pathlib import Path
work, report, size, provider, skip_peer = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def gnu(name):
    t = (work / f"time-{name}.log").read_text()
    h, m, sec = ([0, 0] + re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1).split(":"))[-3:]
    cpu = sum(float(re.search(rf"{k} time \(seconds\): (\S+)", t).group(1)) for k in ("User", "System"))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
    return int(h) * 3600 + int(m) * 60 + float(sec), cpu, rss
es_wall, es_cpu, es_rss = gnu("edgeseg")
st = json.loads(report.read_text())["timings_s"]
print(f"| stage | edgeseg wall s ({provider}) | peer wall s | peer CPU s | peer peak RSS MiB |")
print("|---|---|---|---|---|")
rows = [("DICOM to volumes (peer: SimpleITK, SUV, CT onto the PET grid, NIfTI)", st["load"], "convert"),
        ("network with pre- and post-processing (peer: nnUNetv2_predict -device cpu)", st["preprocess"] + st["inference"] + st["export"], "predict"),
        ("lesion rules: outside-body and < 0.1 mL removal (peer: cc3d)", st["postprocess"], "post"),
        ("RTSTRUCT and the other outputs (peer: rt-utils)", st["write"], "rtstruct")]
peer_wall = peer_cpu = peer_rss = 0.0
for label, es, name in rows:
    if skip_peer:
        print(f"| {label} | {es:.1f} | | | |")
        continue
    w, c, r = gnu(name)
    peer_wall += w
    peer_cpu += c
    peer_rss = max(peer_rss, r)
    print(f"| {label} | {es:.1f} | {w:.1f} | {c:.1f} | {r:.0f} |")
print(f"| (edgeseg: of which inference) | {st['inference']:.1f} | | | |")
if skip_peer:
    print(f"| **total** (edgeseg: whole process, GNU time) | **{es_wall:.1f}** | | | |")
    print(f"\nedgeseg: CPU {es_cpu:.1f} s, peak RSS {es_rss:.0f} MiB")
else:
    print(f"| **total** (edgeseg: whole process, GNU time) | **{es_wall:.1f}** | **{peer_wall:.1f}** | **{peer_cpu:.1f}** | **{peer_rss:.0f}** |")
    print(f"\nedgeseg: CPU {es_cpu:.1f} s, peak RSS {es_rss:.0f} MiB. Peer / edgeseg: wall {peer_wall / es_wall:.2f}x, "
          f"CPU {peer_cpu / es_cpu:.2f}x, peak RSS {peer_rss / es_rss:.2f}x")
PY
if [ -z "${SKIP_PEER:-}" ]; then
    echo "Dice edgeseg vs peer labels: $(.venv/bin/python bench/e2e_peer.py dice "$es_labels" "$work/peer/labels.nii.gz")"
    echo "peer lesions: $(cat "$work/out-post.log")"
fi
echo "edgeseg lesions: $(.venv/bin/python -c "import json,sys; p=json.load(open(sys.argv[1]))['patient']; print(p['lesion_count'], 'lesions,', round(p['total_tumour_volume_ml'],1), 'mL')" "$es_report" 2>/dev/null || echo see "$es_report")"
echo "size $size ($(.venv/bin/python -c "import json,sys; t=json.load(open(sys.argv[1])); p=t['series']['PT']; c=t['series']['CT']; print(f\"PET {p['columns']}x{p['rows']}x{p['slices']}, CT {c['columns']}x{c['rows']}x{c['slices']}\")" "$study/truth/truth.json" 2>/dev/null)), threads $threads, provider $provider ($(basename "$lib")), $(date -u '+%F %H:%M UTC'), $(nproc) cores $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average before ${load_before}, after ${load_after}; edgeseg $("$bin" --version | cut -d' ' -f2-)"
