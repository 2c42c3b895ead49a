#!/usr/bin/env bash
# GPU check on a CUDA machine without Rust (an H100 box, a Jetson):
#   scripts/gpu-check.sh path/to/edgeseg [SEED]
# The binary is built elsewhere with `cargo build --release --features cuda`
# (it carries its PTX and kernel sources; no CUDA toolkit is needed here, only
# the driver, and NVRTC where the driver is older than the embedded PTX).
#
# 1. `edgeseg gpu-check --seed SEED --json`: every correctness case, CPU twin
#    vs CUDA bit for bit, and the 512×512×400 benchmark.
# 2. Where CuPy is importable: `edgeseg gpu-check --seed SEED --write-volume F`
#    writes the benchmark volume (raw u8, x fastest, i.e. C-order [nz][ny][nx];
#    prints "nx ny nz"), and cupyx.scipy.ndimage.label labels it with a
#    3×3×3 structure (26-connectivity), timed on the device and with copies.
# 3. Prints a Markdown summary (python3), else edgeseg's own Markdown.
# Exit status: that of `edgeseg gpu-check` (0 all bit-identical, 2 some case
# differs, 1 it could not run).
set -euo pipefail
bin=${1:?usage: scripts/gpu-check.sh path/to/edgeseg [seed]}
seed=${2:-1}
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
"$bin" gpu-check --seed "$seed" --json >"$work/report.json" || status=$?
if [ ! -s "$work/report.json" ]; then
    echo "gpu-check: edgeseg produced no report (exit $status)" >&2
    exit "$((status == 0 ? 1 : status))"
fi

if ! command -v "$py" >/dev/null 2>&1; then
    echo "gpu-check: no $py; edgeseg's own summary follows (the check runs again)" >&2
    "$bin" gpu-check --seed "$seed" || true
    exit "$status"
fi

echo '{}' >"$work/cupy.json"
if "$py" -c 'import cupy, cupyx.scipy.ndimage' >/dev/null 2>&1; then
    dims=$("$bin" gpu-check --seed "$seed" --write-volume "$work/volume.u8")
    # shellcheck disable=SC2086
    "$py" - "$work/volume.u8" $dims >"$work/cupy.json" <<'EOF' || echo '{"error": "CuPy run failed"}' >"$work/cupy.json"
import json, sys, time
import numpy as np
import cupy as cp
from cupyx.scipy import ndimage

path, nx, ny, nz = sys.argv[1], *map(int, sys.argv[2:5])
vol = np.fromfile(path, dtype=np.uint8).reshape(nz, ny, nx)
structure = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity
dev = cp.asarray(vol)
labels, count = ndimage.label(dev, structure=structure)  # warm-up: kernel compilation
cp.cuda.Device().synchronize()
kernel = float("inf")
for _ in range(5):
    t = time.perf_counter()
    labels, count = ndimage.label(dev, structure=structure)
    cp.cuda.Device().synchronize()
    kernel = min(kernel, time.perf_counter() - t)
total = float("inf")
for _ in range(3):
    t = time.perf_counter()
    labels, count = ndimage.label(cp.asarray(vol), structure=structure)
    host = cp.asnumpy(labels)
    total = min(total, time.perf_counter() - t)
print(json.dumps({
    "cupy": cp.__version__,
    "dims": [nx, ny, nz],
    "count": int(count),
    "kernel_ms": kernel * 1e3,
    "total_ms": total * 1e3,
}))
EOF
fi

"$py" - "$work/report.json" "$work/cupy.json" <<'EOF'
import json, sys

r = json.load(open(sys.argv[1]))
c = json.load(open(sys.argv[2]))

def ms(v):
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")

def dims(d):
    return "×".join(map(str, d))

print(f"## edgeseg gpu-check (seed {r['seed']})\n")
print(f"Device: {r['device']}\n")
for k in r["kernels"]:
    print(f"- {k}")
total = r["passed"] + r["failed"]
print(f"\nCorrectness against the CPU twins: {r['passed']} of {total} cases bit-identical"
      + ("." if r["failed"] == 0 else "; FAILURES:") + "\n")
if r["failed"]:
    print("| kernel | case | dims | conn | difference |\n|---|---|---|---|---|")
    for case in [x for x in r["cases"] if not x["pass"]][:100]:
        conn = case["connectivity"] if case["connectivity"] is not None else "-"
        detail = case["detail"].replace("|", "/")
        print(f"| {case['kernel']} | {case['case']} | {dims(case['dims'])} | {conn} | {detail} |")
    print()
print("| benchmark | dims | CPU ms | GPU kernel ms | GPU + copies ms | kernel vs CPU | GB/s (memcpy GB/s) | note |")
print("|---|---|---:|---:|---:|---:|---:|---|")
label_count = None
label_kernel = None
for t in r["timings"]:
    speed = f"{t['cpu_ms'] / t['gpu_kernel_ms']:.1f}×" if t["cpu_ms"] and t["gpu_kernel_ms"] else "-"
    if t["kernel_gb_s"] and t["memcpy_gb_s"]:
        gbs = f"{t['kernel_gb_s']:.0f} ({t['memcpy_gb_s']:.0f}, {100 * t['kernel_gb_s'] / t['memcpy_gb_s']:.0f}%)"
    elif t["kernel_gb_s"]:
        gbs = f"{t['kernel_gb_s']:.0f}"
    else:
        gbs = "-"
    print(f"| {t['name']} | {dims(t['dims'])} | {ms(t['cpu_ms'])} | {ms(t['gpu_kernel_ms'])} | "
          f"{ms(t['gpu_total_ms'])} | {speed} | {gbs} | {t['note']} |")
    if t["name"].startswith("label"):
        label_count = t["note"].split(" ")[0]
        label_kernel = t["gpu_kernel_ms"]
if "count" in c:
    vs = f"{c['kernel_ms'] / label_kernel:.1f}×" if label_kernel else "-"
    same = "same count" if str(c["count"]) == label_count else f"edgeseg counts {label_count}"
    print(f"| label (26-conn), cupyx.scipy.ndimage.label (CuPy {c['cupy']}) | {dims(c['dims'])} | - | "
          f"{ms(c['kernel_ms'])} | {ms(c['total_ms'])} | - | - | {c['count']} components ({same}); "
          f"CuPy kernel time / edgeseg kernel time = {vs} |")
elif "error" in c:
    print(f"\nCuPy: {c['error']}")
else:
    print("\n(CuPy not importable: no cupyx.scipy.ndimage.label comparison)")
EOF
exit "$status"
