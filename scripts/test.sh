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

echo "== rustfmt"; cargo fmt --check
echo "== clippy"; cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"; cargo test --locked
echo "== peer tests (pytest)"
EDGESEG_BIN="$root/target/debug/edgeseg" .venv/bin/python -m pytest tests/peers -q -p no:cacheprovider
