#!/usr/bin/env bash
# Ingest benchmark: reads a clinical-size PET series (336×336×300) and CT series
# (512×512×600) to volumes with `edgeseg load` and with pydicom (dcmread +
# pixel_array + rescale + stack, tests/peers/pydicom_read.py) on the same files
# in one run; prints the in-process read time (each reader's own clock, without
# interpreter start-up), the whole-process wall time and peak RSS (GNU time) of
# each as a Markdown table. The speed-up is taken on the in-process times.
#   bench/ingest.sh [REPEATS]
#   REPEATS: runs per reader (default 5); the median run is reported.
# Targets (ingest issue): edgeseg ≥ 5× faster; peak RSS ≤ 1.5× the f32 volume.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
repeats=${1:-5}
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

measure() { # command...: prints "inproc_s wall_s rss_mib" of the median run (by in-process time)
    local runs=()
    for _ in $(seq "$repeats"); do
        local log out; log=$(mktemp); out=$(mktemp)
        /usr/bin/time -f "%e %M" -o "$log" "$@" > "$out"
        read -r s kb < "$log"
        # In-process read time: edgeseg's total_seconds, pydicom_read.py's seconds.
        local inproc; inproc=$("$py" -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if "total_seconds" in d: print(d["total_seconds"])
    elif "seconds" in d: print(d["seconds"])' "$out" | head -1)
        rm -f "$log" "$out"
        runs+=("$inproc $s $((kb / 1024))")
    done
    printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (${#runs[@]} + 1) / 2 ))p"
}

echo "| series | voxels | f32 volume MiB | edgeseg read s | pydicom read s | speed-up | edgeseg process s | pydicom process s | edgeseg peak RSS MiB | RSS / volume | pydicom peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for m in PT CT; do
    dir="$data/dicom/$m"
    dims=$("$bin" load "$dir" | head -1 | "$py" -c 'import json,sys; d=json.loads(sys.stdin.readline())["dims"]; print(f"{d[0]}x{d[1]}x{d[2]}", d[0]*d[1]*d[2]*4/2**20)')
    read -r shape vol_mib <<< "$dims"
    read -r ei es erss <<< "$(measure "$bin" load "$dir")"
    read -r pi ps prss <<< "$(measure "$py" tests/peers/pydicom_read.py "$dir")"
    "$py" - "$m" "$shape" "$vol_mib" "$ei" "$pi" "$es" "$ps" "$erss" "$prss" <<'PY'
import sys
m, shape, vol, ei, pi, es, ps, erss, prss = sys.argv[1:]
vol, ei, pi, es, ps, erss, prss = map(float, (vol, ei, pi, es, ps, erss, prss))
print(f"| {m} | {shape} | {vol:.0f} | {ei:.3f} | {pi:.3f} | {pi/ei:.1f}x | {es:.2f} | {ps:.2f} | {erss:.0f} | {erss/vol:.2f} | {prss:.0f} |")
PY
done
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); $(date -u +%F); edgeseg $("$bin" --version | cut -d' ' -f2-); median of $repeats runs (by in-process read time); page cache warm"
