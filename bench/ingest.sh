#!/usr/bin/env bash
# Ingest benchmark: reads a clinical-size PET series (336×336×300) and CT series
# (512×512×600) to volumes with `edgeseg load` and with pydicom (dcmread +
# pixel_array + rescale + stack, tests/peers/pydicom_read.py) on the same files
# in one run; prints wall time and peak RSS of each (GNU time) as a Markdown table.
#   bench/ingest.sh [REPEATS]
# Targets (ingest issue): edgeseg ≥ 5× faster; peak RSS ≤ 1.5× the f32 volume.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
repeats=${1:-3}
scripts/venv.sh
py="$root/.venv/bin/python"
data="$root/.cache/bench/clinical-siemens"
if [ ! -f "$data/truth/truth.json" ]; then
    echo "bench: generating the clinical-size phantom in $data (pydicom, a few minutes)" >&2
    "$py" tests/fixtures/phantom.py --out "$data" --size clinical --vendor siemens -q
fi
cargo build --release --locked -q
bin="$root/target/release/edgeseg"

# Warm the page cache so both readers see the same (cached) files.
cat "$data"/dicom/*/* > /dev/null

measure() { # label, command...: prints "seconds rss_mib" of the fastest of $repeats runs
    local best_s="" best_rss=""
    for _ in $(seq "$repeats"); do
        local log; log=$(mktemp)
        /usr/bin/time -f "%e %M" -o "$log" "${@:2}" > /dev/null
        read -r s kb < "$log"; rm -f "$log"
        if [ -z "$best_s" ] || awk "BEGIN{exit !($s < $best_s)}"; then best_s=$s; best_rss=$((kb / 1024)); fi
    done
    echo "$best_s $best_rss"
}

echo "| series | voxels | f32 volume MiB | edgeseg s | pydicom s | speed-up | edgeseg peak RSS MiB | RSS / volume | pydicom peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for m in PT CT; do
    dir="$data/dicom/$m"
    dims=$("$bin" load "$dir" | head -1 | "$py" -c 'import json,sys; d=json.loads(sys.stdin.readline())["dims"]; print(f"{d[0]}x{d[1]}x{d[2]}", d[0]*d[1]*d[2]*4/2**20)')
    read -r shape vol_mib <<< "$dims"
    read -r es erss <<< "$(measure edgeseg "$bin" load "$dir")"
    read -r ps prss <<< "$(measure pydicom "$py" tests/peers/pydicom_read.py "$dir")"
    "$py" - "$m" "$shape" "$vol_mib" "$es" "$ps" "$erss" "$prss" <<'PY'
import sys
m, shape, vol, es, ps, erss, prss = sys.argv[1:]
vol, es, ps, erss, prss = map(float, (vol, es, ps, erss, prss))
print(f"| {m} | {shape} | {vol:.0f} | {es:.2f} | {ps:.2f} | {ps/es:.1f}x | {erss:.0f} | {erss/vol:.2f} | {prss:.0f} |")
PY
done
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); $(date -u +%F); edgeseg $("$bin" --version | cut -d' ' -f2-); best of $repeats"
