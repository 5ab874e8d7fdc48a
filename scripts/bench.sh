#!/usr/bin/env bash
# The main job: set up (if needed) and run the benchmark suite, pydet_ops against torchvision in one process.
# Extra arguments go to `python -m benchmarks` (e.g. --quick, --ops nms, --json auto).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m benchmarks "$@"
