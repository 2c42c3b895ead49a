#!/usr/bin/env python3
"""Train the demo nnU-Net v2 PET/CT model (models/demo-petct/) on the phantom generator's studies.

    python3 tools/train_demo.py [--work DIR] [--out models/demo-petct] [--train-cases 20]
        [--test-cases 4] [--epochs 20] [--iters 40] [--val-iters 5] [--folds 0 1] [--seed 17]
        [--no-lesion-patches] [--edgeseg target/release/edgeseg] [--measure-only] [--fresh]

Steps (each skipped when its output already exists in --work, unless --fresh, so a run that
was stopped goes on where it stopped):

1. ``tests/fixtures/phantom.py --size small`` studies (the repository's .venv python, made by
   scripts/venv.sh): seeds 0..N-1 for training, 1000.. for the held-out test set, vendors and
   nuclides cycled.
2. nnU-Net raw format (Dataset777_DemoPETCT): channel 0 "PET" = truth/pet_suv.npy (SUVbw,
   [k,row,col]) on the PET grid, whose geometry is that of truth/labels_pet.nii.gz (the same as
   a SimpleITK read of dicom/PT); channel 1 "CT" = the CT DICOM series (SimpleITK
   ImageSeriesReader, HU) resampled onto the PET grid (linear, default -1000 HU); labels =
   truth/labels_pet.nii.gz (1 lesion, 2 liver).
3. ``nnUNetv2_plan_and_preprocess -c 3d_fullres``; the 3d_fullres configuration is shrunk for
   CPU (features per stage capped at 32, 16 in the first stage, patch size 48x64x64; spacing,
   normalisation and resampling stay nnU-Net's own) and the data preprocessed again.
4. nnunetv2's own ``nnUNetTrainer`` on the CPU, folds 0 and 1 of its 5-fold split, with
   ``--epochs`` x ``--iters`` iterations (default 20 x 40) instead of 1000 x 250; fold F seeded
   with ``--seed`` + F, and the foreground-oversampled patch of each batch centred on a lesion
   voxel (``lesion_patch_sampling``; nnU-Net picks lesion or liver at random, so a fold could
   see too few lesion patches in so short a schedule and learn none).
5. ``nnUNetv2_predict -device cpu`` (2-fold ensemble, mirroring on) on the held-out studies;
   Dice of lesion and liver against the generator's truth.
6. tools/nnunet_export.py into --out (profile petct-total-tumour, 0=PT 1=CT, clinical_use
   false) and README.md with the recipe and the held-out Dice.
7. With ``--edgeseg`` built: each fold alone and the ensemble through ``edgeseg predict`` and
   ``edgeseg evaluate`` on the held-out phantoms, per phantom, into the README
   (``--measure-only`` does only this, on the package already in --out).

The result is synthetic and not for clinical use. Runs in the venv of scripts/nnunet-venv.sh.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _nnunet_common import REPO, ensure_nnunet_venv, nnunet_env, shrink_plans, train_folds, venv_bin  # noqa: E402

DATASET_ID = 777
DATASET = "Dataset777_DemoPETCT"
CONFIG = "3d_fullres"
TRAINER_DIR = "nnUNetTrainer__nnUNetPlans__3d_fullres"
VENDORS = ("siemens", "philips", "ge")
NUCLIDES = ("cu64", "ga68")
LABELS = {"background": 0, "lesion": 1, "liver": 2}
LESION = LABELS["lesion"]
NOTE = "Trained on synthetic phantoms; not for clinical use."


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, env=None) -> float:
    t0 = time.time()
    log("$ " + " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-6000:])
        raise SystemExit(f"command failed ({p.returncode})")
    return time.time() - t0


def phantom_python() -> str:
    py = REPO / ".venv" / "bin" / "python"
    if not py.exists():
        subprocess.run([str(REPO / "scripts" / "venv.sh")], check=True, stdout=sys.stderr)
    return str(py)


def make_phantom(seed: int, out: Path) -> dict:
    vendor, nuclide = VENDORS[seed % 3], NUCLIDES[(seed // 3) % 2]
    if not (out / "truth" / "truth.json").exists():
        subprocess.run([phantom_python(), str(REPO / "tests" / "fixtures" / "phantom.py"), "--size", "small",
                        "--seed", str(seed), "--vendor", vendor, "--nuclide", nuclide, "--out", str(out), "-q"],
                       check=True, stdout=sys.stderr)
    return {"seed": seed, "vendor": vendor, "nuclide": nuclide}


def to_nnunet(study: Path, img_dir: Path, lbl_dir: Path, case: str) -> dict:
    """PET SUV + CT (resampled onto the PET grid) + labels, all on the PET grid."""
    import numpy as np
    import SimpleITK as sitk

    ref = sitk.ReadImage(str(study / "truth" / "labels_pet.nii.gz"))
    suv = np.load(study / "truth" / "pet_suv.npy").astype(np.float32)  # [k, row, col] == sitk's [z, y, x]
    if suv.shape != sitk.GetArrayViewFromImage(ref).shape:
        raise SystemExit(f"{study}: pet_suv {suv.shape} vs labels {sitk.GetArrayViewFromImage(ref).shape}")
    pet = sitk.GetImageFromArray(suv)
    pet.CopyInformation(ref)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(study / "dicom" / "CT")))
    ct = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    rs = sitk.ResampleImageFilter()
    rs.SetReferenceImage(ref)
    rs.SetInterpolator(sitk.sitkLinear)
    rs.SetDefaultPixelValue(-1000.0)
    rs.SetOutputPixelType(sitk.sitkFloat32)
    ct_pet = rs.Execute(ct)

    lbl = sitk.Cast(ref, sitk.sitkUInt8)
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(pet, str(img_dir / f"{case}_0000.nii.gz"), useCompression=True)
    sitk.WriteImage(ct_pet, str(img_dir / f"{case}_0001.nii.gz"), useCompression=True)
    sitk.WriteImage(lbl, str(lbl_dir / f"{case}.nii.gz"), useCompression=True)
    a = sitk.GetArrayViewFromImage(lbl)
    return {"case": case, "lesion_voxels": int((a == 1).sum()), "liver_voxels": int((a == 2).sum()),
            "lesion_suv_mean": round(float(suv[a == 1].mean()), 2) if (a == 1).any() else None}


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators seeded before a fold is built (the weights' initialisation
    and the sampling of patches follow from it; augmentation workers are forked from this process)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def lesion_patch_sampling(enabled: bool):
    """nnU-Net's foreground oversampling centred on a lesion voxel instead of a random foreground class.

    nnU-Net forces one patch of each batch of 2 (``oversample_foreground_percent`` 0.33) to be centred on a
    voxel of a foreground class chosen at random among those present (here lesion or liver), so a few
    hundred lesion voxels get a quarter of the batches and a fold can stay at a lesion Dice of 0. With this
    on, the forced patch is centred on a lesion voxel (``get_bbox``'s own ``overwrite_class`` argument; a
    case without lesions falls back to nnU-Net's choice), the other patch stays random. The data loader
    runs in processes forked from this one, which inherit the setting.
    """
    if not enabled:
        yield
        return
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    original = nnUNetDataLoader.get_bbox

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        if force_fg and overwrite_class is None and class_locations and len(class_locations.get(LESION, ())) > 0:
            overwrite_class = LESION
        return original(self, data_shape, force_fg, class_locations, overwrite_class, verbose)

    nnUNetDataLoader.get_bbox = get_bbox
    try:
        yield
    finally:
        nnUNetDataLoader.get_bbox = original


@contextlib.contextmanager
def lesion_weighted_ce(weight: float):
    """nnU-Net's cross-entropy term with the lesion class weighted ``weight`` (background and liver 1).

    nnU-Net's ``DC_and_CE_loss`` is kept (Dice over foreground classes plus cross-entropy, deep
    supervision as planned); only the ``weight`` of its ``RobustCrossEntropyLoss`` (torch's
    ``CrossEntropyLoss``) is set after ``_build_loss``. A few hundred lesion voxels against half a
    million others leave the lesion logits below the background's for far more iterations than this
    CPU schedule has (nnU-Net's own 1000 x 250 would get there): with weight 1 and both patches
    centred on lesions, fold 0 still had a lesion pseudo-Dice of 0 after 5 of 12 epochs. Training
    only: the network, its checkpoints and inference are nnU-Net's unchanged.
    """
    if weight == 1.0:
        yield
        return
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    original = nnUNetTrainer._build_loss

    def _build_loss(self):
        loss = original(self)
        inner = getattr(loss, "loss", loss)  # DeepSupervisionWrapper(DC_and_CE_loss)
        w = torch.ones(len(LABELS), dtype=torch.float32)
        w[LESION] = weight
        inner.ce.weight = w.to(self.device)
        return loss

    nnUNetTrainer._build_loss = _build_loss
    try:
        yield
    finally:
        nnUNetTrainer._build_loss = original


def dice(pred, truth, k: int):
    p, t = pred == k, truth == k
    den = int(p.sum()) + int(t.sum())
    return (2.0 * int((p & t).sum()) / den) if den else None, int((p & t).sum()), int(p.sum()), int(t.sum())


def evaluate(pred_dir: Path, lbl_dir: Path, cases: list[str]) -> dict:
    import SimpleITK as sitk

    per_case, tot = [], {1: [0, 0, 0], 2: [0, 0, 0]}
    for c in cases:
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / f"{c}.nii.gz")))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(lbl_dir / f"{c}.nii.gz")))
        row = {"case": c}
        for k, name in ((1, "lesion"), (2, "liver")):
            d, inter, npred, ntruth = dice(pred, truth, k)
            row[name] = round(d, 4) if d is not None else None
            tot[k][0] += inter
            tot[k][1] += npred
            tot[k][2] += ntruth
        per_case.append(row)
    out = {"per_case": per_case}
    for k, name in ((1, "lesion"), (2, "liver")):
        vals = [r[name] for r in per_case if r[name] is not None]
        out[f"{name}_dice_mean"] = round(sum(vals) / len(vals), 4) if vals else None
        i, p, t = tot[k]
        out[f"{name}_dice_pooled"] = round(2 * i / (p + t), 4) if p + t else None
    return out


EDGESEG_BEGIN = "<!-- edgeseg evaluate: written by tools/train_demo.py -->"
EDGESEG_END = "<!-- end of edgeseg evaluate -->"


def measure_with_edgeseg(edgeseg: Path, ort_lib: Path, model: Path, test_dir: Path, folds: list[int],
                         work: Path) -> dict:
    """Each fold alone and the ensemble through ``edgeseg predict`` (mirroring on, as shipped), then
    ``edgeseg evaluate --json`` against the generator's truth: {config: evaluation document}."""
    configs = {f"fold {f}": [f] for f in folds}
    configs["ensemble"] = list(folds)
    out = {}
    for name, fs in configs.items():
        pred = work / "edgeseg_pred" / name.replace(" ", "_")
        shutil.rmtree(pred, ignore_errors=True)
        run([edgeseg, "predict", "-i", test_dir / "imagesTs", "-o", pred, "-m", model, "-f", *fs,
             "--onnxruntime", ort_lib])
        p = subprocess.run([str(edgeseg), "evaluate", "--pred", str(pred), "--truth", str(test_dir / "labelsTs"),
                            "--label", "1", "2", "--json"], stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise SystemExit(f"edgeseg evaluate failed ({p.returncode})")
        out[name] = json.loads(p.stdout)
    return out


def edgeseg_section(figures: dict, cmdline: str) -> str:
    """The README's per-fold and ensemble figures per phantom, from ``measure_with_edgeseg``."""
    names = list(figures)
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    cases = [c["case"] for c in figures[names[0]]["cases"]]
    lines = [EDGESEG_BEGIN, "", "Measured with `edgeseg evaluate` (lesion = label 1, liver = label 2; lesions are "
             "26-connected components matched one to one at IoU ≥ 0.1; docs/evaluate.md), each fold alone and "
             "the ensemble through `edgeseg predict` with mirroring on:", "", f"    {cmdline}", "",
             "Lesion Dice (voxels of label 1) per held-out phantom:", "",
             "| phantom | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for n, case in enumerate(cases):
        lines.append(f"| {case} | " + " | ".join(fmt(figures[k]["cases"][n]["labels"].get("1", {}).get("dice"))
                                                for k in names) + " |")
    for what, key in (("mean", "mean"), ("SD", "sd")):
        lines.append(f"| {what} | " + " | ".join(
            fmt(figures[k]["summary"]["labels"]["1"]["per_case"]["dice"][key]) for k in names) + " |")
    lines.append("| pooled | " + " | ".join(fmt(figures[k]["summary"]["labels"]["1"]["pooled"]["dice"])
                                             for k in names) + " |")
    lines += ["", "Lesion-wise (seed 003: lesion Dice = 2·TP / (2·TP + FP + FN)) and liver Dice, pooled over the "
              "phantoms:", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    pooled = {k: figures[k]["summary"]["labels"]["1"]["pooled"] for k in names}
    lines.append("| lesions TP / FP / FN | " + " | ".join(f"{p['tp']} / {p['fp']} / {p['fn']}"
                                                         for p in pooled.values()) + " |")
    for label, key in (("lesion-wise sensitivity", "sensitivity"), ("lesion-wise precision", "precision"),
                       ("lesion Dice (seed 003)", "lesion_dice")):
        lines.append(f"| {label} | " + " | ".join(fmt(p[key]) for p in pooled.values()) + " |")
    lines.append("| liver Dice (mean) | " + " | ".join(
        fmt(figures[k]["summary"]["labels"].get("2", {}).get("per_case", {}).get("dice", {}).get("mean"))
        for k in names) + " |")
    lines += ["", EDGESEG_END]
    return "\n".join(lines) + "\n"


def write_edgeseg_section(readme: Path, section: str) -> None:
    """Puts the section into README.md (replacing an earlier one, else after the held-out result)."""
    text = readme.read_text()
    if EDGESEG_BEGIN in text and EDGESEG_END in text:
        head, rest = text.split(EDGESEG_BEGIN, 1)
        tail = rest.split(EDGESEG_END, 1)[1].lstrip("\n")
        text = head + section + "\n" + tail
    else:
        text = text.replace("\n## Training recipe", "\n" + section + "\n## Training recipe", 1)
    readme.write_text(text)


README = """# demo-petct: a small nnU-Net v2 PET/CT model trained on synthetic phantoms

**Not for clinical use.** This model was trained on synthetic phantoms only. It exists so that edgeseg's inference path
(model package → ONNX Runtime → nnU-Net pre/post-processing → lesions) can be demonstrated
and tested end to end without a user's own model.

Package layout and `model.toml` are described in `docs/model-package.md`. `model.toml`
checksums `plans.json`, `dataset.json` and the `fold_K.onnx` files; this README is not part
of the checksummed package.

## What it segments

Inputs (nnU-Net channel order): 0 = PET in SUVbw (`PET`, z-score normalisation), 1 = CT in HU
resampled onto the PET grid (`CT`, nnU-Net's CTNormalization). Labels: 0 background,
1 lesion, 2 liver. Configuration `3d_fullres`: target spacing {spacing} mm and patch
{patch}, both in nnU-Net's axis order (plans.json `transpose_forward` = {tf} applied to the
image's z, y, x axes); {n_params} parameters per fold; folds {folds} (logits averaged);
test-time mirroring on axes {mirror}.

## Held-out result

2-fold ensemble (`nnUNetv2_predict -device cpu`, mirroring on) on {n_test} held-out phantoms
(seeds {test_seeds}), against the generator's truth on the PET grid:

| | lesion Dice | liver Dice |
|---|---|---|
| mean over studies | {les_mean} | {liv_mean} |
| pooled over all voxels | {les_pool} | {liv_pool} |
{fold_rows}
Per study:

{per_case_table}

ONNX Runtime vs PyTorch (random input, batch 2), max absolute logit difference:
{ort_diffs}.

## Training recipe

`python3 tools/train_demo.py` ({train_minutes:.0f} min wall time on {cores} CPU cores; this run):

1. Data: {n_train} studies from `tests/fixtures/phantom.py --size small --seed S` (S = 0..{last_train};
   vendors siemens/philips/ge and nuclides cu64/ga68 cycled); PET 96×96×64 at
   4.17×4.17×4 mm. Channel PET = `truth/pet_suv.npy` on the PET grid (geometry of
   `truth/labels_pet.nii.gz`), CT = the CT DICOM series read with SimpleITK's
   ImageSeriesReader and resampled onto the PET grid (linear, outside = -1000 HU), labels =
   `truth/labels_pet.nii.gz`.
2. `nnUNetv2_plan_and_preprocess -d {dataset_id} -c 3d_fullres` (nnunetv2 {nnunet_version}); then
   the 3d_fullres configuration shrunk for CPU: features per stage {features} (planned
   {planned_features}), patch {patch} (planned {planned_patch}); everything else as planned.
3. nnunetv2's `nnUNetTrainer` (the class nnUNetv2_predict loads; set on the instance: the schedule,
   `oversample_foreground_percent` 1.0 with each forced patch centred on a lesion voxel, and the
   lesion class weighted 10 in the cross-entropy term, training only: `--oversample-fg`,
   `--lesion-patches`, `--lesion-ce-weight`; with nnU-Net's 0.33 and weight 1 the lesion
   pseudo-Dice stayed 0 for 12 epochs on this schedule) on
   the CPU, folds {folds} of nnU-Net's 5-fold split, {schedule} (epochs × iterations;
   batch {batch_size}; nnU-Net's default is 1000 × 250), poly learning rate from 0.01,
   nnU-Net's augmentation; `checkpoint_final.pth`. Training time per fold: {fold_times}.
4. `tools/nnunet_export.py --folds {folds_args} --profile petct-total-tumour --channel-modality 0=PT 1=CT`
   (opset 17, input `input` [N, 2, {patch_str}], output `logits` [N, 3, {patch_str}]).

Versions: torch {torch_version}, nnunetv2 {nnunet_version}, onnxruntime {ort_version}
(`requirements/nnunet.txt`).
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    default_work = Path(os.environ.get("EDGESEG_CACHE", Path.home() / ".cache" / "edgeseg")) / "demo-train"
    ap.add_argument("--work", type=Path, default=default_work, help=f"working folder (default {default_work})")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "demo-petct")
    ap.add_argument("--train-cases", type=int, default=20)
    ap.add_argument("--test-cases", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--val-iters", type=int, default=5)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--seed", type=int, default=17, help="fold F is trained with seed SEED+F (default 17)")
    ap.add_argument("--lesion-patches", action=argparse.BooleanOptionalAction, default=True,
                    help="centre nnU-Net's foreground-oversampled patch on a lesion voxel (default on)")
    ap.add_argument("--oversample-fg", type=float, default=1.0,
                    help="fraction of each batch centred on a foreground (with --lesion-patches: lesion) voxel; "
                         "nnU-Net's own is 0.33 (default 1.0: both patches of a batch of 2)")
    ap.add_argument("--lesion-ce-weight", type=float, default=10.0,
                    help="weight of the lesion class in nnU-Net's cross-entropy term (training only; default 10)")
    ap.add_argument("--patch", type=int, nargs=3, default=[48, 64, 64])
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--fresh", action="store_true", help="start over (delete --work)")
    ap.add_argument("--edgeseg", type=Path, default=REPO / "target" / "release" / "edgeseg",
                    help="the edgeseg binary that measures the package (edgeseg predict + evaluate)")
    ap.add_argument("--measure-only", action="store_true",
                    help="only measure the package in --out on the held-out phantoms of --work with --edgeseg "
                         "and rewrite that section of its README")
    args = ap.parse_args(argv)
    ensure_nnunet_venv()
    import numpy as np  # noqa: F401
    import onnxruntime
    import torch
    from importlib.metadata import version as pkg_version

    t_start = time.time()
    work = args.work.resolve()
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(nnunet_env(work))
    env.setdefault("nnUNet_n_proc_DA", "1")
    os.environ["nnUNet_n_proc_DA"] = env["nnUNet_n_proc_DA"]
    bindir = venv_bin()
    state_path = work / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"timing_s": {}}

    def save():
        state_path.write_text(json.dumps(state, indent=2) + "\n")

    raw = Path(env["nnUNet_raw"]) / DATASET
    pre = Path(env["nnUNet_preprocessed"]) / DATASET
    res = Path(env["nnUNet_results"]) / DATASET / TRAINER_DIR
    test_dir = work / "test"
    ort_lib = Path(onnxruntime.__file__).parent / "capi"
    ort_lib = next(ort_lib.glob("libonnxruntime.so*"))
    cmdline = ("edgeseg predict -i imagesTs -o PRED -m models/demo-petct -f FOLDS; "
               "edgeseg evaluate --pred PRED --truth labelsTs --label 1 2 --json")
    if args.measure_only:
        figures = measure_with_edgeseg(args.edgeseg.resolve(), ort_lib, args.out.resolve(), test_dir, args.folds, work)
        write_edgeseg_section(args.out.resolve() / "README.md", edgeseg_section(figures, cmdline))
        print(json.dumps({k: v["summary"] for k, v in figures.items()}, indent=2))
        return 0

    # 1-2. Phantoms and nnU-Net raw data.
    if not (raw / "dataset.json").exists():
        t0 = time.time()
        shutil.rmtree(raw, ignore_errors=True)
        train, test = [], []
        for s in range(args.train_cases):
            info = make_phantom(s, work / "phantoms" / f"seed{s:04d}")
            info.update(to_nnunet(work / "phantoms" / f"seed{s:04d}", raw / "imagesTr", raw / "labelsTr",
                                  f"demo_{s:04d}"))
            train.append(info)
        for i in range(args.test_cases):
            s = 1000 + i
            info = make_phantom(s, work / "phantoms" / f"seed{s:04d}")
            info.update(to_nnunet(work / "phantoms" / f"seed{s:04d}", test_dir / "imagesTs", test_dir / "labelsTs",
                                  f"demo_{s:04d}"))
            test.append(info)
        (raw / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "PET", "1": "CT"}, "labels": LABELS, "numTraining": args.train_cases,
            "file_ending": ".nii.gz", "name": "DemoPETCT",
            "description": "Synthetic DOTATATE PET/CT phantoms (tests/fixtures/phantom.py --size small); "
                           "not for clinical use.",
        }, indent=4))
        state.update(train=train, test=test)
        state["timing_s"]["data"] = round(time.time() - t0, 1)
        save()
        log(f"data: {len(train)} training + {len(test)} test studies in {state['timing_s']['data']} s")

    # 3. Plan, shrink, preprocess.
    if not (pre / "nnUNetPlans.original.json").exists():
        shutil.rmtree(pre, ignore_errors=True)
        t0 = time.time()
        run([bindir / "nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", CONFIG, "-np", "2",
             "--verify_dataset_integrity"], env)
        planned = json.loads((pre / "nnUNetPlans.json").read_text())["configurations"][CONFIG]
        cfg = shrink_plans(pre / "nnUNetPlans.json", CONFIG, max_features=32, patch_size=args.patch,
                           first_stage_features=16)
        run([bindir / "nnUNetv2_preprocess", "-d", DATASET_ID, "-c", CONFIG, "-np", "2"], env)
        shutil.copyfile(pre / "nnUNetPlans.json", pre / "nnUNetPlans.shrunk.json")
        state["planned"] = {"patch_size": planned["patch_size"],
                            "features_per_stage": planned["architecture"]["arch_kwargs"]["features_per_stage"],
                            "batch_size": planned["batch_size"]}
        state["config"] = {"patch_size": cfg["patch_size"], "spacing": cfg["spacing"],
                           "features_per_stage": cfg["architecture"]["arch_kwargs"]["features_per_stage"],
                           "batch_size": cfg["batch_size"], "normalization_schemes": cfg["normalization_schemes"]}
        # Written last: marks the step as done.
        (pre / "nnUNetPlans.original.json").write_text(json.dumps(planned, indent=4))
        state["timing_s"]["plan_preprocess"] = round(time.time() - t0, 1)
        save()
        log(f"planned: {state['planned']} -> {state['config']}")

    # 4. Train (folds with a checkpoint_final.pth are kept).
    state["timing_s"].setdefault("train_per_fold", {})
    for f in args.folds:
        if (res / f"fold_{f}" / "checkpoint_final.pth").exists():
            continue
        shutil.rmtree(res / f"fold_{f}", ignore_errors=True)
        with lesion_patch_sampling(args.lesion_patches), lesion_weighted_ce(args.lesion_ce_weight):
            seed_everything(args.seed + f)
            t = train_folds(DATASET, CONFIG, [f], epochs=args.epochs, iters=args.iters, val_iters=args.val_iters,
                            oversample_foreground=args.oversample_fg, log=log)
        state["timing_s"]["train_per_fold"][str(f)] = t[f]
        state["training"] = {"epochs": args.epochs, "iters": args.iters, "val_iters": args.val_iters,
                             "seed": args.seed + f, "lesion_patches": args.lesion_patches,
                             "oversample_foreground": args.oversample_fg,
                             "lesion_ce_weight": args.lesion_ce_weight}
        state.setdefault("training_per_fold", {})[str(f)] = dict(state["training"])
        save()

    # 5. Held-out evaluation with nnUNetv2_predict.
    pred_dir = work / "test" / "nnunet_pred"
    cases = [t["case"] for t in state["test"]]
    shutil.rmtree(pred_dir, ignore_errors=True)
    dt = run([bindir / "nnUNetv2_predict", "-i", test_dir / "imagesTs", "-o", pred_dir, "-d", DATASET_ID,
              "-c", CONFIG, "-f", *args.folds, "-tr", "nnUNetTrainer", "-p", "nnUNetPlans", "-device", "cpu",
              "-npp", "1", "-nps", "1"], env)
    state["timing_s"]["nnunet_predict"] = round(dt, 1)
    state["eval"] = evaluate(pred_dir, test_dir / "labelsTs", cases)
    save()
    # Each fold alone, for the record.
    state["eval_per_fold"] = {}
    if len(args.folds) > 1:
        for f in args.folds:
            fdir = work / "test" / f"nnunet_pred_fold{f}"
            shutil.rmtree(fdir, ignore_errors=True)
            run([bindir / "nnUNetv2_predict", "-i", test_dir / "imagesTs", "-o", fdir, "-d", DATASET_ID,
                 "-c", CONFIG, "-f", f, "-tr", "nnUNetTrainer", "-p", "nnUNetPlans", "-device", "cpu",
                 "-npp", "1", "-nps", "1"], env)
            ev = evaluate(fdir, test_dir / "labelsTs", cases)
            state["eval_per_fold"][str(f)] = {k: v for k, v in ev.items() if k != "per_case"}
        save()
    log(f"held-out Dice: {json.dumps({k: v for k, v in state['eval'].items() if k != 'per_case'})}")

    # 6. Export and README.
    out = args.out.resolve()
    t0 = time.time()
    p = subprocess.run([sys.executable, str(REPO / "tools" / "nnunet_export.py"), "--trained-model", str(res),
                        "--folds", *map(str, args.folds), "--out", str(out), "--name", "demo-petct",
                        "--version", args.version, "--profile", "petct-total-tumour",
                        "--channel-modality", "0=PT", "1=CT", "--note", NOTE],
                       env=env, stdout=subprocess.PIPE, text=True)
    sys.stderr.write(p.stdout)
    if p.returncode != 0:
        raise SystemExit("export failed")
    fold_lines = [ln for ln in p.stdout.splitlines() if ln.startswith("fold ") and "max |ORT - PyTorch|" in ln]
    diffs = {int(ln.split()[1].rstrip(":")): ln.split("= ")[1].split()[0] for ln in fold_lines}
    n_params = int(fold_lines[0].split(" parameters;")[0].split()[-1])
    state["ort_vs_pytorch_max_abs_diff"] = diffs
    state["timing_s"]["export"] = round(time.time() - t0, 1)

    ck = torch.load(str(res / f"fold_{args.folds[0]}" / "checkpoint_final.pth"), map_location="cpu",
                    weights_only=False)
    ev = state["eval"]
    table = ["| study (seed) | lesion Dice | liver Dice | lesion voxels (truth) |", "|---|---|---|---|"]
    for r, t in zip(ev["per_case"], state["test"]):
        table.append(f"| {r['case']} ({t['seed']}, {t['vendor']}, {t['nuclide']}) | {r['lesion']} | {r['liver']} "
                     f"| {t['lesion_voxels']} |")
    total_min = (sum(state["timing_s"].get(k, 0) for k in ("data", "plan_preprocess", "nnunet_predict", "export"))
                 + sum(state["timing_s"]["train_per_fold"].values())) / 60
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    cfg = state["config"]
    readme = README.format(
        note=NOTE, tf=json.loads((res / "plans.json").read_text())["transpose_forward"], spacing=", ".join(f"{s:.3f}" for s in cfg["spacing"]), patch="×".join(map(str, cfg["patch_size"])),
        n_params=f"{n_params:,}", folds=", ".join(map(str, args.folds)),
        mirror=list(ck.get("inference_allowed_mirroring_axes") or []), n_test=len(cases),
        test_seeds=", ".join(str(t["seed"]) for t in state["test"]),
        les_mean=fmt(ev["lesion_dice_mean"]), liv_mean=fmt(ev["liver_dice_mean"]),
        les_pool=fmt(ev["lesion_dice_pooled"]), liv_pool=fmt(ev["liver_dice_pooled"]),
        per_case_table="\n".join(table),
        fold_rows="".join(f"| fold {f} alone (mean over studies) | {fmt(e['lesion_dice_mean'])} | "
                          f"{fmt(e['liver_dice_mean'])} |\n" for f, e in sorted(state["eval_per_fold"].items())),
        ort_diffs=", ".join(f"fold {k}: {v}" for k, v in sorted(diffs.items())),
        train_minutes=total_min, cores=os.cpu_count(), n_train=len(state["train"]),
        last_train=len(state["train"]) - 1, dataset_id=DATASET_ID, nnunet_version=pkg_version("nnunetv2"),
        features=cfg["features_per_stage"], planned_features=state["planned"]["features_per_stage"],
        planned_patch="×".join(map(str, state["planned"]["patch_size"])),
        schedule=", ".join(f"fold {k}: {v['epochs']} × {v['iters']}"
                           for k, v in sorted(state.get("training_per_fold", {}).items())),
        batch_size=cfg["batch_size"],
        fold_times=", ".join(f"fold {k} {v / 60:.1f} min" for k, v in sorted(state["timing_s"]["train_per_fold"].items())),
        folds_args=" ".join(map(str, args.folds)), patch_str=", ".join(map(str, cfg["patch_size"])),
        torch_version=torch.__version__, ort_version=onnxruntime.__version__)
    (out / "README.md").write_text(readme)
    if args.edgeseg.exists():
        figures = measure_with_edgeseg(args.edgeseg.resolve(), ort_lib, out, test_dir, args.folds, work)
        write_edgeseg_section(out / "README.md", edgeseg_section(figures, cmdline))
        state["edgeseg_evaluate"] = {k: v["summary"] for k, v in figures.items()}
    else:
        log(f"{args.edgeseg}: not built; the README has no edgeseg evaluate figures (cargo build --release)")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    state["package_bytes"] = size
    state["timing_s"]["total_this_run"] = round(time.time() - t_start, 1)
    save()
    if size > 25 * 1024 * 1024:
        raise SystemExit(f"{out}: {size / 1e6:.1f} MB exceeds 25 MB")
    print(json.dumps({k: state[k] for k in ("eval", "eval_per_fold", "ort_vs_pytorch_max_abs_diff", "timing_s", "config", "planned",
                                            "training", "package_bytes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
