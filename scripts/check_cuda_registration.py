"""Checks that a compiled pydet_ops library has a CUDA kernel for every op it defines.

Usage: python scripts/check_cuda_registration.py path/to/_C.so

Loads the library through torch.ops.load_library (no GPU needed: registration happens at load), lists the
ops of the pydet_ops namespace that take tensors and asks the dispatcher whether each has a kernel for the CUDA key (and the
RoI ops one for AutocastCUDA). Exits 1 naming the ops without one.
"""

import sys

import torch


def main(path: str) -> int:
    torch.ops.load_library(path)
    schemas = [s for s in torch._C._jit_get_all_schemas() if s.name.startswith("pydet_ops::")]
    # Host utilities (CPU capability, CPU memory pool) take no tensor: nothing to run on a GPU.
    names = sorted(s.name for s in schemas if any("Tensor" in str(a.type) for a in s.arguments))
    utilities = sorted(s.name for s in schemas if s.name not in names)
    if not names:
        print(f"no pydet_ops ops registered by {path}")
        return 1
    missing = [n for n in names if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
    autocast_ops = ["pydet_ops::roi_align", "pydet_ops::roi_pool", "pydet_ops::multi_scale_roi_align"]
    no_autocast = [n for n in autocast_ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "AutocastCUDA")]
    for n in names:
        print(f"  {n:45s} CUDA: {'yes' if n not in missing else 'NO'}")
    if missing or no_autocast:
        print(f"ops without a CUDA kernel: {missing}; without an AutocastCUDA kernel: {no_autocast}")
        return 1
    print(f"all {len(names)} tensor ops have CUDA kernels; RoI ops have AutocastCUDA kernels "
          f"(host utilities without tensors: {', '.join(utilities)})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
