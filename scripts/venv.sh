#!/usr/bin/env bash
# Creates (or refreshes) the project-local Python venv `.venv/` from
# requirements/test.txt. Re-created only when the requirements' hash changes.
# Usage: scripts/venv.sh   (prints nothing on a cache hit)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/requirements/test.txt"
want=$(sha256sum "$req" | cut -c1-16)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.req-hash" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
echo "venv: creating $venv (requirements hash $want)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
echo "$want" > "$venv/.req-hash"
