#!/usr/bin/env bash
# The conformance run: every series of the public DICOM set (../shared/conformance)
# through `edgeseg inspect --json` and `convert`, judged by pydicom, SimpleITK and
# dcm2niix (tools/conformance.py says how). Prints one line per series and
#   N series, M agree, K refused, J disagree
# Usage: scripts/conformance.sh [--set DIR] [--json OUT.json] [--only SUBSTRING]
# Exit 0 when every series agrees. Builds the debug binary when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/deps.sh
scripts/venv.sh
bin=${EDGESEG_BIN:-"${CARGO_TARGET_DIR:-$root/target}/debug/edgeseg"}
[ -x "$bin" ] || cargo build --locked --bin edgeseg
exec "$root/.venv/bin/python" tools/conformance.py --bin "$bin" "$@"
