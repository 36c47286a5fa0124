"""A bounded load test of ``fastdream serve`` (Ray Serve) on 127.0.0.1.

Starts a local Ray and the Serve app (``fastdream.serve.build_app``) on a free port of 127.0.0.1,
sends ``--requests`` POSTs from ``--clients`` concurrent clients (images of two sizes, and every
20th request a body that is not an image, which must get 400), stops by itself after ``--timeout``
seconds at most, then checks that every request got an answer and that the server still answers
``GET /``. Writes throughput (dreamed images/s over the whole run) and the p50/p99 latency of the
dreamed requests to ``benchmarks/results/serve-<device>-<date>.json``; exits 1 if a request went
unanswered or the server is down.

    python -m benchmarks.serve_load --requests 200 --clients 16
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from .results_io import write_results


def png(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: bytes, timeout: float):
    """``(status, seconds)``; status 0 when no answer came (connection error or timeout)."""
    start = time.perf_counter()
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    except (urllib.error.URLError, OSError):
        status = 0
    return status, time.perf_counter() - start


def server_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response).get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sizes", default="128x128,96x128", help="image sizes WxH, comma-separated")
    parser.add_argument("--octaves", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=540.0, help="the whole load phase, seconds")
    parser.add_argument("--output", help="JSON path (default: benchmarks/results/serve-cpu-<date>.json)")
    args = parser.parse_args(argv)

    import ray
    import torch
    from ray import serve

    from fastdream.serve import build_app

    sizes = [tuple(int(v) for v in text.split("x"))[::-1] for text in args.sizes.split(",")]
    options = {"octaves": args.octaves, "iterations": args.iterations}
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.perf_counter()
        serve.run(build_app(options, max_batch_size=args.max_batch_size), name="fastdream", route_prefix="/")
        startup = time.perf_counter() - started
        bodies = [b"not an image" if i % 20 == 19 else png(*sizes[i % len(sizes)], i) for i in range(args.requests)]
        for body in bodies[: len(sizes)]:  # warm-up: the model's first call per size
            post(url, body, 120)

        deadline = time.perf_counter() + args.timeout
        pool = concurrent.futures.ThreadPoolExecutor(args.clients)
        begin = time.perf_counter()
        futures = [pool.submit(post, url, body, args.timeout) for body in bodies]
        done, pending = concurrent.futures.wait(futures, timeout=max(1.0, deadline - time.perf_counter()))
        wall = time.perf_counter() - begin
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        results = [f.result() if f in done else (0, float("nan")) for f in futures]
        up = server_up(url)
    finally:
        serve.shutdown()
        ray.shutdown()

    expected = [400 if body == b"not an image" else 200 for body in bodies]
    statuses = [status for status, _ in results]
    dreamed = [seconds for (status, seconds), want in zip(results, expected) if status == want == 200]
    answered = sum(1 for status in statuses if status)
    data = {
        "benchmark": "serve_load",
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "device": "cpu",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
        "config": {
            "requests": args.requests, "clients": args.clients, "sizes_hw": sizes, "options": options,
            "max_batch_size": args.max_batch_size, "bad_requests": expected.count(400), "replicas": 1,
            "torch_threads": torch.get_num_threads(), "timeout_s": args.timeout,
        },
        "startup_s": round(startup, 2),
        "wall_s": round(wall, 2),
        "throughput_images_per_s": round(len(dreamed) / wall, 3),
        "latency_p50_s": round(statistics.median(dreamed), 3) if dreamed else None,
        "latency_p99_s": round(percentile(dreamed, 99), 3) if dreamed else None,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "answered": answered,
        "all_answered": answered == len(bodies),
        "all_as_expected": statuses == expected,
        "server_up_after": up,
    }
    print(json.dumps({k: data[k] for k in ("wall_s", "throughput_images_per_s", "latency_p50_s", "latency_p99_s",
                                           "statuses", "all_answered", "server_up_after")}))
    write_results(data, "serve", "cpu", args.output)
    return 0 if data["all_answered"] and data["all_as_expected"] and up else 1


if __name__ == "__main__":
    raise SystemExit(main())
