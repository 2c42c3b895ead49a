#!/usr/bin/env bash
# GPU check and benchmark on a CUDA machine without Rust (an H100 box, a Jetson):
#   bench/gpu-check.sh path/to/edgeseg [SEED]
# (scripts/gpu-check.sh runs this script.) Both binaries are built elsewhere:
#   cargo build --release --features cuda --bin edgeseg --example gpu-bench
# (they carry their PTX and kernel sources; no CUDA toolkit is needed here,
# only the driver, and NVRTC where the driver is older than the embedded PTX).
# The benchmark binary is looked for beside edgeseg, in examples/gpu-bench
# (GPU_BENCH=PATH names another).
#
# One run (a few minutes on an H100/H200; keep it under 10) answers:
# 1. `edgeseg gpu-check --seed SEED --json --large --repeat 10` (the shipped
#    self-check): every correctness case, CPU twin vs CUDA bit for bit
#    (embedded PTX), the large labelling cases (grid-y stride 512×1024×1100,
#    above 2^31 voxels 2048×1024×1040; ~30 GB host memory; LARGE=0 skips
#    them) and ten GPU labellings of the benchmark volume each compared with
#    the twin.
# 2. `gpu-bench --seed SEED --json` (bench/gpu_bench.rs): the 512×512×400
#    benchmark, CPU twin vs kernels alone vs kernels with copies, with the
#    device-to-device copy bandwidth and the SUV kernel's bandwidth as a
#    fraction of it (its outputs compared with the twin's too).
# 3. The correctness cases again with EDGESEG_FORCE_NVRTC=1 (NVRTC path,
#    library chosen for the driver, empty kernel cache), no benchmark volume.
# 4. Where CuPy is importable: `edgeseg gpu-check --write-volume F
#    --write-labels L` writes the benchmark volume (raw u8, x fastest, i.e.
#    C-order [nz][ny][nx]) and the twin's labels (u32), and
#    cupyx.scipy.ndimage.label labels it with a 3×3×3 structure
#    (26-connectivity), timed on the device and with copies; its labels are
#    compared with edgeseg's voxel for voxel (identical numbering, else the
#    same partition). Without CuPy (the device may be offline) the report
#    says so.
# 5. Prints a Markdown summary ready for BENCHMARKS.md (python3), else
#    edgeseg's own Markdown.
# Exit status: 0 all bit-identical, 2 some case differs (either run, or
# CuPy's partition), 1 it could not run.
set -euo pipefail
bin=${1:?usage: bench/gpu-check.sh path/to/edgeseg [seed]}
bench=${GPU_BENCH:-$(dirname "$bin")/examples/gpu-bench}
seed=${2:-1}
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

large=()
[ "${LARGE:-1}" = 0 ] || large=(--large)
status=0
"$bin" gpu-check --seed "$seed" --json "${large[@]}" --repeat 10 >"$work/report.json" || status=$?
if [ ! -s "$work/report.json" ]; then
    echo "gpu-check: edgeseg produced no report (exit $status)" >&2
    exit "$((status == 0 ? 1 : status))"
fi
echo '{}' >"$work/bench.json"
if [ -x "$bench" ]; then
    bench_status=0
    "$bench" --seed "$seed" --json >"$work/bench.json" || bench_status=$?
    [ -s "$work/bench.json" ] || echo "{\"error\": \"gpu-bench exit $bench_status\"}" >"$work/bench.json"
    if [ "$bench_status" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$bench_status
    fi
else
    echo "{\"error\": \"no benchmark binary at $bench (cargo build --release --features cuda --example gpu-bench)\"}" \
        >"$work/bench.json"
    [ "$status" -ne 0 ] || status=1
fi
nvrtc_status=0
EDGESEG_FORCE_NVRTC=1 EDGESEG_KERNEL_CACHE="$work/kernel-cache" \
    "$bin" gpu-check --seed "$seed" --json --no-bench >"$work/nvrtc.json" 2>"$work/nvrtc.err" || nvrtc_status=$?
if [ ! -s "$work/nvrtc.json" ]; then
    echo "{\"error\": \"exit $nvrtc_status: $(tail -n 3 "$work/nvrtc.err" | tr -d '"\\' | tr '\n\t' '  ')\"}" >"$work/nvrtc.json"
fi
if [ "$nvrtc_status" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$nvrtc_status
fi

if ! command -v "$py" >/dev/null 2>&1; then
    echo "gpu-check: no $py; edgeseg's own summary follows (the check runs again)" >&2
    "$bin" gpu-check --seed "$seed" || true
    exit "$status"
fi

echo '{}' >"$work/cupy.json"
if "$py" -c 'import cupy, cupyx.scipy.ndimage' >/dev/null 2>&1; then
    dims=$("$bin" gpu-check --seed "$seed" --write-volume "$work/volume.u8" --write-labels "$work/labels.u32")
    # shellcheck disable=SC2086
    "$py" - "$work/volume.u8" $dims "$work/labels.u32" >"$work/cupy.json" <<'EOF' || echo '{"error": "CuPy run failed"}' >"$work/cupy.json"
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
ours = np.fromfile(sys.argv[5], dtype="<u4").reshape(nz, ny, nx).astype(np.int64)
theirs = host.astype(np.int64)
if np.array_equal(ours, theirs):
    labels_cmp = "identical labels"
else:
    # the same partition: the (ours, theirs) pairs are one-to-one
    pairs = np.unique(np.stack([ours.ravel(), theirs.ravel()]), axis=1)
    bijective = len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
    diff = int(np.count_nonzero(ours != theirs))
    labels_cmp = (f"same components, other numbering ({diff} voxels numbered differently)" if bijective
                  else f"DIFFERENT components ({diff} voxels differ)")
print(json.dumps({
    "cupy": cp.__version__,
    "dims": [nx, ny, nz],
    "count": int(count),
    "kernel_ms": kernel * 1e3,
    "total_ms": total * 1e3,
    "labels": labels_cmp,
    "partition_ok": not labels_cmp.startswith("DIFFERENT"),
}))
EOF
    if ! "$py" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("partition_ok", True) else 1)' \
        "$work/cupy.json"; then
        [ "$status" -ne 0 ] || status=2
    fi
fi

"$py" - "$work/report.json" "$work/cupy.json" "$work/nvrtc.json" "$work/bench.json" <<'EOF'
import json, sys

r = json.load(open(sys.argv[1]))
c = json.load(open(sys.argv[2]))
nv = json.load(open(sys.argv[3]))
b = json.load(open(sys.argv[4]))
# The self-check's cases and the benchmark's (its outputs against the twin's).
r["cases"] += b.get("cases", [])
r["passed"] += b.get("passed", 0)
r["failed"] += b.get("failed", 0)
r["timings"] = b.get("timings", [])

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
if "error" in b:
    print(f"\nBenchmark: {b['error']}")
if "count" in c:
    vs = f"{c['kernel_ms'] / label_kernel:.1f}×" if label_kernel else "-"
    same = "same count" if str(c["count"]) == label_count else f"edgeseg counts {label_count}"
    print(f"| label (26-conn), cupyx.scipy.ndimage.label (CuPy {c['cupy']}) | {dims(c['dims'])} | - | "
          f"{ms(c['kernel_ms'])} | {ms(c['total_ms'])} | - | - | {c['count']} components ({same}), "
          f"{c['labels']}; CuPy kernel time / edgeseg kernel time = {vs} |")
elif "error" in c:
    print(f"\nCuPy: {c['error']}")
else:
    print("\nCuPy is not installed here (the device has no network to install it): "
          "no cupyx.scipy.ndimage.label comparison in this run.")

print("\n### Checks\n")
print("| check | result |\n|---|---|")
print(f"| every case, embedded PTX | {r['passed']} of {r['passed'] + r['failed']} bit-identical |")
def verdict(x):
    return ("pass, " if x["pass"] else "FAIL, ") + x["detail"]
for name in ["grid-y stride", "above 2^31 voxels"]:
    xs = [x for x in r["cases"] if x["case"] == name]
    what = f"{verdict(xs[0])} ({dims(xs[0]['dims'])}, 26-conn)" if xs else "not run (LARGE=0)"
    print(f"| {name} | {what} |")
rep = [x for x in r["cases"] if "repeated labellings" in x["case"]]
print(f"| repeated labellings | {verdict(rep[0]) if rep else 'not run'} |")
if "error" in nv:
    print(f"| NVRTC forced | did not run: {nv['error']} |")
else:
    print(f"| NVRTC forced (EDGESEG_FORCE_NVRTC=1) | {nv['passed']} of {nv['passed'] + nv['failed']} "
          f"bit-identical; {'; '.join(nv['kernels'])} |")
suv = [t for t in r["timings"] if t["name"] == "suv_threshold" and t["kernel_gb_s"] and t["memcpy_gb_s"]]
if suv:
    t = suv[0]
    print(f"| SUV bandwidth / device-to-device copy | {t['kernel_gb_s']:.0f} / {t['memcpy_gb_s']:.0f} GB/s "
          f"= {100 * t['kernel_gb_s'] / t['memcpy_gb_s']:.0f}% |")
EOF
exit "$status"
