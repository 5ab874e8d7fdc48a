# Sourced by the build scripts: prints the CUDA toolkit root (the directory holding bin/nvcc) or nothing.
# CUDA_HOME wins; else the toolkit of the nvcc on PATH (which may be a wrapper script that execs the real
# one); else the first /usr/local/cuda* with an nvcc.
cuda_root() {
  if [ -n "${CUDA_HOME:-}" ]; then echo "$CUDA_HOME"; return; fi
  if command -v nvcc >/dev/null; then
    local nvcc_path real
    nvcc_path=$(command -v nvcc)
    real=$(sed -n 's/^exec \([^ ]*nvcc\).*/\1/p' "$nvcc_path" 2>/dev/null | head -n 1)
    dirname "$(dirname "$(readlink -f "${real:-$nvcc_path}")")"
    return
  fi
  local d
  for d in /usr/local/cuda /usr/local/cuda-*; do [ -x "$d/bin/nvcc" ] && echo "$d" && return; done
  return 0
}
