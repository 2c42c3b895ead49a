#!/usr/bin/env bash
# The whole test suite, set-up included, on a fresh Debian machine:
#   scripts/test.sh
# Installs the Debian tools it needs (apt), the Python peers into .venv/,
# then runs rustfmt, clippy, the Rust unit and integration tests and the
# Python peer tests. .ci/run calls exactly this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)           # builds CharLS (JPEG-LS)
command -v dcmcjpeg >/dev/null || need_apt+=(dcmtk)         # fixture compression
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)   # DICOM validator
[ -x /usr/bin/time ] || need_apt+=(time)                    # peak-memory figures
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "test.sh: installing ${need_apt[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
scripts/venv.sh
export EDGESEG_PYTHON="$root/.venv/bin/python"

echo "== rustfmt"; cargo fmt --check
echo "== clippy"; cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"; cargo test --locked
echo "== peer tests (pytest)"
EDGESEG_BIN="$root/target/debug/edgeseg" .venv/bin/python -m pytest tests/peers -q -p no:cacheprovider
