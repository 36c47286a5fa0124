"""Kernel benchmark: the fused ops against the eager torch composition and the bytes-moved floor.

    python -m benchmarks.bench_kernels [--device cpu|cuda] [--json PATH] [--reps N]

Per case (one shape, one op), three times, each the median of ``reps`` runs after warm-up
(CUDA: events around each run on the current stream; CPU: perf_counter):
  - ``fused``: ``fastdream.ops`` (the compiled kernels when built, else the reference fallback);
  - ``eager``: the way peers write it in plain torch: per-image ``torch.roll`` with Python-int shifts
    (the best case for eager: no device-to-host read of the shifts), ``abs().mean()``, divide,
    multiply-add, ``clamp_``;
  - ``floor``: the bytes the op must move at the speed of a plain ``copy_`` of the same tensor.
    jitter reads and writes each element once: the copy itself. The step reads img and grad and writes
    img, 12 bytes per float32 element against the copy's 8: 1.5 copies.
Reported: ``speedup = eager / fused`` and ``overhead = fused / floor``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch

from fastdream import backends, ops

ROOT = Path(__file__).resolve().parent.parent
STEP, LO, HI = 1e-3, 0.0, 1.0
SHAPES = {"cuda": [(1, 3, 512, 512), (8, 3, 1024, 1024)], "cpu": [(1, 3, 512, 512), (8, 3, 1024, 1024)]}


# -------------------------------------------------------------------------- eager compositions


def eager_jitter(src: torch.Tensor, shifts: Sequence[Sequence[int]]) -> torch.Tensor:
    return torch.stack([torch.roll(src[b], (dy, dx), (-2, -1)) for b, (dy, dx) in enumerate(shifts)])


def eager_step(img, grad, shifts, step_size=STEP, lo=LO, hi=HI) -> torch.Tensor:
    g = grad.float()
    mean = g.abs().flatten(1).mean(dim=1).view(-1, 1, 1, 1)
    g = eager_jitter(g, [(-dy, -dx) for dy, dx in shifts])
    return img.add_(g * (step_size / mean)).clamp_(lo, hi)


# -------------------------------------------------------------------------------------- timing


def measure(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 3) -> List[float]:
    """Seconds per run of ``fn``, ``reps`` samples after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def make_case(shape, device: torch.device, seed: int = 0):
    """Random inputs of one shape: image in (0, 1), gradient, shifts on the device and on the host."""
    gen = torch.Generator().manual_seed(seed)
    img = torch.rand(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    host = torch.randint(-64, 65, (shape[0], 2), generator=gen, dtype=torch.int32)
    return img, grad, host.to(device), [tuple(r) for r in host.tolist()]


def case_functions(shape, device: torch.device) -> Dict[str, Dict[str, Callable[[], object]]]:
    """{op: {"fused": fn, "eager": fn, "copy": fn}} for one shape; the step runs on a scratch copy."""
    img, grad, shifts, host = make_case(shape, device)
    work = img.clone()
    out = torch.empty_like(img)
    dst = torch.empty_like(img)
    copy = lambda: dst.copy_(img)  # noqa: E731
    return {
        "jitter": {
            "fused": lambda: ops.jitter(img, shifts, out=out),
            "eager": lambda: eager_jitter(img, host),
            "copy": copy,
        },
        "normalized_step_": {
            "fused": lambda: ops.normalized_step_(work, grad, shifts, STEP, LO, HI),
            "eager": lambda: eager_step(work, grad, host),
            "copy": copy,
        },
    }


# bytes each op must move per element, in units of a float32 copy (8 bytes: one read, one write)
FLOOR_COPIES = {"jitter": 1.0, "normalized_step_": 1.5}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(device: torch.device, reps: int, shapes=None) -> dict:
    rows = []
    for shape in shapes or SHAPES[device.type]:
        fns = case_functions(shape, device)
        copy_s = statistics.median(measure(fns["jitter"]["copy"], device, reps))
        for op, f in fns.items():
            fused = statistics.median(measure(f["fused"], device, reps))
            eager = statistics.median(measure(f["eager"], device, reps))
            floor = copy_s * FLOOR_COPIES[op]
            rows.append({
                "op": op, "shape": list(shape),
                "fused_ms": fused * 1e3, "eager_ms": eager * 1e3, "floor_ms": floor * 1e3,
                "speedup": eager / fused, "overhead": fused / floor,
            })
    return {
        "benchmark": "kernels",
        "device": device_name(device),
        "device_type": device.type,
        "backend": backends.select_backend(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reps": reps,
        "timing": "median; CUDA events on the current stream" if device.type == "cuda" else "median; perf_counter",
        "floor": "bytes the op must move at the speed of copy_ of the same float32 tensor",
        "results": rows,
    }


def print_table(report: dict) -> None:
    print(f"{report['device']} ({report['backend']}), torch {report['torch']}, commit {report['git_commit'][:12]}")
    header = f"{'op':<24}{'shape':<20}{'fused ms':>10}{'eager ms':>10}{'floor ms':>10}{'speedup':>9}{'overhead':>9}"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        shape = "x".join(str(s) for s in r["shape"])
        print(f"{r['op']:<24}{shape:<20}{r['fused_ms']:>10.3f}{r['eager_ms']:>10.3f}{r['floor_ms']:>10.3f}"
              f"{r['speedup']:>8.2f}x{r['overhead']:>8.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--reps", type=int, help="timed runs per measurement (default: 50 on CUDA, 15 on CPU)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    device = torch.device(args.device)
    report = run(device, args.reps or (50 if device.type == "cuda" else 15))
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
