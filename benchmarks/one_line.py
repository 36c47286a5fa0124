"""Repeated ``fastdream.dream(x)`` against calls on one ``Dreamer``, in one run (issue 19, part 2).

Three contenders, called in turn (round-robin, so the machine's load falls on all alike), each on the
same image and seed: ``dreamer`` (a Dreamer built once, then called), ``dream`` (the one-line API,
its cache warm), ``dream_cold`` (the one-line API with its cache cleared before every call: what
every call cost before the cache). Reported: medians and ``dream / dreamer``, ``dream_cold / dreamer``.

    python -m benchmarks.one_line --threads 1 --rounds 9      # 128×160, 2 octaves × 4 iterations
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import fastdream

from .results_io import write_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--octaves", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = dict(octaves=args.octaves, iterations=args.iterations)
    image = torch.rand(3, args.height, args.width, generator=torch.Generator().manual_seed(0))

    dreamer = fastdream.Dreamer(**options)
    contenders = {
        "dreamer": lambda: dreamer(image, seed=0),
        "dream": lambda: fastdream.dream(image, seed=0, **options),
        "dream_cold": lambda: (fastdream.dream.cache_clear(), fastdream.dream(image, seed=0, **options)),
    }
    for fn in contenders.values():  # warm-up: the file cache, the allocator, dream()'s cache
        fn()
    times = {name: [] for name in contenders}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "case": f"{args.height}x{args.width}, {args.octaves} octaves x {args.iterations}, default model, cpu",
        "threads": args.threads, "rounds": args.rounds, "load_before": load_before, "load_after": os.getloadavg(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "median_s": median, "times_s": times,
        "dream_over_dreamer": median["dream"] / median["dreamer"],
        "dream_cold_over_dreamer": median["dream_cold"] / median["dreamer"],
    }
    for name, seconds in median.items():
        print(f"{name:>11}: {seconds * 1000:8.1f} ms")
    print(f"dream / dreamer = {result['dream_over_dreamer']:.3f}; "
          f"uncached dream / dreamer = {result['dream_cold_over_dreamer']:.3f}; load {load_before[0]:.1f}")
    write_results(result, "one-line", "cpu", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
