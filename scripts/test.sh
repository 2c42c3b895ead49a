#!/usr/bin/env bash
# The whole test suite, set-up included, on a fresh Debian machine:
#   scripts/test.sh
# Installs the Debian tools it needs (apt), the Python peers into .venv/,
# then runs rustfmt, clippy, the Rust unit and integration tests and the
# Python peer tests. .ci/run calls exactly this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/deps.sh
scripts/venv.sh
export EDGESEG_PYTHON="$root/.venv/bin/python"
# A fresh clone gains nothing from incremental compilation, and its files were
# half of target/ (5.6 GB): off unless the caller asks for it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== rustfmt"; cargo fmt --check
echo "== clippy"; cargo clippy --all-targets --locked -- -D warnings
echo "== clippy (cuda, tensorrt)"; cargo clippy --all-targets --locked --features tensorrt -- -D warnings
echo "== cargo test"; cargo test --locked
echo "== TensorRT build with ONNX Runtime's CPU library: the clear error and the fallback"
cargo test --locked --features tensorrt --test main infer_predict
echo "== CUDA kernels built with NVRTC 12.0 (PTX ISA 8.0), compiled by NVRTC 13.0 and 12.0"
nvidia=$(ls -d "$root"/.venv/lib/python3*/site-packages/nvidia | head -1)
nvlib="$nvidia/cu13/lib:$nvidia/cuda_nvrtc/lib"
LD_LIBRARY_PATH="$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo test --locked --features cuda --lib gpu::
LD_LIBRARY_PATH="$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" EDGESEG_FORCE_NVRTC=1 \
    cargo test --locked --features cuda --lib gpu::cuda::ptx
echo "== CUDA kernels run on the CPU: host emulation (g++) against the CPU twins"
cargo test --locked --features emulation --lib gpu::emulation
echo "== peer tests (pytest)"
EDGESEG_BIN="$root/target/debug/edgeseg" .venv/bin/python -m pytest tests/peers -q -p no:cacheprovider
echo "== conformance run: every public DICOM file of ../shared/conformance against pydicom, SimpleITK, dcm2niix"
EDGESEG_BIN="$root/target/debug/edgeseg" scripts/conformance.sh
echo "== nnU-Net parity (slow peer check: torch + nnunetv2, cached outside the clone)"
scripts/test-nnunet-parity.sh
echo "== Debian package (slow: release build, cargo-deb and a debootstrap root cached outside the clone)"
scripts/test-package.sh -q
