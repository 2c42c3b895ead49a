"""Shared helpers of the nnU-Net tools in tools/ (venv hand-off, hashing, NIfTI I/O, TOML).

Every tool imports this first and calls ``ensure_nnunet_venv()`` before importing torch or
nnunetv2: when the running interpreter lacks them, the tool re-executes itself with the
python of ``scripts/nnunet-venv.sh`` (building that venv if missing), so
``python3 tools/<tool>.py ...`` works from any python3.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_SCRIPT = REPO / "scripts" / "nnunet-venv.sh"
_REEXEC_FLAG = "EDGESEG_NNUNET_REEXEC"


def ensure_nnunet_venv() -> None:
    """Re-exec the current script in the nnU-Net venv unless torch and nnunetv2 import here."""
    try:
        import nnunetv2  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
        return
    except ImportError:
        if os.environ.get(_REEXEC_FLAG):
            raise
    venv = subprocess.run([str(VENV_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    py = os.path.join(venv, "bin", "python")
    os.environ[_REEXEC_FLAG] = "1"
    os.execv(py, [py, *sys.argv])


def venv_bin() -> Path:
    """bin/ of the interpreter running now (the nnU-Net venv after ensure_nnunet_venv)."""
    return Path(sys.executable).parent


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def toml_str(s: str) -> str:
    """A TOML basic string (JSON's escapes with ensure_ascii are all valid TOML escapes)."""
    return json.dumps(str(s), ensure_ascii=True)


def nnunet_env(root: str | os.PathLike) -> dict[str, str]:
    """nnUNet_raw / nnUNet_preprocessed / nnUNet_results under ROOT, set in os.environ too."""
    root = Path(root)
    env = {
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
    }
    for v in env.values():
        Path(v).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    return env


def write_nifti(path: str | os.PathLike, arr_zyx, spacing_xyz, origin_xyz=(0.0, 0.0, 0.0), direction=None) -> None:
    """Write a [z, y, x] numpy array as NIfTI through SimpleITK (nnU-Net's own reader)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing([float(s) for s in spacing_xyz])
    img.SetOrigin([float(o) for o in origin_xyz])
    if direction is not None:
        img.SetDirection([float(d) for d in direction])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def shrink_plans(plans_path: str | os.PathLike, configuration: str, max_features: int = 32,
                 max_stages: int | None = None, patch_size: list[int] | None = None,
                 first_stage_features: int | None = None) -> dict:
    """Make a planned configuration small enough for CPU training.

    Caps ``features_per_stage`` at ``max_features`` (and the first, full-resolution stage at
    ``first_stage_features``, which is where the CPU time goes); optionally drops the deepest stages
    (n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage and
    n_conv_per_stage_decoder cut together) and sets a smaller patch size, which must be
    divisible by the product of the remaining strides per axis. Everything else (spacing,
    normalisation, resampling, batch size, transposes) stays nnU-Net's own.
    Returns the edited configuration.
    """
    with open(plans_path) as f:
        plans = json.load(f)
    cfg = plans["configurations"][configuration]
    kw = cfg["architecture"]["arch_kwargs"]
    n = kw["n_stages"]
    if max_stages is not None and max_stages < n:
        n = max_stages
        kw["n_stages"] = n
        for key in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage"):
            if key in kw:
                kw[key] = kw[key][:n]
        if "n_conv_per_stage_decoder" in kw:
            kw["n_conv_per_stage_decoder"] = kw["n_conv_per_stage_decoder"][: n - 1]
    kw["features_per_stage"] = [min(int(x), max_features) for x in kw["features_per_stage"]]
    if first_stage_features is not None:
        kw["features_per_stage"][0] = min(kw["features_per_stage"][0], int(first_stage_features))
    if patch_size is not None:
        total = [1] * len(patch_size)
        for s in kw["strides"]:
            s = s if isinstance(s, list) else [s] * len(patch_size)
            total = [t * int(x) for t, x in zip(total, s)]
        for p, t in zip(patch_size, total):
            if p % t:
                raise ValueError(f"patch size {patch_size} not divisible by total stride {total}")
        cfg["patch_size"] = [int(p) for p in patch_size]
    with open(plans_path, "w") as f:
        json.dump(plans, f, indent=4, sort_keys=False)
    return cfg


def train_folds(dataset: str, configuration: str, folds, *, epochs: int, iters: int, val_iters: int,
                plans_identifier: str = "nnUNetPlans", threads: int | None = None,
                oversample_foreground: float | None = None, log=print) -> dict:
    """Train folds with nnU-Net's own ``nnUNetTrainer`` on the CPU, for fewer epochs/iterations.

    The trainer is nnunetv2's unmodified ``nnUNetTrainer`` (so ``nnUNetv2_predict -tr
    nnUNetTrainer`` finds it and the checkpoint names it): only the instance attributes
    ``num_epochs``, ``num_iterations_per_epoch`` and ``num_val_iterations_per_epoch`` (and, when
    given, ``oversample_foreground_percent``: the fraction of each batch whose patch is centred on
    a foreground voxel, nnU-Net's 0.33 otherwise) are set after construction, before ``run_training()``, which reads them (the poly LR schedule
    included). The final validation (``perform_actual_validation``) is skipped.
    Writes ``fold_K/checkpoint_final.pth`` in nnU-Net's format. Returns seconds per fold.
    """
    import contextlib
    import time

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    torch.set_num_threads(threads or os.cpu_count() or 1)
    name = maybe_convert_to_dataset_name(dataset)
    timings = {}
    for fold in folds:
        t0 = time.time()
        # nnUNetv2_train's own construction path (plans from nnUNet_preprocessed, fresh start).
        # The trainer prints its log to stdout: send it to stderr (stdout is the tools' JSON).
        with contextlib.redirect_stdout(sys.stderr):
            trainer = get_trainer_from_args(name, configuration, fold, "nnUNetTrainer", plans_identifier,
                                            False, device=torch.device("cpu"))
            trainer.num_epochs = epochs
            trainer.num_iterations_per_epoch = iters
            trainer.num_val_iterations_per_epoch = val_iters
            if oversample_foreground is not None:
                trainer.oversample_foreground_percent = oversample_foreground
            trainer.run_training()
        timings[fold] = round(time.time() - t0, 1)
        log(f"trained {name} fold {fold}: {epochs} epochs x {iters} iterations in {timings[fold]} s")
    return timings
