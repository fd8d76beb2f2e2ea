#!/usr/bin/env bash
# Build what the GPU backends need that pip cannot install: AITemplate and fx2ait from source at
# a pinned commit, as wheels in $WHEELS (the GPU CI job caches that folder between runs, keyed on
# the commit and the CUDA version, so the ~20-minute build happens once). torch-tensorrt comes
# from pip through the plugin's `tensorrt` extra (noxfile.py, bench_gpu).
#
#   WHEELS=~/.cache/mlplatform-ci/wheels bash benchmarks/compile/gpu_setup.sh
set -euo pipefail

# a commit of facebookincubator/AITemplate (main); change it together with the cache key in
# .github/workflows/ci.yml
AITEMPLATE_COMMIT="${AITEMPLATE_COMMIT:-fdc92125f8390adf217b8929ac7aae88dc8ea68f}"
WHEELS="${WHEELS:-$HOME/.cache/mlplatform-ci/wheels}"
mkdir -p "$WHEELS"

if ls "$WHEELS"/aitemplate-*.whl "$WHEELS"/fx2ait-*.whl >/dev/null 2>&1; then
  echo "gpu_setup: cached wheels in $WHEELS:"; ls "$WHEELS"; exit 0
fi
command -v nvcc >/dev/null || { echo "gpu_setup: nvcc not on PATH (AITemplate needs it)" >&2; exit 1; }

SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
git clone --quiet https://github.com/facebookincubator/AITemplate "$SRC/AITemplate"
cd "$SRC/AITemplate"
git checkout --quiet "$AITEMPLATE_COMMIT"
git submodule update --init --recursive --quiet   # cutlass, composable_kernel
(cd python && python -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" .)
(cd fx2ait && python -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" .)
echo "gpu_setup: built"; ls "$WHEELS"
