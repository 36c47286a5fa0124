"""A bounded load test of ``fastdream serve`` (Ray Serve) on 127.0.0.1, with hostile clients.

Starts a local Ray and the Serve app (``fastdream.serve.build_app``) on a free port of 127.0.0.1,
sends ``--requests`` POSTs from ``--clients`` concurrent clients: images of two sizes, and in
every 20 requests one body that is not an image and one asking ``iterations=100000`` (both must
get 400), one small PNG whose header
declares 12000x12000 pixels and one upload over ``--max-upload-mb`` (both must get 413). All the
while ``--slow-clients`` connections send headers and 3 bytes of their body and stall (each must
get 408 after ``--body-timeout``, then reconnects and stalls again). Stops by itself after
``--timeout`` seconds at most, then checks that every request got its answer and that the server
still answers ``GET /``. Each of ``--rounds`` sends the requests twice, calm (no slow clients)
then hostile, so that one run gives the ratio of their latencies. Writes per phase the throughput
(dreamed images/s), the p50/p99 latency of the dreamed requests and what the slow clients got to
``benchmarks/results/serve-<device>-<date>.json``; exits 1 if a request went unanswered or got
another status, or the server is down.

    python -m benchmarks.serve_load --requests 200 --clients 16 --slow-clients 40
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
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import zlib

import numpy as np
from PIL import Image

from .results_io import write_results


def png(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A ~7 KB PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(7_000_000), 9))
            + chunk(b"IEND", b""))


def stall(port: int, stop: threading.Event, answers: list) -> None:
    """One slow client until ``stop``: headers and 3 of 10 000 body bytes, then silence; records
    the status line's code each time the server answers (0: closed without one), then again."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as client:
                client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\nabc")
                line = client.recv(64)
            answers.append(int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0)
        except (OSError, ValueError, IndexError):
            answers.append(0)


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


def run_phase(url: str, port: int, bodies, clients: int, slow_clients: int, body_timeout: float,
              timeout: float) -> dict:
    """Every body POSTed once by ``clients`` threads while ``slow_clients`` stall their uploads:
    ``{"slow_clients", "results": [(status, seconds)], "wall_s", "slow_answers": [status]}``."""
    stop, slow_answers = threading.Event(), []
    slow = [threading.Thread(target=stall, args=(port, stop, slow_answers), daemon=True) for _ in range(slow_clients)]
    for thread in slow:
        thread.start()
    if slow:
        time.sleep(1.0)  # the stalled uploads are in before the load starts
    pool = concurrent.futures.ThreadPoolExecutor(clients)
    begin = time.perf_counter()
    futures = [pool.submit(post, url + query, body, timeout) for body, query in bodies]
    done, pending = concurrent.futures.wait(futures, timeout=timeout)
    wall = time.perf_counter() - begin
    for future in pending:
        future.cancel()
    pool.shutdown(wait=False, cancel_futures=True)
    stop.set()
    for thread in slow:
        thread.join(body_timeout + 30)
    return {"slow_clients": slow_clients, "wall_s": wall, "slow_answers": slow_answers,
            "results": [f.result() if f in done else (0, float("nan")) for f in futures]}


def summary(phase: dict, expected) -> dict:
    """Throughput, p50/p99 latency of the dreamed requests and the statuses of one phase."""
    statuses = [status for status, _ in phase["results"]]
    dreamed = [seconds for (status, seconds), want in zip(phase["results"], expected) if status == want == 200]
    answered = sum(1 for status in statuses if status)
    return {
        "slow_clients": phase["slow_clients"],
        "wall_s": round(phase["wall_s"], 2),
        "throughput_images_per_s": round(len(dreamed) / phase["wall_s"], 3),
        "latency_p50_s": round(statistics.median(dreamed), 3) if dreamed else None,
        "latency_p99_s": round(percentile(dreamed, 99), 3) if dreamed else None,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "all_answered": answered == len(statuses),
        "all_as_expected": statuses == list(expected),
        "slow_client_answers": {str(s): phase["slow_answers"].count(s) for s in sorted(set(phase["slow_answers"]))},
    }


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
    parser.add_argument("--slow-clients", type=int, default=40, help="stalled uploads held open all along")
    parser.add_argument("--body-timeout", type=float, default=5.0, help="the server's --body-timeout, seconds")
    parser.add_argument("--max-upload-mb", type=float, default=1.0, help="the server's --max-upload-mb")
    parser.add_argument("--rounds", type=int, default=1, help="calm / hostile phase pairs, alternated")
    parser.add_argument("--timeout", type=float, default=540.0, help="all load phases together, seconds")
    parser.add_argument("--output", help="JSON path (default: benchmarks/results/serve-cpu-<date>.json)")
    args = parser.parse_args(argv)

    import ray
    import torch
    from ray import serve

    from fastdream.serve import Limits, build_app

    load_before = [round(v, 2) for v in os.getloadavg()]
    sizes = [tuple(int(v) for v in text.split("x"))[::-1] for text in args.sizes.split(",")]
    options = {"octaves": args.octaves, "iterations": args.iterations}
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.perf_counter()
        limits = Limits(body_timeout_s=args.body_timeout, max_upload_mb=args.max_upload_mb, max_megapixels=1.0)
        serve.run(build_app(options, limits=limits, max_batch_size=args.max_batch_size), name="fastdream",
                  route_prefix="/")
        startup = time.perf_counter() - started
        hostile = {19: (b"not an image", "", 400), 9: (png_declaring(12000, 12000), "", 413),
                   14: (bytes(int(args.max_upload_mb * 2**20) + 1), "", 413),
                   4: (None, "?iterations=100000", 400)}  # more work than --max-iterations allows
        bodies, expected = [], []
        for i in range(args.requests):
            body, query, status = hostile.get(i % 20, (None, "", 200))
            bodies.append((png(*sizes[i % len(sizes)], i) if body is None else body, query))
            expected.append(status)
        for body, _ in bodies[: len(sizes)]:  # warm-up: the model's first call per size
            post(url, body, 120)

        phases = []
        for _ in range(args.rounds):  # calm and hostile alternate, so the load of the machine hits both
            for slow_clients in (0, args.slow_clients):
                phases.append(run_phase(url, port, bodies, args.clients, slow_clients, args.body_timeout,
                                        args.timeout / (2 * args.rounds)))
        up = server_up(url)
    finally:
        serve.shutdown()
        ray.shutdown()

    phases = [summary(phase, expected) for phase in phases]
    calm = [p for p in phases if not p["slow_clients"]]
    hostile = [p for p in phases if p["slow_clients"]]
    data = {
        "benchmark": "serve_load",
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "device": "cpu",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
        "config": {
            "requests": args.requests, "clients": args.clients, "sizes_hw": sizes, "options": options,
            "max_batch_size": args.max_batch_size, "bad_requests": expected.count(400),
            "over_the_work_limit_requests": sum(1 for _, query in bodies if query),
            "oversized_requests": expected.count(413), "slow_clients": args.slow_clients,
            "body_timeout_s": args.body_timeout, "max_upload_mb": args.max_upload_mb, "max_megapixels": 1.0,
            "replicas": 1,
            "torch_threads": torch.get_num_threads(), "timeout_s": args.timeout, "rounds": args.rounds,
        },
        "startup_s": round(startup, 2),
        "phases": phases,
        "p50_ratio_hostile_to_calm": round(statistics.median(p["latency_p50_s"] for p in hostile)
                                           / statistics.median(p["latency_p50_s"] for p in calm), 3),
        "all_answered": all(p["all_answered"] for p in phases),
        "all_as_expected": all(p["all_as_expected"] for p in phases),
        "slow_clients_all_408": all(set(p["slow_client_answers"]) == {"408"} for p in hostile),
        "server_up_after": up,
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    for phase in phases:
        print(json.dumps(phase))
    print(json.dumps({k: data[k] for k in ("p50_ratio_hostile_to_calm", "all_answered", "all_as_expected",
                                           "slow_clients_all_408", "server_up_after", "load_average_before")}))
    write_results(data, "serve", "cpu", args.output)
    return 0 if data["all_answered"] and data["all_as_expected"] and data["slow_clients_all_408"] and up else 1


if __name__ == "__main__":
    raise SystemExit(main())
