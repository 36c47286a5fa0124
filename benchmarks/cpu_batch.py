"""``dream_many``'s batch size on the CPU: images/s at each batch size, image size and model, in one run.

For each model and image size, ``--images`` random images go through ``Dreamer.dream_many`` at
each batch size in ``--batches``; the batch sizes alternate within each repeat (a load change on
the shared machine hits all alike), after a warm-up of each. Reported per case: images/s (median
and best run) and ``gain = images/s at batch b / images/s at batch 1``, plus the load. The default
CPU batch size of ``dream_many`` (``fastdream.batching.cpu_batch_size``) is read from these.

    python -m benchmarks.cpu_batch                   # JSON to benchmarks/results/cpu-batch-cpu-<date>.json
    python -m benchmarks.cpu_batch --quick           # one model, 2 sizes, 1 repeat
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from typing import Dict, List

import torch

import fastdream
from fastdream.batching import cpu_batch_size

from .e2e import _commit, device_name
from .results_io import write_results


def run_case(model: str, size: int, batches: List[int], images: int, repeats: int, octaves: int,
             iterations: int) -> Dict[str, object]:
    weights = "default" if model == "efficientnet_lite0" else None  # random weights time the same
    dreamer = fastdream.Dreamer(model, weights=weights, octaves=octaves, iterations=iterations, precision="fp32")
    data = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(images)]

    def run(batch: int) -> float:
        start = time.perf_counter()
        for _ in dreamer.dream_many(data, batch_size=batch, seed=0, prefetch=False):
            pass
        return images / (time.perf_counter() - start)

    for batch in batches:  # warm-up: preparation, oneDNN primitives of each batch shape
        list(dreamer.dream_many(data[:batch], batch_size=batch, seed=0, prefetch=False))
    rates: Dict[int, List[float]] = {b: [] for b in batches}
    load_before = os.getloadavg()[0]
    for r in range(repeats):
        order = batches if r % 2 == 0 else list(reversed(batches))
        for batch in order:
            rates[batch].append(run(batch))
    result: Dict[str, object] = {
        "model": model, "size": size, "images": images, "octaves": octaves, "iterations": iterations,
        "repeats": repeats, "threads": torch.get_num_threads(), "default_batch": cpu_batch_size(size, size),
        "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2),
    }
    base, base_best = statistics.median(rates[batches[0]]), max(rates[batches[0]])
    for batch in batches:
        result[f"batch{batch}_images_per_s"] = statistics.median(rates[batch])
        result[f"batch{batch}_best_images_per_s"] = max(rates[batch])
        result[f"batch{batch}_all"] = [round(v, 3) for v in rates[batch]]
        result[f"batch{batch}_gain"] = statistics.median(rates[batch]) / base
        result[f"batch{batch}_gain_best"] = max(rates[batch]) / base_best
    return result


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,googlenet")
    parser.add_argument("--sizes", default="128,256,384,512")
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes; the first is the baseline")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--octaves", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the first model, 128² and 256², 1 repeat")
    parser.add_argument("--json", help="output file (default: benchmarks/results/cpu-batch-cpu-<date>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models, sizes = args.models.split(","), [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    repeats = args.repeats
    if args.quick:
        models, sizes, repeats = models[:1], sizes[:2], 1
    meta = {"device": device_name(torch.device("cpu")), "torch": torch.__version__, "commit": _commit(),
            "date": datetime.date.today().isoformat()}
    print(f"# {meta['device']}  torch {meta['torch']}  {args.threads} threads  load {os.getloadavg()[0]:.1f}  "
          f"{args.octaves} octaves × {args.iterations} iterations, {args.images} images (medians; gain vs batch "
          f"{batches[0]}, best runs in brackets)")
    results, path = [], None
    for model in models:
        for size in sizes:
            r = run_case(model, size, batches, args.images, repeats, args.octaves, args.iterations)
            r.update(meta)
            results.append(r)
            cells = "  ".join(f"b{b} {r[f'batch{b}_images_per_s']:5.2f}/s {r[f'batch{b}_gain']:4.2f}× "
                              f"[{r[f'batch{b}_gain_best']:4.2f}]" for b in batches)
            print(f"{model:19s} {size:4d}²  {cells}  default {r['default_batch']}  load {r['load_1min_after']:.1f}",
                  flush=True)
            path = write_results(results, "cpu-batch", "cpu", args.json or path)  # after each case: a stopped run keeps them
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
