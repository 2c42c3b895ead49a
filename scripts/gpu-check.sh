#!/usr/bin/env bash
# The GPU check and benchmark moved to bench/gpu-check.sh (the self-check is
# `edgeseg gpu-check`, the benchmark the gpu-bench example); this name stays
# for the docs and habits that use it:
#   scripts/gpu-check.sh path/to/edgeseg [SEED]
exec "$(dirname "$0")/../bench/gpu-check.sh" "$@"
