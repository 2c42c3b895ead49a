#!/usr/bin/env bash
# Creates (or refreshes) the project-local Python venv `.venv/` from
# requirements/test.txt, then requirements/radiomics.txt (PyRadiomics builds its
# C extension against the venv's numpy: build tools first, then
# --no-build-isolation). Re-created only when the requirements' hash changes.
# Usage: scripts/venv.sh   (prints nothing on a cache hit)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/requirements/test.txt"
rad="$root/requirements/radiomics.txt"
want=$(cat "$req" "$rad" | sha256sum | cut -c1-16)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.req-hash" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
echo "venv: creating $venv (requirements hash $want)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
"$venv/bin/pip" install -q --disable-pip-version-check $(grep -E '^(versioneer|wheel)==' "$rad")
"$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation -r "$rad"
echo "$want" > "$venv/.req-hash"
