#!/usr/bin/env python3
"""The network part alone: seconds per tile of a model package's fold 0 under
ONNX Runtime session options and execution providers, and under PyTorch (the
network nnU-Net builds from the same plans), on the same cores, in one process.

    ort_study.py MODEL_DIR [--threads 2] [--batches 1 2 8] [--rounds 5] [--variants NAME ...] [--clock wall|cpu]
                 [--torch-site SITE_PACKAGES] [--weights onnx|random|CHECKPOINT.pth]

Variants are those the interpreter offers: ONNX Runtime's CPU provider with
session options (graph optimisation level, intra-op spinning, memory arena),
the OpenVINO provider where the installed onnxruntime has it (the
onnxruntime-openvino wheel, requirements/openvino.txt), and `torch` where
torch and nnunetv2 import (the nnU-Net venv of scripts/nnunet-venv.sh: the
network of MODEL_DIR/plans.json with random weights, fp32,
torch.inference_mode, torch.set_num_threads(THREADS), as nnUNetv2_predict
-device cpu runs it; its time does not depend on the weights).

The machine is shared, so the variants are interleaved: each round times one
call of every (variant, batch) in turn, and a variant's figure is the median
over the rounds, after one warm-up call each. Prints one markdown row per
(variant, batch): median seconds per tile, its ratio to `cpu-all` batch 1 of
the same rounds, and for ONNX Runtime variants the largest absolute logit
difference from `cpu-all` batch 1 on the same tiles and the share of voxels
whose argmax agrees.

--clock cpu times the process's CPU seconds (all its threads) instead of the
wall clock: on a machine shared with other jobs, with --threads 1 and no
spinning, it counts the work a tile costs rather than the waits for a core.
Both clocks are recorded on every call; the other one is printed as an extra
column.

Precision variants (issue 16, AMX): `openvino-bf16` asks OpenVINO's CPU plugin
for INFERENCE_PRECISION_HINT bf16 (the provider's `load_config`, as edgeseg's
`precision = "bf16"` does), `openvino-fp32` pins f32; `torch-bf16` runs the
PyTorch network under torch.autocast("cpu", dtype=torch.bfloat16). With
`--weights onnx` (the default) the PyTorch network gets fold 0's weights from
the ONNX file's initializers (the exporter keeps the state-dict names), or from
an nnU-Net checkpoint (`--weights .../fold_0/checkpoint_final.pth`), so its
logits are compared with the CPU provider's like every other row's.
`--torch-site` appends the nnU-Net venv's site-packages to sys.path (after
this interpreter's own, so the onnxruntime-openvino wheel stays first): then
OpenVINO and PyTorch run in one process, interleaved. The batch of 8 is one
tile's 8 mirror images (what nnU-Net's test-time augmentation runs), the
smaller batches its first 1 or 2.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def model_shape(model_dir: Path):
    plans = json.loads((model_dir / "plans.json").read_text())
    dataset = json.loads((model_dir / "dataset.json").read_text())
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    return len(dataset["channel_names"]), patch, plans, dataset


def ort_variants(threads: int):
    """name -> (providers, provider options, SessionOptions factory)."""
    import onnxruntime as ort

    def so(level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, spin=True, arena=True):
        def make():
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            o.inter_op_num_threads = 1
            o.graph_optimization_level = level
            o.enable_cpu_mem_arena = arena
            o.enable_mem_pattern = arena
            o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            return o
        return make

    cpu = (["CPUExecutionProvider"], [{}])
    level = ort.GraphOptimizationLevel
    v = {
        "cpu-all": (*cpu, so()),
        "cpu-extended": (*cpu, so(level=level.ORT_ENABLE_EXTENDED)),
        "cpu-basic": (*cpu, so(level=level.ORT_ENABLE_BASIC)),
        "cpu-none": (*cpu, so(level=level.ORT_DISABLE_ALL)),
        "cpu-nospin": (*cpu, so(spin=False)),
        "cpu-noarena": (*cpu, so(arena=False)),
    }
    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        ov = ["OpenVINOExecutionProvider"]
        fp32 = {"device_type": "CPU", "precision": "FP32", "num_of_threads": str(threads)}
        v["openvino-fp32"] = (ov, [fp32], so())
        v["openvino-fp32-nospin"] = (ov, [fp32], so(spin=False))
        v["openvino-default-precision"] = (ov, [{"device_type": "CPU", "num_of_threads": str(threads)}], so())
        bf16 = {"device_type": "CPU", "num_of_threads": str(threads),
                "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}})}
        v["openvino-bf16"] = (ov, [bf16], so())
        f32 = {"device_type": "CPU", "num_of_threads": str(threads),
               "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "f32"}})}
        v["openvino-f32-hint"] = (ov, [f32], so())
    return v


def torch_net(model_dir: Path, threads: int, weights: str, bf16: bool = False):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    channels, _, plans, dataset = model_shape(model_dir)
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    classes = pm.get_label_manager(dataset).num_segmentation_heads
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, channels, classes,
                                 allow_init=True, deep_supervision=False)
    if weights == "onnx":
        import onnx
        from onnx import numpy_helper
        m = onnx.load(str(model_dir / "fold_0.onnx"))
        state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in m.graph.initializer}
        # named_parameters/buffers name each tensor once (the state dict
        # also lists aliases such as convs.0.all_modules.0 = convs.0.conv).
        own = [k for k, _ in net.named_parameters()] + [k for k, _ in net.named_buffers()]
        # The deep-supervision heads but the last are not in the exported
        # graph (nor used without deep supervision); anything else must be.
        missing = [k for k in own if k not in state and not k.startswith("decoder.seg_layers.")]
        if missing:
            raise SystemExit(f"torch: {len(missing)} weights not in the ONNX file (e.g. {missing[0]}); use --weights")
        net.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    elif weights != "random":
        ckpt = torch.load(weights, map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["network_weights"])
    net.eval()
    torch.set_num_threads(threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return net(torch.from_numpy(x)).float().numpy()
            return net(torch.from_numpy(x)).numpy()
    return run, f"torch {torch.__version__}" + (" bf16 autocast" if bf16 else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", nargs="*", help="names to keep (default: all available)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--torch-site", help="site-packages of the nnU-Net venv, appended to sys.path")
    ap.add_argument("--weights", default="onnx", help="PyTorch weights: onnx (fold_0.onnx's), random, or a checkpoint")
    a = ap.parse_args(argv)
    if a.torch_site:
        sys.path.append(a.torch_site)
    import onnxruntime as ort

    channels, patch, _, _ = model_shape(a.model)
    onnx = str(a.model / "fold_0.onnx")
    tile = np.random.default_rng(16).standard_normal((1, channels, *patch), dtype=np.float32)
    # One tile's 8 mirror images (no flip first), as nnU-Net's TTA evaluates them.
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    mirrors = np.concatenate([np.flip(tile, f) if f else tile for f in flips])
    x = np.ascontiguousarray(np.concatenate([mirrors] * ((max(a.batches) + 7) // 8))[:max(a.batches)])
    runners = {}
    for name, (providers, options, make) in ort_variants(a.threads).items():
        if a.variants and name not in a.variants and name != "cpu-all":
            continue
        s = ort.InferenceSession(onnx, make(), providers=providers, provider_options=options)
        runners[name] = (lambda s: lambda t: s.run(None, {"input": t})[0])(s), \
            f"onnxruntime {ort.__version__} {s.get_providers()[0]}"
    for name, bf16 in (("torch", False), ("torch-bf16", True)):
        if not a.variants or name in a.variants:
            try:
                runners[name] = torch_net(a.model, a.threads, a.weights, bf16)
            except ImportError:
                pass
    ref = np.concatenate([runners["cpu-all"][0](x[i:i + 1]) for i in range(len(x))])
    times = {(n, b): [] for n in runners for b in a.batches}
    other = {k: [] for k in times}
    outs = {}
    load_before = open("/proc/loadavg").read().split()[:3]
    for (n, b) in times:  # warm-up, and the outputs compared
        outs[(n, b)] = runners[n][0](x[:b])
    clocks = (time.perf_counter, time.process_time)
    if a.clock == "cpu":
        clocks = clocks[::-1]
    for _ in range(a.rounds):
        for (n, b) in times:
            t0, u0 = clocks[0](), clocks[1]()
            runners[n][0](x[:b])
            times[(n, b)].append((clocks[0]() - t0) / b)
            other[(n, b)].append((clocks[1]() - u0) / b)
    base = statistics.median(times[("cpu-all", 1)])
    o = "wall" if a.clock == "cpu" else "cpu"
    print(f"<!-- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {a.clock} clock, threads {a.threads}, rounds {a.rounds}, "
          f"patch {patch}, model {a.model}, torch weights {a.weights} -->")
    print(f"| engine | variant | tiles per call | {a.clock} s per tile (median) | vs cpu-all batch 1 | {o} s per tile | max abs logit diff | argmax agrees |")
    print("|---|---|---|---|---|---|---|---|")
    for (n, b), t in times.items():
        med = statistics.median(t)
        y = outs[(n, b)]
        if n.startswith("torch") and a.weights == "random":  # nothing to compare
            cmp = "(random weights) | "
        else:
            cmp = f"{float(np.abs(y - ref[:b]).max()):.1e} | {float((y.argmax(1) == ref[:b].argmax(1)).mean()):.5f}"
        print(f"| {runners[n][1]} | {n} | {b} | {med:.3f} | {base / med:.2f}x | {statistics.median(other[(n, b)]):.3f} | {cmp} |")
    print(f"<!-- load average before {load_before}, after {open('/proc/loadavg').read().split()[:3]} -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
