#!/usr/bin/env python3
"""A clinical-size CT case and a point-wise CT model for the memory benchmark.

    python bench/make_large_ct.py --out DIR [--shape 512 512 1000] [--spacing 0.8 0.8 1.0]
                                  [--model-spacing 0.8 0.8 1.0] [--patch 128]

DIR/model/  nnU-Net-style package (plans spacing = --model-spacing, 3d_fullres,
            CTNormalization, the point-wise network of tests/fixtures/onnx_package.py)
DIR/input/  CASE_0000.nii.gz, int16 HU: air outside an elliptic body, soft
            tissue, a bony ring and a few hot spheres, (x, y, z) = --shape.
Written with numpy + nibabel + onnx, not by edgeseg. The model spacing equal to
the input spacing is the heaviest case: the working resolution is the input's.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
from onnx_package import MEAN, P005, P995, STD, configuration, nearest_centre_network, network  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 1000])
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.0])
    ap.add_argument("--model-spacing", type=float, nargs=3, default=[0.8, 0.8, 1.0], help="x y z, mm")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--classes", type=int, default=2, choices=[2, 3],
                    help="2: point-wise lesion model; 3: nearest-centre air / soft tissue / bone model")
    ap.add_argument("--model-only", action="store_true",
                    help="write the model only (the image depends on --shape and --spacing alone)")
    a = ap.parse_args()
    model = a.out / "model"
    model.mkdir(parents=True, exist_ok=True)
    zyx = [a.model_spacing[2], a.model_spacing[1], a.model_spacing[0]]
    conf = configuration(a.patch, a.shape[::-1], zyx, ["CTNormalization"],
                         arch="pointwise" if a.classes == 2 else "nearest")
    plans = {
        "dataset_name": "Dataset903_LargeCT", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": conf},
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3000.0, "mean": MEAN, "median": MEAN, "min": -1000.0, "percentile_00_5": P005,
                  "percentile_99_5": P995, "std": STD}},
    }
    labels = {"background": 0, "lesion": 1} if a.classes == 2 else {"background": 0, "tissue": 1, "bone": 2}
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}
    (model / "plans.json").write_text(json.dumps(plans, indent=2))
    (model / "dataset.json").write_text(json.dumps(dataset, indent=2))
    folds = list(range(a.folds))
    for f in folds:
        if a.classes == 2:
            network(model / f"fold_{f}.onnx", 1.0 + f, a.patch)
        else:
            # Air, soft tissue, bone in normalised units, each fold a little apart.
            hu = [-1000.0 + 10 * f, 40.0 + 5 * f, 700.0 - 10 * f]
            nearest_centre_network(model / f"fold_{f}.onnx", [(h - MEAN) / STD for h in hu], a.patch)
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    files = {n: sha(model / n) for n in ["plans.json", "dataset.json", *[f"fold_{f}.onnx" for f in folds]]}
    toml = [
        'name = "large-ct-bench"', 'version = "1"', 'configuration = "3d_fullres"', 'profile = "ct-radiomics"',
        f"folds = {folds}", "clinical_use = false", 'note = "benchmark fixture"', "",
        "[[channels]]", "index = 0", 'name = "CT"', 'modality = "CT"', "",
        "[inference]", "allowed_mirroring_axes = [0, 1, 2]", "", "[files]",
        *[f'"{n}" = "{h}"' for n, h in files.items()],
    ]
    (model / "model.toml").write_text("\n".join(toml) + "\n")

    if a.model_only:
        print(json.dumps({"model": str(model)}))
        return
    nx, ny, nz = a.shape
    x = (np.arange(nx) - nx / 2) / (0.42 * nx)
    y = (np.arange(ny) - ny / 2) / (0.30 * ny)
    r2 = x[:, None] ** 2 + y[None, :] ** 2
    plane = np.full((nx, ny), -1000, np.int16)
    plane[r2 < 1.0] = 40
    plane[(r2 > 0.75) & (r2 < 0.85)] = 700
    img = np.empty((nx, ny, nz), np.int16)
    img[:] = plane[:, :, None]
    rng = np.random.default_rng(3)
    for _ in range(12):
        cx, cy, cz = rng.integers(nx // 3, 2 * nx // 3), rng.integers(ny // 3, 2 * ny // 3), rng.integers(20, nz - 20)
        r = int(rng.integers(4, 15))
        sl = np.s_[cx - r:cx + r, cy - r:cy + r, cz - r:cz + r]
        gx, gy, gz = np.ogrid[-r:r, -r:r, -r:r]
        img[sl][(gx ** 2 + gy ** 2 + gz ** 2) < r * r] = 300
    aff = np.diag([-a.spacing[0], -a.spacing[1], a.spacing[2], 1.0])
    aff[:3, 3] = [200.0, 200.0, -900.0]
    (a.out / "input").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(img, aff), str(a.out / "input" / "CASE_0000.nii.gz"))
    print(json.dumps({"model": str(model), "input": str(a.out / "input"), "voxels": int(img.size)}))


if __name__ == "__main__":
    main()
