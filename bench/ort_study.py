#!/usr/bin/env python3
"""The network part alone: seconds per tile of a model package's fold under
ONNX Runtime session options and execution providers, and under PyTorch (the
network nnU-Net builds from the same plans), on the same cores.

    ort_study.py ort MODEL_DIR [--threads 2] [--batches 1 2 8] [--repeat 5] [--variants NAME ...]
        any venv with onnxruntime (the repository's .venv: the CPU provider; a venv with
        onnxruntime-openvino: the OpenVINO provider too)
    ort_study.py torch MODEL_DIR [--threads 2] [--batches 1 2 8] [--repeat 5]
        the nnU-Net venv (scripts/nnunet-venv.sh): nnunetv2 builds the network of
        MODEL_DIR/plans.json (weights random: the time does not depend on them), fp32,
        torch.inference_mode, torch.set_num_threads(THREADS), as nnUNetv2_predict -device cpu

Prints one markdown row per (variant, batch): median seconds per tile over --repeat calls
after one warm-up call, and for ONNX Runtime variants the largest absolute logit difference
from the reference variant (cpu-all, batch 1) on the same tiles.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def model_shape(model_dir: Path) -> tuple[int, list[int], str]:
    plans = json.loads((model_dir / "plans.json").read_text())
    dataset = json.loads((model_dir / "dataset.json").read_text())
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    return len(dataset["channel_names"]), patch, plans


def tiles(n: int, channels: int, patch: list[int]) -> np.ndarray:
    rng = np.random.default_rng(16)
    return rng.standard_normal((n, channels, *patch), dtype=np.float32)


def timed(fn, repeat: int) -> float:
    fn()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def ort_variants(threads: int):
    """name -> (providers, provider options, session-option setter)."""
    import onnxruntime as ort

    def so(level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, spin=True, arena=True, pattern=True):
        def make():
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            o.inter_op_num_threads = 1
            o.graph_optimization_level = level
            o.enable_cpu_mem_arena = arena
            o.enable_mem_pattern = pattern
            o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            return o
        return make

    cpu = (["CPUExecutionProvider"], [{}])
    L = ort.GraphOptimizationLevel
    v = {
        "cpu-all": (*cpu, so()),
        "cpu-basic": (*cpu, so(level=L.ORT_ENABLE_BASIC)),
        "cpu-extended": (*cpu, so(level=L.ORT_ENABLE_EXTENDED)),
        "cpu-none": (*cpu, so(level=L.ORT_DISABLE_ALL)),
        "cpu-nospin": (*cpu, so(spin=False)),
        "cpu-noarena": (*cpu, so(arena=False, pattern=False)),
    }
    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        ov = ["OpenVINOExecutionProvider"]
        v["openvino-fp32"] = (ov, [{"device_type": "CPU", "precision": "FP32", "num_of_threads": threads}], so())
        v["openvino-default"] = (ov, [{"device_type": "CPU", "num_of_threads": threads}], so())
        v["openvino-fp32-nospin"] = (ov, [{"device_type": "CPU", "precision": "FP32", "num_of_threads": threads}],
                                     so(spin=False))
    return v


def run_ort(a) -> None:
    import onnxruntime as ort

    channels, patch, _ = model_shape(a.model)
    onnx = str(a.model / "fold_0.onnx")
    variants = ort_variants(a.threads)
    names = a.variants or list(variants)
    x = tiles(max(a.batches), channels, patch)
    ref_s = ort.InferenceSession(onnx, variants["cpu-all"][2](), providers=["CPUExecutionProvider"])
    ref = np.concatenate([ref_s.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    del ref_s
    for name in names:
        providers, options, make = variants[name]
        s = ort.InferenceSession(onnx, make(), providers=providers, provider_options=options)
        got = s.get_providers()[0]
        for n in a.batches:
            out = {}

            def call():
                out["y"] = s.run(None, {"input": x[:n]})[0]
            sec = timed(call, a.repeat) / n
            diff = float(np.abs(out["y"] - ref[:n]).max())
            agree = float((out["y"].argmax(1) == ref[:n].argmax(1)).mean())
            print(f"| onnxruntime {ort.__version__} | {name} ({got}) | {n} | {sec:.3f} | {diff:.2e} | "
                  f"{agree:.5f} |", flush=True)
        del s


def run_torch(a) -> None:
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    channels, patch, plans = model_shape(a.model)
    dataset = json.loads((a.model / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    classes = pm.get_label_manager(dataset).num_segmentation_heads
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, channels, classes,
                                 allow_init=True, deep_supervision=False)
    net.eval()
    torch.set_num_threads(a.threads)
    x = torch.from_numpy(tiles(max(a.batches), channels, patch))
    for n in a.batches:
        with torch.inference_mode():
            sec = timed(lambda: net(x[:n]), a.repeat) / n
        print(f"| torch {torch.__version__} | nnU-Net network, fp32, inference_mode | {n} | {sec:.3f} | | |",
              flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engine", choices=["ort", "torch"])
    ap.add_argument("model", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--variants", nargs="*")
    a = ap.parse_args(argv)
    print(f"<!-- {platform.processor() or platform.machine()}, threads {a.threads}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} -->", flush=True)
    (run_ort if a.engine == "ort" else run_torch)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
