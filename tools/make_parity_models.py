#!/usr/bin/env python3
"""Small nnU-Net v2 models made with nnunetv2 itself, for the parity test
(edgeseg predict vs nnUNetv2_predict).

    python3 tools/make_parity_models.py --out DIR [--cases N] [--test-cases M] [--epochs E]
        [--iters I] [--no-reference]

Two synthetic datasets (numpy + SimpleITK, NIfTI with real spacing and origin):

* ``Dataset901_ParityPETCT`` (package ``parity-petct``): channels "PET" (z-score) and "CT"
  (CTNormalization), near-isotropic ~2 mm (1.8–2.4 mm, varied per case), 48–64 voxels per
  side, labels background 0 / lesion 1 / liver 2.
* ``Dataset902_ParityCT`` (package ``parity-ct``): channel "CT", anisotropic ~(0.8, 0.8, 5.0)
  mm (varied per case so nnU-Net resamples every case, with separate-z), labels 0 / tumour 1.

Images have blobs, gradients, blur and noise, and a zero border around the field of view
(cut differently per case) so the crop to the non-zero bounding box matters. nnunetv2 does
the rest: ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (fingerprint, ExperimentPlanner,
DefaultPreprocessor), then the 3d_fullres configuration of the generated plans is shrunk for
CPU (features per stage capped at 32, 16 in the first stage, 4 stages, smaller patch; nothing else touched) and
the data preprocessed again with the edited plans; nnunetv2's own ``nnUNetTrainer`` trains
folds 0 and 1 on the CPU for a few short epochs (``checkpoint_final.pth`` in nnU-Net's
format). Both are exported with tools/nnunet_export.py, held-out cases are written as
prediction inputs, and (unless --no-reference) ``nnUNetv2_predict -device cpu`` predicts them.

Layout under DIR (printed as JSON at the end and saved to DIR/summary.json):

    nnUNet_raw/DatasetXXX_Name/{imagesTr,labelsTr,dataset.json}
    nnUNet_preprocessed/DatasetXXX_Name/...
    nnUNet_results/DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres/   <- the results folder
        {plans.json,dataset.json,dataset_fingerprint.json,fold_0/checkpoint_final.pth,fold_1/...}
    packages/<name>/{model.toml,plans.json,dataset.json,fold_0.onnx,fold_1.onnx}
    <name>/imagesTs/CASE_0000.nii.gz[, CASE_0001.nii.gz]   held-out inputs (nnU-Net naming)
    <name>/labelsTs/CASE.nii.gz                             their synthetic truth
    <name>/nnunet_pred/CASE.nii.gz                          nnUNetv2_predict output (reference)

Runs in the venv of scripts/nnunet-venv.sh (re-executes itself there if needed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _nnunet_common import REPO, ensure_nnunet_venv, nnunet_env, shrink_plans, train_folds, venv_bin, write_nifti  # noqa: E402

CONFIG = "3d_fullres"
TRAINER_DIR = "nnUNetTrainer__nnUNetPlans__3d_fullres"


# ---------------------------------------------------------------------------------------------
# Synthetic images
# ---------------------------------------------------------------------------------------------

def _grid_mm(shape_zyx, spacing_xyz):
    import numpy as np

    sz, sy, sx = spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]
    nz, ny, nx = shape_zyx
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    return np.meshgrid(z, y, x, indexing="ij")


def _ellipsoid(zz, yy, xx, c, r):
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1.0


def _fov_mask(rng, shape, min_margin=0, max_margin=6):
    """True inside the field of view; a zero border of random width per side outside it."""
    import numpy as np

    m = np.zeros(shape, bool)
    sl = []
    for n in shape:
        lo = int(rng.integers(min_margin, max_margin + 1))
        hi = int(rng.integers(min_margin, max_margin + 1))
        sl.append(slice(lo, n - hi))
    m[tuple(sl)] = True
    return m


def make_petct_case(seed: int, test: bool = False):
    """(pet, ct, label, spacing_xyz, origin_xyz); arrays [z, y, x]."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng([901, seed])
    s = float(rng.uniform(1.8, 2.4))
    spacing = (s, s, s * float(rng.choice([1.0, 1.0, 1.25])))
    if test and seed % 3 == 1:
        spacing = (2.0, 2.0, 3.0)
    shape = tuple(int(v) for v in rng.integers(48, 65, size=3))
    zz, yy, xx = _grid_mm(shape, spacing)
    ext = [(n - 1) * sp / 2 for n, sp in zip(shape, (spacing[2], spacing[1], spacing[0]))]
    fov = _fov_mask(rng, shape, 0, 6)

    body = _ellipsoid(zz, yy, xx, (0, rng.uniform(-4, 4), rng.uniform(-4, 4)),
                      (ext[0] * 1.6, ext[1] * rng.uniform(0.70, 0.85), ext[2] * rng.uniform(0.75, 0.9)))
    inner = _ellipsoid(zz, yy, xx, (0, 0, 0), (ext[0] * 1.6, ext[1] * 0.62, ext[2] * 0.68))
    lung_c = ext[0] * 0.45
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= _ellipsoid(zz, yy, xx, (lung_c, -ext[1] * 0.05, side * ext[2] * 0.35),
                            (ext[0] * 0.45, ext[1] * 0.4, ext[2] * 0.22))
    lungs &= inner
    liver_c = (rng.uniform(-0.25, 0.1) * ext[0], rng.uniform(-0.1, 0.15) * ext[1], -ext[2] * rng.uniform(0.25, 0.4))
    liver_r = (ext[0] * rng.uniform(0.28, 0.4), ext[1] * rng.uniform(0.3, 0.42), ext[2] * rng.uniform(0.25, 0.33))
    liver = _ellipsoid(zz, yy, xx, liver_c, liver_r) & inner & ~lungs
    spine = (((yy - ext[1] * 0.55) / 9.0) ** 2 + (xx / 8.0) ** 2 <= 1.0) & body

    lesions = np.zeros(shape, bool)
    pet_les = np.zeros(shape, np.float32)
    ct_les = np.zeros(shape, np.float32)
    n_les = int(rng.integers(2, 5))
    for i in range(n_les):
        in_liver = i < 2
        for _ in range(50):
            if in_liver:
                c = np.array(liver_c) + rng.uniform(-0.6, 0.6, 3) * np.array(liver_r)
            else:
                c = rng.uniform(-0.55, 0.55, 3) * np.array(ext)
            r = float(rng.uniform(4.0, 9.0))
            ball = _ellipsoid(zz, yy, xx, c, (r, r, r))
            host = liver if in_liver else (body & ~lungs & ~liver & ~spine)
            if ball.sum() > 4 and (ball & host).sum() >= 0.9 * ball.sum():
                break
        lesions |= ball
        pet_les[ball] = rng.uniform(10.0, 30.0)
        ct_les[ball] = rng.uniform(-25.0, 25.0) if in_liver else rng.uniform(60.0, 110.0)

    # CT (HU): air, fat rim, soft tissue, lungs, liver, spine, lesions; gradient and noise.
    ct = np.full(shape, -1000.0, np.float32)
    ct[body] = -95.0
    ct[inner] = 40.0
    ct[lungs] = -840.0
    ct[liver] = 62.0
    ct[spine] = 550.0
    ct[lesions] = ct_les[lesions]
    ct += (zz / (ext[0] + 1e-6) * 12.0).astype(np.float32) * body
    ct = ndimage.gaussian_filter(ct, 0.6)
    ct += rng.normal(0.0, 14.0, shape).astype(np.float32)
    ct = np.clip(np.round(ct), -1024, 3071)

    # PET (SUV): uptake map, blur (FWHM ~ 7 mm), noise roughly proportional to sqrt(signal).
    pet = np.full(shape, 0.02, np.float32)
    pet[body] = 0.6
    pet[inner] = 1.2
    pet[lungs] = 0.35
    pet[liver] = float(rng.uniform(5.0, 8.0))
    pet[spine] = 2.0
    pet[lesions] = pet_les[lesions]
    pet *= (1.0 + 0.15 * yy / (ext[1] + 1e-6)).astype(np.float32)
    sigma_vox = [7.0 / 2.355 / sp for sp in (spacing[2], spacing[1], spacing[0])]
    pet = ndimage.gaussian_filter(pet, sigma_vox)
    pet = pet + rng.normal(0.0, 1.0, shape).astype(np.float32) * 0.12 * np.sqrt(np.maximum(pet, 0.0))
    pet = np.maximum(pet, 0.0)

    label = np.zeros(shape, np.uint8)
    label[liver] = 2
    label[lesions] = 1
    ct[~fov] = 0
    pet[~fov] = 0
    label[~fov] = 0
    origin = tuple(float(v) for v in rng.uniform(-200.0, 200.0, 3))
    return pet.astype(np.float32), ct.astype(np.int16), label, spacing, origin


def make_ct_case(seed: int, test: bool = False):
    """(ct, label, spacing_xyz, origin_xyz); arrays [z, y, x]; anisotropic ~(0.8, 0.8, 5.0) mm."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng([902, seed])
    sxy = float(rng.uniform(0.7, 0.9))
    spacing = (sxy, sxy, float(rng.uniform(4.5, 5.5)))
    if test and seed % 3 == 0:
        spacing = (0.8, 0.8, 5.0)
    n_xy = int(rng.integers(64, 97))
    shape = (int(rng.integers(14, 23)), n_xy + int(rng.integers(-6, 7)), n_xy)
    zz, yy, xx = _grid_mm(shape, spacing)
    ext = [(n - 1) * sp / 2 for n, sp in zip(shape, (spacing[2], spacing[1], spacing[0]))]

    body = (((yy - rng.uniform(-2, 2)) / (ext[1] * rng.uniform(0.78, 0.9))) ** 2
            + ((xx - rng.uniform(-2, 2)) / (ext[2] * rng.uniform(0.82, 0.92))) ** 2 <= 1.0)
    inner = ((yy / (ext[1] * 0.7)) ** 2 + (xx / (ext[2] * 0.75)) ** 2 <= 1.0)
    organ = _ellipsoid(zz, yy, xx, (rng.uniform(-0.3, 0.3) * ext[0], -0.2 * ext[1], 0.35 * ext[2]),
                       (ext[0] * 0.8, ext[1] * 0.3, ext[2] * 0.25)) & inner
    bone = ((yy - 0.5 * ext[1]) / 5.0) ** 2 + (xx / 4.5) ** 2 <= 1.0
    tum = np.zeros(shape, bool)
    for _ in range(int(rng.integers(1, 3))):
        c = (rng.uniform(-0.4, 0.4) * ext[0], rng.uniform(-0.35, 0.25) * ext[1], rng.uniform(-0.5, 0.1) * ext[2])
        r = (float(rng.uniform(7.0, 14.0)), float(rng.uniform(5.0, 11.0)), float(rng.uniform(5.0, 11.0)))
        tum |= _ellipsoid(zz, yy, xx, c, r) & inner & ~bone
    ct = np.full(shape, -1000.0, np.float32)
    ct[body] = -100.0
    ct[inner] = 35.0
    ct[organ] = 65.0
    ct[bone] = 700.0
    ct[tum] = float(rng.uniform(95.0, 130.0))
    ct += (xx / ext[2] * 15.0).astype(np.float32) * body
    ct = ndimage.gaussian_filter(ct, (0.3, 0.8, 0.8))
    ct += rng.normal(0.0, 18.0, shape).astype(np.float32)
    ct = np.clip(np.round(ct), -1024, 3071)

    # Zero outside the reconstruction circle (some cases) and zero slabs (all cases).
    fov = _fov_mask(rng, shape, 0, 4)
    if seed % 2 == 0:
        fov &= (yy / (ext[1] * 1.05)) ** 2 + (xx / (ext[2] * 1.05)) ** 2 <= 1.0
    label = tum.astype(np.uint8)
    ct[~fov] = 0
    label[~fov] = 0
    origin = tuple(float(v) for v in rng.uniform(-150.0, 150.0, 3))
    return ct.astype(np.int16), label, spacing, origin


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

DATASETS = {
    "parity-petct": {
        "id": 901, "dataset": "Dataset901_ParityPETCT", "channels": {"0": "PET", "1": "CT"},
        "labels": {"background": 0, "lesion": 1, "liver": 2}, "profile": "petct-total-tumour",
        "modality": ["0=PT", "1=CT"], "max_stages": 4, "patch": [48, 48, 48],
    },
    "parity-ct": {
        "id": 902, "dataset": "Dataset902_ParityCT", "channels": {"0": "CT"},
        "labels": {"background": 0, "tumour": 1}, "profile": "ct-radiomics",
        "modality": ["0=CT"], "max_stages": 4, "patch": None,
    },
}


def write_case(name: str, seed: int, img_dir: Path, lbl_dir: Path | None, case: str, test: bool) -> dict:
    if name == "parity-petct":
        pet, ct, label, spacing, origin = make_petct_case(seed, test)
        write_nifti(img_dir / f"{case}_0000.nii.gz", pet, spacing, origin)
        write_nifti(img_dir / f"{case}_0001.nii.gz", ct, spacing, origin)
    else:
        ct, label, spacing, origin = make_ct_case(seed, test)
        write_nifti(img_dir / f"{case}_0000.nii.gz", ct, spacing, origin)
    if lbl_dir is not None:
        write_nifti(lbl_dir / f"{case}.nii.gz", label, spacing, origin)
    return {"case": case, "seed": seed, "shape_zyx": list(label.shape), "spacing_xyz": [round(s, 4) for s in spacing]}


MAX_ATTEMPTS = 4


def classes_missing(pred_dir: Path, labels: dict) -> list[str]:
    """The foreground classes some held-out prediction in pred_dir lacks."""
    import nibabel as nib
    import numpy as np

    missing = set()
    for f in sorted(pred_dir.glob("*.nii.gz")):
        present = set(np.unique(np.asarray(nib.load(str(f)).dataobj)).astype(int).tolist())
        missing |= {n for n, v in labels.items() if v != 0 and v not in present}
    return sorted(missing)


def run(cmd, log, env=None):
    t0 = time.time()
    log("$ " + " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-6000:])
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(str(c) for c in cmd)}")
    return time.time() - t0, p.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cases", type=int, default=10, help="training cases per dataset (>= 5; default 10)")
    ap.add_argument("--test-cases", type=int, default=3, help="held-out prediction inputs per dataset (default 3)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3, help="training iterations per epoch (default 3: longer CPU runs collapse to background on these tiny sets, which makes parity trivial)")
    ap.add_argument("--val-iters", type=int, default=1)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    ap.add_argument("--no-reference", action="store_true", help="skip nnUNetv2_predict on the held-out inputs")
    args = ap.parse_args(argv)
    if args.cases < 5:
        ap.error("--cases must be >= 5 (nnU-Net's 5-fold split)")
    ensure_nnunet_venv()
    import numpy as np

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t_start = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(nnunet_env(out))
    env.setdefault("nnUNet_n_proc_DA", "1")
    os.environ["nnUNet_n_proc_DA"] = env["nnUNet_n_proc_DA"]
    bindir = venv_bin()
    summary = {"root": str(out), "env": {k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")},
               "models": {}}

    for name in args.datasets:
        d = DATASETS[name]
        timing = {}
        t0 = time.time()
        raw = Path(env["nnUNet_raw"]) / d["dataset"]
        pre = Path(env["nnUNet_preprocessed"]) / d["dataset"]
        res = Path(env["nnUNet_results"]) / d["dataset"]
        for p in (raw, pre, res, out / name, out / "packages" / name):
            shutil.rmtree(p, ignore_errors=True)
        train_cases = [write_case(name, s, raw / "imagesTr", raw / "labelsTr", f"{name.replace('-', '_')}_{s:03d}",
                                  False) for s in range(args.cases)]
        test_cases = [write_case(name, 1000 + s, out / name / "imagesTs", out / name / "labelsTs",
                                 f"{name.replace('-', '_')}_test{s:02d}", True) for s in range(args.test_cases)]
        (raw / "dataset.json").write_text(json.dumps({
            "channel_names": d["channels"], "labels": d["labels"], "numTraining": args.cases,
            "file_ending": ".nii.gz", "name": d["dataset"].split("_", 1)[1],
            "description": "Synthetic data from tools/make_parity_models.py (edgeseg parity test); not for clinical use.",
        }, indent=4))
        timing["data_s"] = round(time.time() - t0, 1)

        # nnU-Net's planning and preprocessing, then the shrunk plans, then preprocessing again.
        dt, _ = run([bindir / "nnUNetv2_plan_and_preprocess", "-d", d["id"], "-c", CONFIG, "-np", "2",
                     "--verify_dataset_integrity"], log, env)
        timing["plan_and_preprocess_s"] = round(dt, 1)
        planned = json.loads((pre / "nnUNetPlans.json").read_text())["configurations"][CONFIG]
        shutil.copyfile(pre / "nnUNetPlans.json", pre / "nnUNetPlans.original.json")
        cfg = shrink_plans(pre / "nnUNetPlans.json", CONFIG, max_features=32, max_stages=d["max_stages"],
                           patch_size=d["patch"], first_stage_features=16)
        if cfg["patch_size"] != planned["patch_size"] or d["max_stages"]:
            # Preprocessing does not depend on the architecture; run it again anyway so the
            # preprocessed data are provably those of the final plans.
            dt, _ = run([bindir / "nnUNetv2_preprocess", "-d", d["id"], "-c", CONFIG, "-np", "2"], log, env)
            timing["preprocess_again_s"] = round(dt, 1)

        # A few CPU iterations leave the network close to its random start: on
        # some starts it predicts no voxel of a class in the held-out cases,
        # which would make that class's parity vacuous. Such a model is trained
        # again (a new random start), up to MAX_ATTEMPTS times.
        for attempt in range(1, MAX_ATTEMPTS + 1):
            shutil.rmtree(res, ignore_errors=True)
            shutil.rmtree(out / "packages" / name, ignore_errors=True)
            shutil.rmtree(out / name / "nnunet_pred", ignore_errors=True)
            t0 = time.time()
            fold_times = train_folds(d["dataset"], CONFIG, args.folds, epochs=args.epochs, iters=args.iters,
                                     val_iters=args.val_iters, log=log)
            timing["train_s"] = round(time.time() - t0, 1)
            timing["train_per_fold_s"] = fold_times
            results_folder = res / TRAINER_DIR

            pkg = out / "packages" / name
            dt, export_log = run([sys.executable, REPO / "tools" / "nnunet_export.py", "--trained-model", results_folder,
                                  "--folds", *args.folds, "--out", pkg, "--name", name, "--version", "0.1.0",
                                  "--profile", d["profile"], "--channel-modality", *d["modality"],
                                  "--note", "Synthetic parity model (tools/make_parity_models.py); not for clinical use."],
                                 log, env)
            timing["export_s"] = round(dt, 1)
            log(export_log)
            diffs = {}
            for line in export_log.splitlines():
                if line.startswith("fold ") and "max |ORT - PyTorch| = " in line:
                    diffs[int(line.split()[1].rstrip(":"))] = float(line.split("= ")[1].split()[0])

            ref_dir = None
            if not args.no_reference:
                ref_dir = out / name / "nnunet_pred"
                dt, _ = run([bindir / "nnUNetv2_predict", "-i", out / name / "imagesTs", "-o", ref_dir, "-d", d["id"],
                             "-c", CONFIG, "-f", *args.folds, "-tr", "nnUNetTrainer", "-p", "nnUNetPlans",
                             "-device", "cpu", "-npp", "1", "-nps", "1"], log, env)
                timing["nnunet_predict_s"] = round(dt, 1)
            missing = [] if ref_dir is None else classes_missing(ref_dir, d["labels"])
            timing["attempts"] = attempt
            if not missing:
                break
            log(f"{name}: attempt {attempt}: nnU-Net's held-out predictions lack {missing}; training again")
        else:
            raise SystemExit(f"{name}: after {MAX_ATTEMPTS} trainings the held-out predictions still lack {missing}")

        fp = json.loads((pre / "dataset_fingerprint.json").read_text())
        summary["models"][name] = {
            "dataset": d["dataset"],
            "results_folder": str(results_folder),
            "checkpoints": [str(results_folder / f"fold_{f}" / "checkpoint_final.pth") for f in args.folds],
            "package": str(pkg),
            "test_inputs": str(out / name / "imagesTs"),
            "test_labels": str(out / name / "labelsTs"),
            "nnunet_reference": str(ref_dir) if ref_dir else None,
            "folds": args.folds,
            "channels": d["channels"],
            "labels": d["labels"],
            "patch_size": cfg["patch_size"],
            "planned_patch_size": planned["patch_size"],
            "features_per_stage": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
            "target_spacing_zyx": cfg["spacing"],
            "median_spacing_zyx": [round(float(v), 4) for v in np.median(np.array(fp["spacings"]), 0)],
            "normalization_schemes": cfg["normalization_schemes"],
            "use_mask_for_norm": cfg["use_mask_for_norm"],
            "batch_size": cfg["batch_size"],
            "training": {"trainer": "nnUNetTrainer", "epochs": args.epochs, "iterations_per_epoch": args.iters,
                         "val_iterations_per_epoch": args.val_iters, "device": "cpu"},
            "ort_vs_pytorch_max_abs_diff": diffs,
            "train_cases": train_cases,
            "test_cases": test_cases,
            "timing_s": timing,
            "predict_command": (f"nnUNet_results={env['nnUNet_results']} nnUNetv2_predict -i {out / name / 'imagesTs'} "
                                f"-o OUT -d {d['id']} -c {CONFIG} -f {' '.join(map(str, args.folds))} "
                                f"-tr nnUNetTrainer -p nnUNetPlans -device cpu"),
        }
    summary["total_s"] = round(time.time() - t_start, 1)
    text = json.dumps(summary, indent=2)
    (out / "summary.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
