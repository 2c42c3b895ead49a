#!/usr/bin/env bash
# The slow packaging checks (the last step of scripts/test.sh; also by hand):
# builds the release binary and the .deb, installs it into a debootstrap'd
# Debian root (cached outside the clone), checks and purges it.
#   scripts/test-package.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/deps.sh
EDGESEG_SLOW=1 .venv/bin/python -m pytest tests/peers/test_package.py -v -s -p no:cacheprovider "$@"
