"""Kernel benchmark: the fused ops against the eager torch composition and the bytes-moved floor.

    python -m benchmarks.bench_kernels [--device cpu|cuda] [--json PATH] [--reps N]

Per case (one shape, one op) three contenders:
  - ``fused``: ``fastdream.ops`` (the compiled kernels when built, else the reference fallback);
  - ``eager``: the way peers write it in plain torch: per-image ``torch.roll`` with Python-int shifts
    (the best case for eager: no device-to-host read of the shifts), ``abs().mean()``, divide,
    multiply-add, ``clamp_``;
  - ``copy``, the floor: the bytes the op must move at the speed of a plain ``copy_`` of the same
    tensor. jitter reads and writes each element once: the copy itself. The step reads img and grad
    and writes img, 12 bytes per float32 element against the copy's 8: 1.5 copies.
They are timed in alternation (one sample of each in turn, ``reps`` rounds; medians), so a change
of load hits all three alike. A sample is ``calls`` back-to-back calls (as many as make it last
about 2 ms on CUDA, 20 ms on the CPU), reported per call:
  - CUDA ``*_ms``: one replay of a CUDA graph of the ``calls`` calls between one event pair: the
    device time of the op, without host launch costs;
  - CUDA ``*_dispatch_ms``: the ``calls`` calls issued from Python between one event pair: what a
    caller launching each op pays (host dispatch included wherever it is slower than the kernels);
  - CPU: ``perf_counter`` around the calls (dispatch included; both figures are the same).
Reported: ``speedup = eager / fused`` (and ``speedup_dispatch``), ``overhead = fused / floor`` and
``bandwidth_fraction = floor / fused``: the share of the copy's bandwidth the op reaches on its own
minimum of bytes (the step's two passes read the gradient twice: from the L2 the second time where
a group of images fits in half of it, else from memory, 16 bytes per element against 12).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
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
TARGET_S = {"cuda": 2e-3, "cpu": 20e-3}  # the length of one timed sample
MAX_CALLS = 1000


# -------------------------------------------------------------------------- eager compositions


def eager_jitter(src: torch.Tensor, shifts: Sequence[Sequence[int]]) -> torch.Tensor:
    return torch.stack([torch.roll(src[b], (dy, dx), (-2, -1)) for b, (dy, dx) in enumerate(shifts)])


def eager_step(img, grad, shifts, step_size=STEP, lo=LO, hi=HI) -> torch.Tensor:
    g = grad.float()
    mean = g.abs().flatten(1).mean(dim=1).view(-1, 1, 1, 1)
    g = eager_jitter(g, [(-dy, -dx) for dy, dx in shifts])
    return img.add_(g * (step_size / mean)).clamp_(lo, hi)


# -------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calls_per_sample(fn: Callable[[], object], device: torch.device, warmup: int = 3) -> int:
    """How many back-to-back calls of ``fn`` make one sample last about ``TARGET_S`` (after warm-up)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(MAX_CALLS, math.ceil(TARGET_S[device.type] / one)))


class Contender:
    """One function, its ``calls`` per sample, and its samples (seconds per call)."""

    def __init__(self, fn: Callable[[], object], device: torch.device, calls: int):
        self.fn, self.device, self.calls = fn, device, calls
        self.device_s: List[float] = []  # CUDA: graph replays
        self.dispatch_s: List[float] = []  # calls issued one by one
        self.graph = None
        if device.type == "cuda":
            self.graph = self._capture()

    def _capture(self):
        """A CUDA graph of ``calls`` calls (warmed up on a side stream first, as torch asks)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(self.calls):
                self.fn()
        torch.cuda.synchronize(self.device)
        return graph

    def sample(self) -> None:
        if self.device.type == "cuda":
            for record, run in ((self.device_s, self.graph.replay), (self.dispatch_s, self._calls)):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                record.append(start.elapsed_time(end) / 1e3 / self.calls)
        else:
            t0 = time.perf_counter()
            self._calls()
            elapsed = (time.perf_counter() - t0) / self.calls
            self.device_s.append(elapsed)
            self.dispatch_s.append(elapsed)

    def _calls(self) -> None:
        for _ in range(self.calls):
            self.fn()

    def medians(self):
        return statistics.median(self.device_s), statistics.median(self.dispatch_s)


def measure_alternating(fns: Dict[str, Callable[[], object]], device: torch.device, reps: int):
    """{name: (seconds per call on the device, seconds per call dispatched one by one)}, the
    contenders sampled in turn ``reps`` times."""
    contenders = {name: Contender(fn, device, calls_per_sample(fn, device)) for name, fn in fns.items()}
    for _ in range(reps):
        for contender in contenders.values():
            contender.sample()
    return {name: c.medians() for name, c in contenders.items()}, {name: c.calls for name, c in contenders.items()}


def make_case(shape, device: torch.device, seed: int = 0):
    """Random inputs of one shape: image in (0, 1), gradient, shifts on the device and on the host."""
    gen = torch.Generator().manual_seed(seed)
    img = torch.rand(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    host = torch.randint(-64, 65, (shape[0], 2), generator=gen, dtype=torch.int32)
    return img, grad, host.to(device), [tuple(r) for r in host.tolist()]


def case_functions(shape, device: torch.device) -> Dict[str, Dict[str, Callable[[], object]]]:
    """{op: {"fused": fn, "eager": fn, "copy": fn}} for one shape; the steps run on a scratch copy.
    ``normalized_step_ nhwc``: the gradient channels_last, as a prepared (channels_last) model hands
    it back."""
    img, grad, shifts, host = make_case(shape, device)
    nhwc = grad.contiguous(memory_format=torch.channels_last)
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
        "normalized_step_ nhwc": {
            "fused": lambda: ops.normalized_step_(work, nhwc, shifts, STEP, LO, HI),
            "eager": lambda: eager_step(work, nhwc, host),
            "copy": copy,
        },
    }


# bytes each op must move per element, in units of a float32 copy (8 bytes: one read, one write)
FLOOR_COPIES = {"jitter": 1.0, "normalized_step_": 1.5, "normalized_step_ nhwc": 1.5}


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
        for op, fns in case_functions(shape, device).items():
            times, calls = measure_alternating(fns, device, reps)
            (fused, fused_d), (eager, eager_d), (copy, copy_d) = times["fused"], times["eager"], times["copy"]
            floor = copy * FLOOR_COPIES[op]
            rows.append({
                "op": op, "shape": list(shape), "calls": calls,
                "fused_ms": fused * 1e3, "eager_ms": eager * 1e3, "floor_ms": floor * 1e3,
                "fused_dispatch_ms": fused_d * 1e3, "eager_dispatch_ms": eager_d * 1e3,
                "copy_gb_per_s": 8 * math.prod(shape) / copy / 1e9,
                "speedup": eager / fused, "speedup_dispatch": eager_d / fused_d,
                "overhead": fused / floor, "bandwidth_fraction": floor / fused,
            })
    return {
        "benchmark": "kernels",
        "device": device_name(device),
        "device_type": device.type,
        "backend": backends.select_backend(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "load_average": list(_load_average()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reps": reps,
        "timing": ("medians of alternating samples, per call; *_ms: a CUDA graph of `calls` calls between "
                   "one event pair; *_dispatch_ms: the calls issued from Python between one event pair"
                   if device.type == "cuda" else
                   "medians of alternating samples of `calls` calls, per call; perf_counter"),
        "floor": "bytes the op must move at the speed of copy_ of the same float32 tensor",
        "results": rows,
    }


def _load_average():
    try:
        return os.getloadavg()
    except (AttributeError, OSError):  # not on Windows
        return ()


def print_table(report: dict) -> None:
    print(f"{report['device']} ({report['backend']}), torch {report['torch']}, commit {report['git_commit'][:12]}, "
          f"load {' '.join(f'{v:.1f}' for v in report['load_average'])}")
    header = (f"{'op':<24}{'shape':<14}{'fused ms':>10}{'dispatch':>10}{'eager ms':>10}{'dispatch':>10}"
              f"{'floor ms':>10}{'speedup':>9}{'(disp.)':>9}{'overhead':>9}{'of copy':>8}")
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        shape = "x".join(str(s) for s in r["shape"])
        print(f"{r['op']:<24}{shape:<14}{r['fused_ms']:>10.3f}{r['fused_dispatch_ms']:>10.3f}{r['eager_ms']:>10.3f}"
              f"{r['eager_dispatch_ms']:>10.3f}{r['floor_ms']:>10.3f}{r['speedup']:>8.2f}x{r['speedup_dispatch']:>8.2f}x"
              f"{r['overhead']:>8.2f}x{r['bandwidth_fraction']:>7.0%}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--reps", type=int, help="samples per contender (default: 30 on CUDA, 11 on CPU)")
    parser.add_argument("--shapes", help="B,C,H,W shapes separated by ';' (default: 1,3,512,512;8,3,1024,1024)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    device = torch.device(args.device)
    shapes = [tuple(int(v) for v in item.split(",")) for item in args.shapes.split(";")] if args.shapes else None
    report = run(device, args.reps or (30 if device.type == "cuda" else 11), shapes)
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
