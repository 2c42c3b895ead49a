#!/usr/bin/env bash
# Connected-component labelling benchmark (CPU twin vs cc3d), one run:
# a 512×512×400 volume of realistic blobs (lesion- and organ-sized spheres and
# ellipsoids, ~5% foreground, fixed seed), 26-connectivity, labelled by
# `edgeseg components` (its own label timer) and by cc3d.connected_components
# on the same array in the same run; median of REPEATS.
#   bench/cc.sh [REPEATS]
# Target (post-processing issue): the CPU twin no slower than cc3d.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
repeats=${1:-5}
scripts/venv.sh
py="$root/.venv/bin/python"
cargo build --release --locked -q
work="$root/.cache/bench/cc"
mkdir -p "$work"
"$py" - "$work" "$repeats" "$root/target/release/edgeseg" <<'PY'
import json, subprocess, sys, time, os
import numpy as np, nibabel as nib, cc3d
work, repeats, binary = sys.argv[1], int(sys.argv[2]), sys.argv[3]
vol = os.path.join(work, "blobs-512x512x400.nii")
shape = (512, 512, 400)  # x, y, z
if not os.path.exists(vol):
    rng = np.random.default_rng(2026)
    m = np.zeros(shape, np.uint8, order="F")
    for _ in range(700):
        c = rng.integers(0, shape)
        r = rng.uniform(2, 14, 3) if rng.random() < 0.9 else rng.uniform(10, 40, 3)
        lo = np.maximum(c - r.astype(int) - 1, 0); hi = np.minimum(c + r.astype(int) + 2, shape)
        x, y, z = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= (((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1)
    nib.save(nib.Nifti1Image(m, np.diag([0.98, 0.98, 1.5, 1])), vol)
m = np.asfortranarray(np.asarray(nib.load(vol).dataobj))
ours, theirs = [], []
for _ in range(repeats):
    p = subprocess.run([binary, "components", vol, "--out", os.path.join(work, "labels.nii"), "--connectivity", "26", "--json"],
                       check=True, capture_output=True, text=True)
    rep = json.loads(p.stdout)
    ours.append(rep["timings_s"]["label"])
    t = time.perf_counter(); ref = cc3d.connected_components(m, connectivity=26); theirs.append(time.perf_counter() - t)
assert rep["count"] == int(ref.max()), (rep["count"], int(ref.max()))
o, c = float(np.median(ours)), float(np.median(theirs))
print("| volume | foreground | components | edgeseg CPU label s | cc3d s | edgeseg / cc3d |")
print("|---|---|---|---|---|---|")
print(f"| 512×512×400 blobs, 26-conn | {m.mean()*100:.1f}% | {rep['count']} | {o:.3f} | {c:.3f} | {o/c:.2f} |")
print(f"\ncc3d {cc3d.__version__ if hasattr(cc3d, '__version__') else ''}; {os.cpu_count()} cores; median of {repeats}; edgeseg threads: all cores, cc3d: one thread")
PY
