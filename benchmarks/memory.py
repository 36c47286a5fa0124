"""Peak memory against image size, untiled and within a budget (issue 5).

Each case runs in a fresh subprocess (peak RSS is per process): one dream of a random square
image, 1 octave × ``--iterations`` with the default model, either untiled or with ``max_memory``.
CPU: peak resident set size (``ru_maxrss``); CUDA: ``torch.cuda.max_memory_allocated``.

    python -m benchmarks.memory --device cpu --budget-mib 2048
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from .results_io import write_results

CHILD = r"""
import json, resource, sys, time, torch, fastdream
size, budget, device, iterations = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
if device == "cuda":
    image = image.cuda()
dreamer = fastdream.Dreamer(octaves=1, iterations=iterations, device=device,
                            max_memory=None if budget == "none" else int(budget))
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
out = dreamer(image, seed=0)
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
peak = (torch.cuda.max_memory_allocated() if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
tiling = dreamer.last_tiling  # of the call's (one) octave
print(json.dumps({"peak_bytes": peak, "baseline_rss_bytes": base_rss, "seconds": seconds,
                  "tile": tiling.tile if tiling else None}))
"""


def run(size: int, budget, device: str, iterations: int, timeout: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(size), "none" if budget is None else str(budget), device, str(iterations)],
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="512,1024,2048,4096,8192")
    parser.add_argument("--untiled-max", type=int, default=2048, help="largest size tried untiled")
    parser.add_argument("--budget-mib", type=int, default=2048)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    budget = args.budget_mib * 2**20
    rows = []
    print(f"{'size':>6s} {'mode':>14s} {'peak MiB':>9s} {'tile':>5s} {'seconds':>8s}")
    for size in (int(s) for s in args.sizes.split(",")):
        for label, b in (("untiled", None), (f"{args.budget_mib} MiB budget", budget)):
            if b is None and size > args.untiled_max:
                continue
            start = time.time()
            r = run(size, b, args.device, args.iterations, args.timeout)
            r.update(size=size, mode=label, budget_bytes=b, device=args.device, iterations=args.iterations)
            rows.append(r)
            if "error" in r:
                print(f"{size:6d} {label:>14s} error: {r['error']} ({time.time() - start:.0f} s)", flush=True)
            else:
                print(f"{size:6d} {label:>14s} {r['peak_bytes'] / 2**20:9.0f} {str(r['tile']):>5s} "
                      f"{r['seconds']:8.1f}", flush=True)
    write_results(rows, "memory", args.device, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
