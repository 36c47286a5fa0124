"""pytest-benchmark versions of the kernel benchmark (not in the default test run: testpaths is tests/).

    pytest benchmarks/test_bench_kernels.py [--benchmark-json PATH]

Each op at 1x3x512x512 (and 8x3x1024x1024 on CUDA), fused vs eager vs the plain copy; CUDA runs end
with a synchronize so the wall-clock time covers the work.
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.bench_kernels import case_functions

CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("shape", [(1, 3, 512, 512), (8, 3, 1024, 1024)], ids=["1x512", "8x1024"])
@pytest.mark.parametrize("op", ["jitter", "normalized_step_"])
@pytest.mark.parametrize("impl", ["fused", "eager", "copy"])
def test_kernel(benchmark, device, shape, op, impl):
    if device == "cpu" and shape[0] > 1:
        pytest.skip("the large case is timed on CUDA only (python -m benchmarks.bench_kernels covers it on CPU)")
    dev = torch.device(device)
    fn = case_functions(shape, dev)[op][impl]
    if dev.type == "cuda":
        def run():
            fn()
            torch.cuda.synchronize(dev)
    else:
        run = fn
    benchmark.group = f"{op} {device} {'x'.join(map(str, shape))}"
    benchmark(run)
