#!/usr/bin/env bash
# One call on a lent GPU machine (its python3 has torch, torchvision, cupy, pybind11, pytest-benchmark
# and nvcc; no registry): build, the CUDA test suite, compute-sanitizer on the ops, then every
# benchmark. Logs and JSON go to benchmarks/results/ and, when $OUT is set, to $OUT as well.
#   bash benchmarks/gpu_session.sh            (from the repository root)
set -uo pipefail
cd "$(dirname "$0")/.."
RES=benchmarks/results
STAMP=$(date +%Y-%m-%d)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')
LOG=$RES/gpu-session-$GPU-$STAMP.log
mkdir -p "$RES"
exec > >(tee "$LOG") 2>&1
echo "# $(date -u) $GPU commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

echo "## build"
time pip install --no-build-isolation --no-deps . || exit 1
python3 -c "import fastdream, json; print(json.dumps(fastdream.backend_info()))"

echo "## CUDA tests"
python3 -m pytest -q -p no:cacheprovider -m cuda -rs tests/ > "$RES/cuda-tests-$GPU-$STAMP.log" 2>&1
tail -30 "$RES/cuda-tests-$GPU-$STAMP.log"
COUNTS=$(python3 - "$RES/cuda-tests-$GPU-$STAMP.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read().splitlines()[-1]
p = re.search(r"(\d+) passed", text); f = re.search(r"(\d+) failed", text); e = re.search(r"(\d+) error", text)
print(f"{int(p.group(1)) if p else 0},{(int(f.group(1)) if f else 0) + (int(e.group(1)) if e else 0)}")
PY
)
echo "cuda tests passed,failed: $COUNTS"

echo "## compute-sanitizer memcheck on the fused ops"
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider -m cuda \
    tests/test_ops.py -x > "$RES/memcheck-$GPU-$STAMP.log" 2>&1; echo "memcheck exit $?"
  tail -5 "$RES/memcheck-$GPU-$STAMP.log"
else
  echo "compute-sanitizer not found"
fi

echo "## benchmarks"
python3 -m benchmarks.bench_kernels --device cuda --json "$RES/kernels-$GPU-$STAMP.json"
python3 -m benchmarks.e2e --device cuda --repeats 5 --cuda-tests "$COUNTS"
python3 -m benchmarks.throughput --device cuda --json "$RES/throughput-$GPU-$STAMP.json"
python3 -m benchmarks.memory --device cuda --untiled-max 8192 --budget-mib 16384 --json "$RES/memory-$GPU-$STAMP.json"

if [ -n "${OUT:-}" ]; then cp "$RES"/*"$GPU"* "$OUT"/ 2>/dev/null; fi
echo "# done $(date -u)"
