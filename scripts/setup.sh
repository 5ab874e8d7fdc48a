#!/usr/bin/env bash
# Creates .venv/ at the repository root (if missing), installs the pinned development requirements and builds
# the extension in place (incrementally). Safe to run again: each step does only what is missing.
#
#   bash scripts/setup.sh
#
# Environment: PYTHON (interpreter for the venv, default python3), FORCE_CUDA=1 (also build the CUDA kernels).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi

echo "==> installing requirements/dev.txt"
# This machine's pip also lists local package folders that may be absent; their warnings are noise.
set +e
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt 2>&1 \
  | { grep -v -E "^WARNING: Location '.*' is ignored" || true; }
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "pip install -r requirements/dev.txt failed ($status)" >&2
  exit "$status"
fi

echo "==> building pydet_ops (in place)"
start=$(date +%s)
.venv/bin/python setup.py --quiet build_ext --inplace
echo "    built in $(( $(date +%s) - start )) s"

# Make `import pydet_ops` work from any directory with this venv.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$(pwd)" > "$site/pydet_ops-checkout.pth"
.venv/bin/python -c 'import pydet_ops; print("pydet_ops", pydet_ops.__version__, "| CPU ISA:", pydet_ops.cpu_capability())'
