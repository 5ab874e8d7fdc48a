"""Loading the extension: version mismatch and missing library give one actionable ImportError."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


def test_import_against_other_torch_release_says_how_to_rebuild():
    result = _run(
        "import torch\n"
        "torch.__version__ = '1.0.0'\n"
        "try:\n"
        "    import pydet_ops\n"
        "except ImportError as err:\n"
        "    print('ImportError:', err)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "built against torch" in result.stdout
    assert "1.0.0 is installed" in result.stdout
    assert "pip install --no-build-isolation -e ." in result.stdout


def test_missing_extension_says_how_to_build(tmp_path):
    # A copy of the Python package without the compiled library.
    package = tmp_path / "pydet_ops"
    package.mkdir()
    for name in os.listdir(os.path.join(ROOT, "pydet_ops")):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "pydet_ops", name)) as src:
                (package / name).write_text(src.read())
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "import pydet_ops"], capture_output=True, text=True, env=env, cwd=str(tmp_path)
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "pydet_ops._C was not found" in result.stderr
    assert "pip install --no-build-isolation -e ." in result.stderr


def test_cpu_capability_and_build_info():
    import pydet_ops

    assert pydet_ops.cpu_capability() in ("default", "avx2", "avx512")
    info = pydet_ops.build_info()
    assert info["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
