"""`edgeseg predict` as a drop-in for nnUNetv2_predict (issue 13, item 19): every flag of
nnunetv2's own argparse parser (read from the installed nnunetv2, not copied) is accepted
by `edgeseg predict`, and the command line the parity test gives nnUNetv2_predict, with
edgeseg in its place (plus -m and --onnxruntime), gives the labels of edgeseg's own
spelling voxel for voxel. Run by scripts/test-nnunet-parity.sh."""
import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np

PARITY = Path(os.environ["EDGESEG_PARITY"])
NNVENV = Path(os.environ["EDGESEG_NNUNET_VENV"])
EDGESEG = os.environ["EDGESEG_BIN"]
SUMMARY = json.loads((PARITY / "summary.json").read_text())
MODEL = SUMMARY["models"]["parity-ct"]

# nnUNetv2_predict's parser, captured when predict_entry_point asks it to parse.
CAPTURE = r"""
import argparse, json, sys
def capture(self, args=None, namespace=None):
    acts = [{"flags": a.option_strings, "flag_only": a.nargs == 0}
            for a in self._actions if not isinstance(a, argparse._HelpAction)]
    print("PARSER " + json.dumps(acts))
    sys.exit(0)
argparse.ArgumentParser.parse_args = capture
from nnunetv2.inference.predict_from_raw_data import predict_entry_point
predict_entry_point()
"""


def ort_lib() -> str:
    capi = next(NNVENV.glob("lib/python3*/site-packages/onnxruntime/capi"))
    return str(next(capi.glob("libonnxruntime.so*")))


def nnunet_flags():
    p = subprocess.run([str(NNVENV / "bin" / "python"), "-c", CAPTURE], capture_output=True, text=True, check=True)
    line = next(l for l in p.stdout.splitlines() if l.startswith("PARSER "))
    return json.loads(line[len("PARSER "):])


def labels(folder: Path):
    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def test_every_nnunetv2_predict_flag_is_accepted(tmp_path):
    out = tmp_path / "out"
    values = {
        "-i": [MODEL["test_inputs"]], "-o": [str(out)], "-d": [MODEL["dataset"]], "-p": ["nnUNetPlans"],
        "-tr": ["nnUNetTrainer"], "-c": ["3d_fullres"], "-f": ["0", "1"], "-step_size": ["0.5"],
        "-chk": ["checkpoint_final.pth"], "-npp": ["1"], "-nps": ["1"], "-num_parts": ["3"], "-part_id": ["2"],
        "-device": ["cpu"],
    }
    refused = {"-prev_stage_predictions"}
    argv = [EDGESEG, "predict"]
    for a in nnunet_flags():
        flag = a["flags"][0]
        if flag in refused:
            continue
        if a["flag_only"]:
            argv.append(flag)
        else:
            assert flag in values, f"nnUNetv2_predict has {flag}, which this test (and edgeseg?) does not know"
            argv += [flag, *values[flag]]
    argv += ["-m", MODEL["package"], "--onnxruntime", ort_lib()]
    p = subprocess.run(argv, capture_output=True, text=True)
    assert p.returncode == 0, (argv, p.stderr)
    # -num_parts 3 -part_id 2: the third case of the sorted list, only.
    # dataset.json and plans.json beside them, as nnUNetv2_predict writes them.
    assert sorted(x.name for x in out.iterdir()) == ["dataset.json", "parity_ct_test02.nii.gz",
                                                     "parity_ct_test02.npz", "plans.json"], p.stdout
    plans = json.loads((out / "plans.json").read_text())
    assert plans["dataset_name"] == MODEL["dataset"]
    p = subprocess.run([EDGESEG, "predict", "-i", MODEL["test_inputs"], "-o", str(tmp_path / "x"), "-m",
                        MODEL["package"], "-prev_stage_predictions", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1 and "cascaded models are not supported" in p.stderr, p.stderr


def test_nnunetv2_predict_command_line_with_edgeseg_substituted(tmp_path):
    # The command line test_nnunet_parity.py gives nnUNetv2_predict.
    nn_args = ["-i", MODEL["test_inputs"], "-o", str(tmp_path / "drop-in"), "-d", MODEL["dataset"], "-c", "3d_fullres",
               "-f", "0", "1", "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"]
    extra = ["-m", MODEL["package"], "--onnxruntime", ort_lib()]
    p = subprocess.run([EDGESEG, "predict", *nn_args, *extra], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    own = [EDGESEG, "predict", "-i", MODEL["test_inputs"], "-o", str(tmp_path / "own"), "-m", MODEL["package"],
           "-f", "0", "1", "--disable-tta", "--provider", "cpu", "--onnxruntime", ort_lib()]
    p = subprocess.run(own, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    a, b = labels(tmp_path / "drop-in"), labels(tmp_path / "own")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    # A -c the package was not exported from: both values named.
    bad = ["2d" if x == "3d_fullres" else x for x in nn_args]
    p = subprocess.run([EDGESEG, "predict", *bad, *extra], capture_output=True, text=True)
    assert p.returncode == 1 and "-c 2d contradicts the model package" in p.stderr and "3d_fullres" in p.stderr, p.stderr
