#!/usr/bin/env bash
# Verification on a machine with an NVIDIA GPU, one stage per call (each fits in a few minutes):
#
#   bash scripts/gpu_verify.sh build      # in-place build with the CUDA kernels, registration check
#   bash scripts/gpu_verify.sh test       # tests/test_cuda*.py (extra arguments go to pytest)
#   bash scripts/gpu_verify.sh sanitize   # compute-sanitizer memcheck, racecheck, initcheck, synccheck
#   bash scripts/gpu_verify.sh bench      # python -m benchmarks --device cuda, results and plots (arguments: the runner's)
#
# Uses the Python that holds torch on that machine ($PY, default python3; no virtual environment, nothing
# downloaded). Logs, JUnit XML and benchmark results go to $OUT (default build-gpu/); the last lines
# printed are a short summary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-python3}
OUT=${OUT:-build-gpu}
mkdir -p "$OUT"
stage=${1:-}
shift || true

gpu() { "$PY" -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"; print(torch.cuda.get_device_name())'; }

case "$stage" in
  build)
    gpu
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1 \
      || { tail -40 "$OUT/build.log"; exit 1; }
    "$PY" scripts/check_cuda_registration.py pydet_ops/_C*.so | tee "$OUT/registration.txt" | tail -1
    ;;
  test)
    gpu
    "$PY" -m pytest tests/test_cuda*.py -q -p no:cacheprovider -rs --junitxml "$OUT/test_cuda.xml" "$@" \
      2>&1 | tee "$OUT/test_cuda.log" | tail -15
    ;;
  sanitize)
    gpu
    # The sanitizer slows kernels down by orders of magnitude: the functional tests without the huge map,
    # the 200k-box runs, CUDA graphs / torch.compile (the sanitizer does not follow graph replays) and
    # gradcheck's many small calls.
    select=${PYDET_SANITIZE_K:-"not huge and not 200k and not graph and not compile and not gradcheck"}
    status=0
    for tool in memcheck racecheck initcheck synccheck; do
      compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
        "$PY" -m pytest tests/test_cuda*.py -q -p no:cacheprovider -x -k "$select" "$@" \
        > "$OUT/sanitizer_$tool.log" 2>&1 || status=$?
      summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer_$tool.log" | tail -n 1 || true)
      echo "$tool: ${summary:-no summary} (exit $status), $(grep -E '^[0-9]+ (passed|failed)' "$OUT/sanitizer_$tool.log" | tail -n 1 || true)"
    done
    exit "$status"
    ;;
  bench)
    gpu
    "$PY" -m benchmarks --device cuda --json "$OUT/bench.json" --plot "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" \
      | grep -E "^\| |speedup" | cut -c1-160 | tail -40
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
