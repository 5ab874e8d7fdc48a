#!/usr/bin/env bash
# Compiles the extension with its CUDA kernels (FORCE_CUDA=1) on a machine with or without a GPU, into
# build-cuda/ (the in-place CPU build is left alone), then checks that every op has a CUDA kernel
# registered with the dispatcher.
#
# Needs the CUDA-enabled torch of requirements/dev.txt and nvcc (CUDA 13 for torch 2.13); the toolkit is
# found as scripts/cuda_root.sh says.
# TORCH_CUDA_ARCH_LIST defaults to 9.0 (H100 / H200) when no GPU is visible; set it for other GPUs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
case $PY in /*) ;; */*) PY="$(pwd)/$PY" ;; esac
root=$(pwd)

source scripts/cuda_root.sh
cuda_root=$(cuda_root)
[ -n "$cuda_root" ] || { echo "cuda_build.sh: no CUDA toolkit found; set CUDA_HOME" >&2; exit 1; }
export CUDA_HOME=$cuda_root
# torch's CUDA headers include cusparse.h, cublas.h ... from the nvidia/cu* wheel next to torch.
wheel_dir=$($PY -c 'import glob, nvidia; print((sorted(glob.glob(nvidia.__path__[0] + "/cu[0-9]*")) or [""])[-1])')
if [ -n "$wheel_dir" ]; then
  export CPATH="$wheel_dir/include${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$wheel_dir/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$wheel_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] && [ "$($PY -c 'import torch; print(int(torch.cuda.is_available()))')" = 0 ]; then
  export TORCH_CUDA_ARCH_LIST=9.0
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-auto} nvcc: $("$CUDA_HOME/bin/nvcc" --version | tail -n 1)"
FORCE_CUDA=1 $PY setup.py build_ext --build-lib build-cuda/lib --build-temp build-cuda/temp > build-cuda.log 2>&1 \
  || { grep -n -E "error|Error" build-cuda.log | head -40; tail -30 build-cuda.log; exit 1; }
lib=$(ls build-cuda/lib/pydet_ops/_C*.so)
echo "built $lib"
$PY scripts/check_cuda_registration.py "$lib"
# The package around the CUDA-enabled library: it imports and runs on the CPU of a machine without a GPU.
cp pydet_ops/*.py build-cuda/lib/pydet_ops/
(cd /tmp && PYTHONPATH="$root/build-cuda/lib" "$PY" -c '
import torch, pydet_ops
assert pydet_ops.build_info()["cuda"], pydet_ops.build_info()
b = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
assert pydet_ops.nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
print("CUDA-enabled build imports and runs on CPU:", pydet_ops.__file__, "GPU visible:", torch.cuda.is_available())
')
