"""Throughput and soak (issue 5): images/s against batch size, and 1000 calls with flat memory.

- throughput: ``Dreamer.dream_many`` over ``--images`` random 512² images at each batch size;
  images/s = images / wall time (after one warm-up batch).
- soak: ``--soak`` calls of one Dreamer on a small image; resident memory (CPU) or allocated
  memory (CUDA) and the time per call are sampled every 10 % of the run. Flat = no leak.

    python -m benchmarks.throughput --device cpu --iterations 2 --octaves 2
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch

import fastdream

from .results_io import write_results


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_now(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)
    return rss_bytes()


def throughput(dreamer, device, size: int, batch: int, images: int) -> float:
    data = [torch.rand(3, size, size, device=device) for _ in range(images)]
    list(dreamer.dream_many(data[:batch], batch_size=batch, seed=0, prefetch=False))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in dreamer.dream_many(data, batch_size=batch, seed=0, prefetch=False):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def soak(dreamer, device, calls: int, size: int):
    image = torch.rand(3, size, size, device=device)
    samples, times = [], []
    every = max(calls // 10, 1)
    for i in range(calls):
        start = time.perf_counter()
        dreamer(image, seed=i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        if (i + 1) % every == 0:
            samples.append({"call": i + 1, "memory_bytes": memory_now(device),
                            "ms_per_call": 1000 * statistics.median(times[-every:])})
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--octaves", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--soak", type=int, default=1000)
    parser.add_argument("--soak-size", type=int, default=96)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dreamer = fastdream.Dreamer(octaves=args.octaves, iterations=args.iterations, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "date": datetime.date.today().isoformat(), "size": args.size, "octaves": args.octaves,
              "iterations": args.iterations, "throughput": [], "soak": None}
    print(f"# {name}, {args.size}², {args.octaves} octaves × {args.iterations} iterations")
    for batch in (int(b) for b in args.batches.split(",")):
        ips = throughput(dreamer, device, args.size, batch, max(args.images, batch))
        result["throughput"].append({"batch": batch, "images_per_s": ips})
        print(f"batch {batch:3d}: {ips:8.3f} images/s", flush=True)
    if args.soak:
        soak_dreamer = fastdream.Dreamer(octaves=1, iterations=1, device=device)
        result["soak"] = soak(soak_dreamer, device, args.soak, args.soak_size)
        for s in result["soak"]:
            print(f"soak call {s['call']:5d}: {s['memory_bytes'] / 2**20:8.1f} MiB, {s['ms_per_call']:7.2f} ms/call")
    write_results(result, "throughput", name, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
