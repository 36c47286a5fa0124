"""What the Ray folder path (``fastdream.cluster``) and the server (``fastdream.serve``) share:
requiring Ray, connecting to it, and setting up the actors that hold the Dreamers.

Ray is imported only when these are called (``import fastdream`` never does). Where this sits:
docs/architecture.md, "Clusters and servers".
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

RAY_INSTALL_HINT = (
    "needs Ray, which is the optional fastdream[ray] extra: from the fastdream checkout run "
    'pip install ".[ray]", or pip install "ray[data,serve]>=2.40"'
)


def require_ray(what: str = "fastdream.cluster"):
    """Imports and returns ``ray``, or raises ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{what} {RAY_INSTALL_HINT} ({exc})") from None
    return ray


def connect(address: Optional[str]):
    """``(ray, started)``: ``ray.init`` unless connected already (then ``started`` is False and the
    connection is the caller's to keep). ``None``/``"local"`` starts (or joins) a local Ray,
    anything else is a cluster address (``auto``, ``ray://host:10001``, ``host:6379``)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    if address in (None, "local"):
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return ray, True


def actor_resources(ray, threads: Optional[int] = None) -> Tuple[dict, Optional[int], int]:
    """``(ray_actor_options, torch threads, GPUs)`` for the actors that hold Dreamers: one GPU each
    where the cluster has GPUs; else one CPU each (so Ray's read tasks always find one) computing
    with ``threads`` torch threads, by default this process's (``torch.get_num_threads()``). The CPU
    step's per-image mean |g| is summed per thread, so a result is the single-process one bit for
    bit only with the same thread count."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0
    if gpus:
        return {"num_gpus": 1}, threads, gpus
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return {"num_cpus": 1}, threads, 0


def actor_dreamer_options(options: dict, threads: Optional[int]) -> dict:
    """Inside an actor: sets torch's thread count (``None``: leaves Ray's) and returns the
    ``Dreamer`` options for this actor (``device`` the actor's GPU where it has one)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    options = dict(options)
    if options.get("device") is None and torch.cuda.is_available():
        options["device"] = "cuda"  # the actor's GPU (Ray sets CUDA_VISIBLE_DEVICES)
    return options
