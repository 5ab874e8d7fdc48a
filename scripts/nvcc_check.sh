#!/usr/bin/env bash
# Compiles single CUDA sources to throw-away objects with the extension's flags: a quick syntax and type
# check while writing kernels (the whole build is scripts/cuda_build.sh). Usage: nvcc_check.sh FILE.cu...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
source scripts/cuda_root.sh
CUDA_HOME=$(cuda_root)
site=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pyinc=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
wheel_dir=$(ls -d "$site"/nvidia/cu[0-9]* | tail -n 1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "$@"; do
  "$CUDA_HOME/bin/nvcc" -c "$f" -o "$out/$(basename "$f").o" -Icsrc -I"$site/torch/include" \
    -I"$site/torch/include/torch/csrc/api/include" -I"$wheel_dir/include" -I"$pyinc" \
    -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -DPYDET_OPS_WITH_CUDA \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -D__CUDA_NO_HALF2_OPERATORS__ -std=c++20 -O3 --fmad=false --expt-relaxed-constexpr -lineinfo \
    -gencode arch=compute_90,code=sm_90 --compiler-options -fPIC
  echo "ok: $f"
done
