"""Parity with nnU-Net itself: `edgeseg predict` and `nnUNetv2_predict -device cpu`
on the same inputs, folds and TTA setting give Dice >= 0.99 per class.

Models (tools/make_parity_models.py, made by nnunetv2's own planner, preprocessor and
trainer, exported with tools/nnunet_export.py):
  parity-petct: 2 channels (PET z-score + CT CTNormalization), near-isotropic spacing, 3 classes
  parity-ct:    1 channel CT, anisotropic spacing (separate-z resampling), 2 classes
Run by scripts/test-nnunet-parity.sh (slow: it needs torch + nnunetv2)."""
import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

PARITY = Path(os.environ["EDGESEG_PARITY"])
NNVENV = Path(os.environ["EDGESEG_NNUNET_VENV"])
EDGESEG = os.environ["EDGESEG_BIN"]
SUMMARY = json.loads((PARITY / "summary.json").read_text())


def ort_lib() -> str:
    """EDGESEG_ORT_LIB (with EDGESEG_PROVIDER, e.g. the onnxruntime-openvino wheel's library and
    openvino), else the nnU-Net venv's onnxruntime CPU library."""
    if os.environ.get("EDGESEG_ORT_LIB"):
        return os.environ["EDGESEG_ORT_LIB"]
    capi = next(NNVENV.glob("lib/python3*/site-packages/onnxruntime/capi"))
    return str(next(capi.glob("libonnxruntime.so*")))


def nnunet_predict(model: dict, out: Path, folds, tta: bool) -> Path:
    env = dict(os.environ, **SUMMARY["env"])
    cmd = [str(NNVENV / "bin" / "nnUNetv2_predict"), "-i", model["test_inputs"], "-o", str(out),
           "-d", model["dataset"], "-c", "3d_fullres", "-f", *map(str, folds), "-device", "cpu",
           "-npp", "1", "-nps", "1"]
    if not tta:
        cmd.append("--disable_tta")
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return out


def edgeseg_predict(model: dict, out: Path, folds, tta: bool) -> Path:
    cmd = [EDGESEG, "predict", "-i", model["test_inputs"], "-o", str(out), "-m", model["package"],
           "-f", *map(str, folds), "--onnxruntime", ort_lib(),
           "--provider", os.environ.get("EDGESEG_PROVIDER", "cpu")]
    if os.environ.get("EDGESEG_BF16") == "1":  # OpenVINO in BF16 (with EDGESEG_PROVIDER=openvino)
        cmd.append("--bf16")
    if not tta:
        cmd.append("--disable-tta")
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


def dice_per_class(a: np.ndarray, b: np.ndarray, classes):
    out = {}
    for c in classes:
        x, y = a == c, b == c
        denom = x.sum() + y.sum()
        out[c] = 1.0 if denom == 0 else 2.0 * (x & y).sum() / denom
    return out


CASES = [(name, tta) for name in ("parity-petct", "parity-ct") for tta in (True, False)]


@pytest.mark.parametrize("name,tta", CASES, ids=[f"{n}-{'tta' if t else 'notta'}" for n, t in CASES])
def test_edgeseg_matches_nnunet(tmp_path, name, tta):
    model = SUMMARY["models"][name]
    folds = model["folds"]
    assert len(folds) == 2
    ref = Path(model["nnunet_reference"]) if tta else nnunet_predict(model, tmp_path / "nnunet", folds, tta)
    ours = edgeseg_predict(model, tmp_path / "edgeseg", folds, tta)
    classes = [v for v in model["labels"].values() if v != 0]
    cases = sorted(p.name for p in ref.glob("*.nii.gz"))
    assert cases, f"no nnU-Net predictions in {ref}"
    for case in cases:
        a_img, b_img = nib.load(str(ref / case)), nib.load(str(ours / case))
        a, b = np.asarray(a_img.dataobj), np.asarray(b_img.dataobj)
        assert a.shape == b.shape, case
        np.testing.assert_allclose(a_img.affine, b_img.affine, atol=1e-3)
        dice = dice_per_class(a, b, classes)
        # Shown with pytest -s (BENCHMARKS.md records them).
        print(f"\nparity {name} {case} tta={tta}: " + " ".join(f"class {c} Dice {d:.5f}" for c, d in dice.items()))
        for c, d in dice.items():
            assert d >= 0.99, f"{name} {case} class {c}: Dice {d:.4f} (tta={tta})"
        # The predictions are not trivial: every class is present in nnU-Net's output.
        assert all((a == c).sum() > 0 for c in classes), f"{case}: a class is missing from nnU-Net's prediction"
