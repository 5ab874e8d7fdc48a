"""Loads the compiled library ``pydet_ops._C`` and registers its ops under ``torch.ops.pydet_ops``.

A build made against another torch release than the one installed is refused with the command that
rebuilds it, instead of failing later with an undefined symbol or a crash.
"""

import importlib.util
import json
import os

import torch

REBUILD_HINT = (
    "Rebuild it from the repository root with `pip install --no-build-isolation -e .` "
    "(or run the README's set-up command, `bash scripts/setup.sh`)."
)


def _release(version: str) -> str:
    # "2.13.0+cu130" and "2.13.0+cpu" share the C++ ABI of release 2.13.0.
    return version.split("+", 1)[0]


def load() -> dict:
    """Loads the extension once; returns the build info recorded next to it."""
    spec = importlib.util.find_spec("pydet_ops._C")
    if spec is None or spec.origin is None:
        raise ImportError("pydet_ops: the compiled extension pydet_ops._C was not found. " + REBUILD_HINT)
    info_path = os.path.join(os.path.dirname(spec.origin), "_build_info.json")
    info = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
        built_with = info.get("torch", "unknown")
        if _release(built_with) != _release(torch.__version__):
            raise ImportError(
                f"pydet_ops was built against torch {built_with}, but torch {torch.__version__} is installed. "
                + REBUILD_HINT
            )
    try:
        torch.ops.load_library(spec.origin)
    except OSError as err:
        raise ImportError(
            f"pydet_ops: could not load {spec.origin} with torch {torch.__version__} ({err}). "
            "It was probably built against another torch. " + REBUILD_HINT
        ) from err
    # Reads PYDET_OPS_CPU_CAPABILITY now, so a bad value is reported at import rather than at first use.
    torch.ops.pydet_ops._cpu_capability()
    return info
