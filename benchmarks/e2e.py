"""End-to-end DeepDream timing: reference vs fastdream vs the floor, in one run (docs/architecture.md, "Measuring").

- ``reference``: the seed algorithm in plain eager float32 PyTorch (``torch.roll``,
  ``g.abs().mean()``, the same truncated model, NCHW, BatchNorm as trained), the way peers write it.
- ``fastdream``: ``fastdream.Dreamer`` with its defaults (fused ops, BN folded, channels_last, the
  precision ``"auto"`` picks on this device).
- ``floor``: forward + backward-to-input of fastdream's own truncated model at the same octave
  shapes, precision and layout, ``octaves × iterations`` times, with nothing else.

Reported: ``speedup = reference / fastdream`` and ``overhead = fastdream / floor``.

    python -m benchmarks.e2e --device cpu                 # the CPU cases, JSON to benchmarks/results/
    python -m benchmarks.e2e --device cuda --repeats 5    # the GPU cases (GoogLeNet, EfficientNet-Lite0)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List

import torch

import fastdream
from fastdream._reference import dream_reference
from fastdream.models import LayerTap, get_spec
from fastdream.engine import resolve_precision
from fastdream.models.prepare import freeze, prepare_for_dreaming
from fastdream.objectives import ObjectivePlan, compose
from fastdream.octaves import octave_sizes, shift_table

from .results_io import write_results

CPU_CASES = [
    ("efficientnet_lite0", "_blocks.9", 256, 1),
    ("efficientnet_lite0", "_blocks.9", 512, 1),
    ("googlenet", "inception4c", 512, 1),
]
CUDA_CASES = [
    (model, layer, size, batch)
    for model, layer in (("googlenet", "inception4c"), ("efficientnet_lite0", "_blocks.9"))
    for size in (512, 1024)
    for batch in (1, 8)
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: caches, cudnn autotuning, one-off allocations
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(model: str, layer: str, size: int, batch: int, device: torch.device, repeats: int,
             octaves: int = 4, iterations: int = 10) -> Dict[str, object]:
    weights = "default" if model == "efficientnet_lite0" else None  # no downloads: random weights time the same
    image = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    options = dict(octaves=octaves, iterations=iterations)

    dreamer = fastdream.Dreamer(model, layer, weights=weights, device=device, **options)
    fast = lambda: dreamer(image, seed=0)  # noqa: E731

    spec = get_spec(model)
    plain = freeze(spec.build(weights)).to(device)
    tap = LayerTap(plain, [spec.aliases.get(layer, layer)])
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    objective = compose(ObjectivePlan({spec.aliases.get(layer, layer): 1.0}))
    sizes = octave_sizes(size, size, octaves, dreamer.octave_scale, dreamer.min_size)

    def reference():
        gen = torch.Generator().manual_seed(0)
        tables = [shift_table(iterations, batch, dreamer.jitter, gen) for _ in sizes]
        return dream_reference(image, lambda v: tap((v - mean) / std), objective, sizes, tables, dreamer.step_size)

    # the floor: the model as the Dreamer prepares it (traced, truncated, BN folded, channels_last)
    name = spec.aliases.get(layer, layer)
    truncated = LayerTap(prepare_for_dreaming(plain, [name]), [name])
    dtype = resolve_precision(dreamer.precision, device)
    inputs = [torch.rand(batch, 3, h, w, device=device) for h, w in sizes]

    def floor():
        for x in inputs:
            for _ in range(iterations):
                x_in = x.detach().requires_grad_(True)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    acts = truncated((x_in - mean) / std)
                torch.autograd.grad(objective(acts), x_in)

    result = {
        "model": model, "layer": layer, "size": size, "batch": batch,
        "octaves": octaves, "iterations": iterations,
        "precision": str(dtype or torch.float32).replace("torch.", ""),
        "backend": fastdream.backend_info()["devices"].get(device.type),
    }
    result["reference_s"] = _median_time(reference, device, repeats)
    result["fastdream_s"] = _median_time(fast, device, repeats)
    result["floor_s"] = _median_time(floor, device, repeats)
    result["speedup"] = result["reference_s"] / result["fastdream_s"]
    result["overhead"] = result["fastdream_s"] / result["floor_s"]
    return result


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the first case only, 2 octaves × 3 iterations")
    parser.add_argument("--json", help="output file (default: benchmarks/results/<device>-<date>.json)")
    parser.add_argument("--cuda-tests", default=None, help="'PASSED,FAILED' counts of the CUDA test run to record")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cases = CUDA_CASES if device.type == "cuda" else CPU_CASES
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    extra = dict(octaves=2, iterations=3) if args.quick else {}
    meta = {
        "device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "commit": _commit(), "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }
    if args.cuda_tests:
        passed, failed = (int(v) for v in args.cuda_tests.split(","))
        meta.update(cuda_tests_passed=passed, cuda_tests_failed=failed)
    runs = []
    print(f"# {meta['device']}  torch {meta['torch']}  threads {meta['threads']}  commit {meta['commit'][:10]}")
    print(f"{'model':20s} {'layer':12s} {'size':>5s} {'B':>3s} {'prec':>9s} {'reference':>10s} "
          f"{'fastdream':>10s} {'floor':>8s} {'speedup':>8s} {'overhead':>8s}")
    for model, layer, size, batch in cases[:1] if args.quick else cases:
        r = run_case(model, layer, size, batch, device, args.repeats, **extra)
        r.update(meta)
        runs.append(r)
        print(f"{model:20s} {layer:12s} {size:5d} {batch:3d} {r['precision']:>9s} {r['reference_s']:9.3f}s "
              f"{r['fastdream_s']:9.3f}s {r['floor_s']:7.3f}s {r['speedup']:7.2f}× {r['overhead']:7.2f}×", flush=True)
    write_results(runs, "", "cpu" if device.type == "cpu" else meta["device"], args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
