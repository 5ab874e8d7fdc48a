#!/usr/bin/env bash
# Builds the LibTorch shared library with CMake (find_package(Torch)) into build-cmake/ and runs one op
# from it through torch.ops.load_library, in a process that never imports the Python package.
#
# torch's CMake config needs the CUDA toolkit when torch itself is CUDA-enabled (as the pinned one is), even
# for this CPU-only library: the toolkit is found from CUDA_HOME, nvcc, or /usr/local/cuda*.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
prefix=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
args=(-S . -B build-cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
      -DCMAKE_MAKE_PROGRAM="$(pwd)/.venv/bin/ninja")

if [ "$($PY -c 'import torch; print(int(torch.version.cuda is not None))')" = 1 ]; then
  source scripts/cuda_root.sh
  cuda_root=$(cuda_root)
  if [ -z "$cuda_root" ]; then
    echo "cmake_build.sh: torch is CUDA-enabled and its CMake config needs a CUDA toolkit; set CUDA_HOME" >&2
    exit 1
  fi
  # The runtime compiler library ships in the nvidia-cu13 wheel next to torch.
  nvrtc=$($PY -c 'import glob, os, nvidia; d = os.path.dirname(nvidia.__path__[0] + "/"); print((sorted(glob.glob(d + "/cu*/lib/libnvrtc.so*")) or [""])[0])')
  args+=(-DCUDA_TOOLKIT_ROOT_DIR="$cuda_root")
  [ -n "$nvrtc" ] && args+=(-DCUDA_nvrtc_LIBRARY="$nvrtc")
fi

CMAKE=$([ -x .venv/bin/cmake ] && echo .venv/bin/cmake || echo cmake)
"$CMAKE" "${args[@]}" > build-cmake.log 2>&1 || { cat build-cmake.log; exit 1; }
"$CMAKE" --build build-cmake -j "$(nproc)" >> build-cmake.log 2>&1 || { tail -50 build-cmake.log; exit 1; }
echo "built build-cmake/libpydet_ops.so"

$PY - <<'PYEOF'
import torch, torchvision
torch.ops.load_library("build-cmake/libpydet_ops.so")
g = torch.Generator().manual_seed(0)
boxes = torch.rand(500, 4, generator=g) * 100
boxes[:, 2:] += boxes[:, :2]
scores = torch.rand(500, generator=g)
ours = torch.ops.pydet_ops.nms(boxes, scores, 0.5)
assert torch.equal(ours, torchvision.ops.nms(boxes, scores, 0.5)), "CMake build: nms differs from torchvision"
print(f"CMake-built library: nms kept {ours.numel()} of 500 boxes, equal to torchvision "
      f"(ISA {torch.ops.pydet_ops._cpu_capability()})")
PYEOF
