#!/usr/bin/env bash
# The op tests under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Builds a sanitized copy of the extension in build-sanitize/src (the normal in-place build is left alone;
# rebuilds are incremental) and runs pytest against it with the ASan runtime preloaded into Python. Any
# report aborts the run with a non-zero exit. Extra arguments go to pytest (default: the whole suite except
# the end-to-end detector tests and the command-line runs of the reference detector (training runs in
# subprocesses), which take minutes under ASan, the resident-memory tests, which ASan's quarantine makes
# meaningless, and the huge-input tests (marker "huge": 4-9 GB maps, which ASan's shadow memory and
# quarantine would push past the machine's memory)).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
bash scripts/setup.sh

dest=build-sanitize/src
mkdir -p "$dest"
# Tracked sources only, timestamps kept so that ninja rebuilds only what changed.
git ls-files -z csrc pydet_ops models tests setup.py pyproject.toml | xargs -0 cp -p --parents -t "$dest"
echo "==> building the sanitized extension in $dest"
start=$(date +%s)
(cd "$dest" && PYDET_OPS_SANITIZE=1 "$root/.venv/bin/python" setup.py --quiet build_ext --inplace)
echo "    built in $(( $(date +%s) - start )) s"

asan=$(gcc -print-file-name=libasan.so)
[ -f "$asan" ] || { echo "libasan.so not found (gcc -print-file-name=libasan.so)" >&2; exit 1; }
# libstdc++ preloaded too: Python itself is C, and ASan's exception interceptor needs the real __cxa_throw
# resolvable when it starts.
cxx=$(gcc -print-file-name=libstdc++.so)
# Python and torch are not instrumented: no leak checking (the interpreter keeps memory to exit), and no
# allocator-pairing checks across the instrumented boundary.
# Reports go to build-sanitize/*.log as well as stderr (pytest captures stderr; a report aborts the process).
logs="$root/build-sanitize/reports"
rm -f "$logs".*
export ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:new_delete_type_mismatch=0:halt_on_error=1:detect_odr_violation=0:log_path=$logs
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$logs
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(-q -p no:cacheprovider --ignore="$dest/tests/test_detection_e2e.py" --ignore="$dest/tests/test_models_cli.py" -k "not keep_memory_flat" -m "not huge")
fi
echo "==> pytest under ASan + UBSan"
cd "$dest"
status=0
LD_PRELOAD="$asan $cxx" PYTHONPATH="$root/$dest" "$root/.venv/bin/python" -m pytest tests "${args[@]}" || status=$?
if ls "$logs".* >/dev/null 2>&1; then
  echo "==> sanitizer reports:" >&2
  cat "$logs".* >&2
  exit 1
fi
echo "==> no sanitizer report"
exit "$status"
