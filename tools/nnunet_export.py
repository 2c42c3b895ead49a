#!/usr/bin/env python3
"""Export a trained nnU-Net v2 model (results folder) to an edgeseg model package.

    python3 tools/nnunet_export.py --trained-model DIR --folds 0 1 2 3 4 \\
        [--checkpoint checkpoint_final.pth] --out MODEL_DIR [--name NAME] [--version V] \\
        [--profile petct-total-tumour|ct-screening|ct-radiomics] [--channel-modality 0=PT 1=CT] \\
        [--clinical-use] [--note TEXT] [--opset 17]

DIR is an nnU-Net v2 results folder ``DatasetXXX_Name/Trainer__Plans__Configuration`` with
``plans.json``, ``dataset.json`` and ``fold_K/<checkpoint>``. For every fold the network is
rebuilt exactly as ``nnUNetPredictor.initialize_from_trained_model_folder`` of the installed
nnunetv2 does (trainer class from the checkpoint's ``trainer_name``, its
``build_network_architecture`` with ``enable_deep_supervision=False``, ``load_state_dict`` of
``network_weights``, eval mode), exported with PyTorch's TorchScript-based ONNX exporter
(``dynamo=False``) as ``fold_K.onnx``: input ``input`` [N, C, *patch_size], output ``logits``
[N, K, *patch_size], N dynamic, the patch size fixed from the plans' configuration. ONNX
Runtime (CPU) is then checked against PyTorch on a random batch of 2; the largest absolute
difference is printed per fold and the tool exits 1 (writing no package) above --tolerance
(default 1e-3).

MODEL_DIR gets plans.json and dataset.json (copied byte for byte), fold_K.onnx and
model.toml (docs/model-package.md). Files in MODEL_DIR that the package does not manage
(a README.md, say) are left alone; stale fold_*.onnx are removed.

Runs in the venv of scripts/nnunet-venv.sh (re-executes itself there when torch or
nnunetv2 is missing from the current interpreter).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _nnunet_common import ensure_nnunet_venv, sha256_file, toml_str  # noqa: E402

PROFILES = ("petct-total-tumour", "ct-screening", "ct-radiomics")
DEFAULT_MODALITY = {"CT": "CT", "PET": "PT", "PT": "PT", "SUV": "PT", "MR": "MR", "MRI": "MR", "T1": "MR",
                    "T2": "MR", "ADC": "MR", "FLAIR": "MR"}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--trained-model", required=True, type=Path,
                    help="nnU-Net results folder DatasetXXX_Name/Trainer__Plans__Configuration")
    ap.add_argument("--folds", required=True, nargs="+", type=int, help="folds to export, e.g. 0 1 2 3 4")
    ap.add_argument("--checkpoint", default="checkpoint_final.pth")
    ap.add_argument("--out", required=True, type=Path, help="model package folder to write")
    ap.add_argument("--name", help="model name (default: the dataset name from plans.json)")
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--profile", choices=PROFILES, default="petct-total-tumour")
    ap.add_argument("--channel-modality", nargs="+", default=None, metavar="IDX=MOD",
                    help="DICOM modality feeding each channel, e.g. 0=PT 1=CT (default: from the channel "
                         "names: CT->CT, PET/PT/SUV->PT, MR names->MR)")
    ap.add_argument("--clinical-use", action="store_true",
                    help="mark the package as cleared for clinical use by its owner (default: false)")
    ap.add_argument("--note", default=None, help="free text stored in model.toml")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--tolerance", type=float, default=1e-3, help="max |ORT - PyTorch| allowed (default 1e-3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random check input")
    a = ap.parse_args(argv)
    if a.opset < 17:
        ap.error("--opset must be >= 17")
    if len(set(a.folds)) != len(a.folds) or min(a.folds) < 0:
        ap.error("--folds must be distinct non-negative integers")
    return a


def channel_modalities(channel_names: dict, spec: list[str] | None) -> list[tuple[int, str, str]]:
    n = len(channel_names)
    names = [channel_names[str(i)] for i in range(n)]
    mods: dict[int, str] = {}
    if spec:
        for item in spec:
            m = re.fullmatch(r"(\d+)=([A-Za-z]{2})", item.strip())
            if not m:
                raise SystemExit(f"--channel-modality: {item!r} is not IDX=MOD (e.g. 0=PT)")
            i = int(m.group(1))
            if i >= n:
                raise SystemExit(f"--channel-modality: channel {i} does not exist ({n} channels: {names})")
            mods[i] = m.group(2).upper()
    for i, nm in enumerate(names):
        if i not in mods:
            guess = DEFAULT_MODALITY.get(nm.strip().upper())
            if guess is None:
                raise SystemExit(f"channel {i} ({nm!r}): no default DICOM modality; pass --channel-modality {i}=XX")
            mods[i] = guess
    return [(i, names[i], mods[i]) for i in range(n)]


def build_network(plans: dict, dataset_json: dict, checkpoint: dict):
    """The network exactly as nnUNetPredictor.initialize_from_trained_model_folder builds it."""
    import inspect

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(checkpoint["init_args"]["configuration"])
    num_input_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    trainer_class = recursive_find_trainer_class_by_name(checkpoint["trainer_name"])
    num_output_channels = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    sig = inspect.signature(trainer_class.build_network_architecture)
    if "plans_manager" in sig.parameters:
        network = trainer_class.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision=False)
    else:
        network = trainer_class.build_network_architecture(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels, num_output_channels, enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    network.eval()
    return network, configuration_manager, num_input_channels, num_output_channels


def export_fold(network, path: Path, n_in: int, patch: list[int], opset: int) -> None:
    import torch

    dummy = torch.zeros((1, n_in, *patch), dtype=torch.float32)
    with torch.no_grad():
        torch.onnx.export(
            network, (dummy,), str(path), dynamo=False, export_params=True, opset_version=opset,
            do_constant_folding=True, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def check_fold(network, path: Path, n_in: int, n_out: int, patch: list[int], opset: int, seed: int):
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    got_opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if got_opset < opset:
        raise SystemExit(f"{path}: opset {got_opset} < {opset}")
    ins = [i.name for i in model.graph.input]
    outs = [o.name for o in model.graph.output]
    if ins != ["input"] or outs != ["logits"]:
        raise SystemExit(f"{path}: inputs {ins}, outputs {outs}; want ['input'], ['logits']")

    def dims(vi):
        return [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]

    if dims(model.graph.input[0])[1:] != [n_in, *patch] or dims(model.graph.output[0])[1:] != [n_out, *patch]:
        raise SystemExit(f"{path}: shapes {dims(model.graph.input[0])} -> {dims(model.graph.output[0])}")
    ops = sorted({n.op_type for n in model.graph.node})
    del model

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, n_in, *patch), dtype=np.float32)
    with torch.no_grad():
        ref = network(torch.from_numpy(x)).numpy()
    so = ort.SessionOptions()
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    if got.shape != ref.shape:
        raise SystemExit(f"{path}: ORT shape {got.shape} != PyTorch {ref.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    return diff, float(np.max(np.abs(ref))), ops


def main(argv=None) -> int:
    args = parse_args(argv)
    ensure_nnunet_venv()
    import torch

    src = args.trained_model.resolve()
    plans_path, dataset_path = src / "plans.json", src / "dataset.json"
    for p in (plans_path, dataset_path):
        if not p.is_file():
            raise SystemExit(f"{p}: missing (is {src} an nnU-Net results folder Trainer__Plans__Configuration?)")
    plans = json.loads(plans_path.read_text())
    dataset_json = json.loads(dataset_path.read_text())
    channel_names = dataset_json.get("channel_names") or dataset_json.get("modality")
    if not channel_names:
        raise SystemExit(f"{dataset_path}: no channel_names")
    channels = channel_modalities(channel_names, args.channel_modality)

    t_all = time.time()
    torch.manual_seed(args.seed)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        trainer = configuration = None
        mirror_axes = None
        patch = None
        results = []
        for fold in args.folds:
            ckpt_path = src / f"fold_{fold}" / args.checkpoint
            if not ckpt_path.is_file():
                raise SystemExit(f"{ckpt_path}: missing")
            ckpt = torch.load(str(ckpt_path), map_location=torch.device("cpu"), weights_only=False)
            cfg_name = ckpt["init_args"]["configuration"]
            mir = ckpt.get("inference_allowed_mirroring_axes")
            mir = [] if mir is None else [int(m) for m in mir]
            if trainer is None:
                trainer, configuration, mirror_axes = ckpt["trainer_name"], cfg_name, mir
            elif (ckpt["trainer_name"], cfg_name, mir) != (trainer, configuration, mirror_axes):
                raise SystemExit(f"fold {fold}: trainer/configuration/mirroring ({ckpt['trainer_name']}, {cfg_name}, "
                                 f"{mir}) differ from the first fold's ({trainer}, {configuration}, {mirror_axes})")
            t0 = time.time()
            network, cm, n_in, n_out = build_network(plans, dataset_json, ckpt)
            patch = [int(p) for p in cm.patch_size]
            if len(patch) != 3:
                raise SystemExit(f"configuration {cfg_name}: patch size {patch} is not 3D")
            onnx_path = work / f"fold_{fold}.onnx"
            export_fold(network, onnx_path, n_in, patch, args.opset)
            diff, ref_max, ops = check_fold(network, onnx_path, n_in, n_out, patch, args.opset, args.seed + fold)
            n_params = sum(p.numel() for p in network.parameters())
            print(f"fold {fold}: max |ORT - PyTorch| = {diff:.3e} (max |logit| {ref_max:.3f}; batch 2; "
                  f"patch {patch}; {n_in} -> {n_out} channels; {n_params} parameters; "
                  f"{onnx_path.stat().st_size / 1e6:.2f} MB; ops {','.join(ops)}; {time.time() - t0:.1f} s)",
                  flush=True)
            results.append((fold, diff))
            del network, ckpt
        bad = [(f, d) for f, d in results if not d <= args.tolerance]
        if bad:
            print(f"FAILED: max |ORT - PyTorch| above {args.tolerance:g} for folds {[f for f, _ in bad]}; "
                  f"no package written", file=sys.stderr)
            return 1

        expected_dir = f"{trainer}__"
        if not src.name.startswith(expected_dir) or not src.name.endswith(f"__{configuration}"):
            print(f"warning: folder name {src.name} does not read {trainer}__<plans>__{configuration}",
                  file=sys.stderr)
        plans_identifier = plans.get("plans_name") or src.name.split("__")[1]
        shutil.copyfile(plans_path, work / "plans.json")
        shutil.copyfile(dataset_path, work / "dataset.json")
        names = ["plans.json", "dataset.json"] + [f"fold_{f}.onnx" for f in args.folds]
        files = {n: sha256_file(work / n) for n in names}
        name = args.name or plans.get("dataset_name") or src.parent.name
        note = args.note if args.note is not None else (
            f"Exported by tools/nnunet_export.py from {src.parent.name}/{src.name} ({args.checkpoint}).")

        lines = [
            f"name = {toml_str(name)}",
            f"version = {toml_str(args.version)}",
            f"configuration = {toml_str(configuration)}",
            f"trainer = {toml_str(trainer)}",
            f"plans_identifier = {toml_str(plans_identifier)}",
            f"profile = {toml_str(args.profile)}",
            f"folds = [{', '.join(str(f) for f in args.folds)}]",
            f"onnx_opset = {args.opset}",
            f"clinical_use = {'true' if args.clinical_use else 'false'}",
            f"note = {toml_str(note)}",
            "",
        ]
        for i, cname, mod in channels:
            lines += ["[[channels]]", f"index = {i}", f"name = {toml_str(cname)}", f"modality = {toml_str(mod)}", ""]
        lines += ["[inference]", f"allowed_mirroring_axes = [{', '.join(str(m) for m in mirror_axes)}]", ""]
        lines += ["[files]"] + [f"{toml_str(n)} = {toml_str(files[n])}" for n in sorted(files)]
        toml_text = "\n".join(lines) + "\n"
        import tomllib

        parsed = tomllib.loads(toml_text)
        assert parsed["files"] == files and parsed["folds"] == args.folds
        (work / "model.toml").write_text(toml_text)

        # Install into MODEL_DIR: managed files replaced, stale folds removed, others kept.
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("fold_*.onnx"):
            old.unlink()
        for n in names + ["model.toml"]:
            os.replace(work / n, out / n)
        total = sum((out / n).stat().st_size for n in names + ["model.toml"])
        print(f"wrote {out} ({len(args.folds)} folds, {total / 1e6:.2f} MB, {time.time() - t_all:.1f} s)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
