"""Build script for pydet_ops.

The C++ (and, when enabled, CUDA) sources under csrc/ are compiled into one extension, ``pydet_ops._C``,
with torch.utils.cpp_extension and ninja.

Environment switches:
  FORCE_CUDA=1         also compile csrc/**/*.cu (needs nvcc and a CUDA-enabled torch; no GPU needed).
                       Without it, CUDA sources are compiled only when torch sees a GPU.
  PYDET_OPS_NATIVE=1   add -march=native (local builds only: the binary then needs this CPU).
  DEBUG=1              -O0 -g instead of the release flags.
  PYDET_OPS_SANITIZE=1 AddressSanitizer + UndefinedBehaviorSanitizer build (-O1 -g); run it with the ASan
                       runtime preloaded into Python (scripts/sanitize.sh does both).
  MAX_JOBS=N           parallel compile jobs (ninja).

The per-ISA kernels (csrc/ops/cpu/isa/) select AVX2 / AVX-512 with target pragmas, so a default build runs on
any x86-64 CPU and still uses the widest instruction set present (see csrc/README.md).
"""

import glob
import json
import os
import shutil

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")
VERSION = "0.1.0"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda() -> bool:
    if _flag("FORCE_CUDA"):
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def _sources(pattern: str) -> list:
    # Relative paths keep the build reproducible wherever the checkout lives.
    return sorted(glob.glob(os.path.join(CSRC, "**", pattern), recursive=True))


def _extension():
    with_cuda = _want_cuda()
    sources = _sources("*.cpp")
    sanitize = _flag("PYDET_OPS_SANITIZE")
    cxx = ["-O0", "-g"] if _flag("DEBUG") else ["-O1", "-g"] if sanitize else ["-O3"]
    # No fused multiply-add contraction: results must round like torchvision's separate tensor ops.
    cxx += ["-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas"]
    # Floating-point operations do not trap (the default anyway): lets the compiler evaluate both sides of a
    # select, so branch-free loops with conditionals vectorise. Values are unaffected.
    cxx.append("-fno-trapping-math")
    # at::parallel_for runs serially unless the including file is compiled with OpenMP. Linking resolves to
    # libgomp.so.1, the runtime torch has already loaded, so torch.set_num_threads governs our threads too.
    cxx.append("-fopenmp")
    if _flag("PYDET_OPS_NATIVE"):
        cxx.append("-march=native")
    link = ["-fopenmp"]
    if sanitize:
        # vptr checks need RTTI of torch's own (uninstrumented) classes: off. Any report aborts the process.
        flags = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-sanitize-recover=all",
                 "-fno-omit-frame-pointer"]
        cxx += flags
        link += flags
    define_macros = []
    extra_compile_args = {"cxx": cxx}
    if with_cuda:
        sources += _sources("*.cu")
        define_macros.append(("PYDET_OPS_WITH_CUDA", None))
        nvcc = ["-O3", "--fmad=false", "--expt-relaxed-constexpr", "-lineinfo"]
        extra_compile_args["nvcc"] = nvcc
        return CUDAExtension(
            "pydet_ops._C",
            sources,
            include_dirs=[os.path.join(ROOT, CSRC)],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=link,
        )
    return CppExtension(
        "pydet_ops._C",
        sources,
        include_dirs=[os.path.join(ROOT, CSRC)],
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=link,
    )


class BuildWithInfo(BuildExtension):
    """Records which torch the extension was compiled against, next to the compiled library.

    pydet_ops reads this file at import and refuses to load against a different torch, with the command to
    rebuild, instead of failing later with an undefined symbol or a crash.
    """

    def _write_info(self, directory: str) -> None:
        info = {
            "pydet_ops": VERSION,
            "torch": torch.__version__,
            "cuda": bool(_want_cuda()),
            "torch_cuda": torch.version.cuda,
        }
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "_build_info.json"), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")

    def build_extension(self, ext):
        super().build_extension(ext)
        self._write_info(os.path.dirname(self.get_ext_fullpath(ext.name)))
        if getattr(self, "editable_mode", False):
            self._write_info(os.path.join(ROOT, "pydet_ops"))

    def copy_extensions_to_source(self):
        # In-place builds load the library from the source tree. Replace it atomically (a process that has
        # the old library mapped keeps it intact) and put the build info beside it.
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            fullname = self.get_ext_fullname(ext.name)
            filename = self.get_ext_filename(fullname)
            package = ".".join(fullname.split(".")[:-1])
            package_dir = build_py.get_package_dir(package)
            dest = os.path.join(package_dir, os.path.basename(filename))
            src = os.path.join(self.build_lib, filename)
            tmp = dest + ".tmp"
            shutil.copyfile(src, tmp)
            shutil.copymode(src, tmp)
            os.replace(tmp, dest)
        self._write_info(os.path.join(ROOT, "pydet_ops"))


setup(
    name="pydet_ops",
    version=VERSION,
    description="Fast object-detection ops for PyTorch: a drop-in replacement for torchvision.ops",
    packages=find_packages(include=["pydet_ops", "pydet_ops.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildWithInfo.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch"],
    zip_safe=False,
)
