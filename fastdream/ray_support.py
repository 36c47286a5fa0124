"""What the Ray folder path (``fastdream.cluster``) and the server (``fastdream.serve``) share:
requiring Ray, starting or joining it, and setting up the actors that hold the Dreamers.

Workers must run the driver's fastdream: Ray puts the driver's working directory first on every
worker's ``sys.path``, so a driver started in a source checkout would have its workers import
``./fastdream`` (the sources, without the compiled extension: the reference backend, other
pictures). :func:`init_ray` ships the driver's own package as the job's ``working_dir`` instead,
and :func:`connect` asks a worker for its fastdream before anything runs, stopping with one line
where it differs from the driver's (a Ray that someone else started in a checkout).

Ray is imported only when these are called (``import fastdream`` never does). Where this sits:
docs/architecture.md, "Clusters and servers".
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
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


class WorkerMismatchError(RuntimeError):
    """Ray's workers run another fastdream than the driver (other code, or without the compiled
    extension the driver has): their pictures would differ, so the run stops before it starts."""


def init_ray(address: Optional[str] = None, **kwargs):
    """``ray.init`` with the driver's fastdream package shipped as the job's ``working_dir`` (so
    every worker imports it, whatever the working directory) and no dashboard; ``address``:
    ``None``/``"local"`` for a local Ray, else a cluster address. Returns ``ray``."""
    ray = require_ray()
    import fastdream

    # The token-authentication notice of every start is Ray's business (its logs), not the user's.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ship = tempfile.mkdtemp(prefix="fastdream-ray-")
    try:
        shutil.copytree(os.path.dirname(os.path.abspath(fastdream.__file__)), os.path.join(ship, "fastdream"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        kwargs.setdefault("log_to_driver", False)
        if address in (None, "local"):
            kwargs.setdefault("include_dashboard", False)
        else:
            kwargs["address"] = address
        ray.init(runtime_env={"working_dir": ship}, **kwargs)  # uploaded (copied) by ray.init
    finally:
        shutil.rmtree(ship, ignore_errors=True)
    return ray


def connect(address: Optional[str]):
    """``(ray, started)``: :func:`init_ray` unless connected already (then ``started`` is False and
    the connection is the caller's to keep). ``None``/``"local"`` starts (or joins) a local Ray,
    anything else is a cluster address (``auto``, ``ray://host:10001``, ``host:6379``). Then
    :func:`check_workers`."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        init_ray(address, logging_level=logging.WARNING)
    try:
        check_workers(ray)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return ray, started


def check_workers(ray) -> None:
    """:class:`WorkerMismatchError` unless a Ray worker imports the fastdream this driver runs (the
    same sources, and the compiled extension where the driver has it): one task, no retries."""
    probe = ray.remote(num_cpus=0, max_retries=0)(_worker_fastdream)
    try:
        theirs = ray.get(probe.remote())
    except Exception as exc:  # a worker whose fastdream does not even import: also not the driver's
        theirs = ("?", "?", False, f"none that imports ({type(exc).__name__})")
    ours = fingerprint()
    if tuple(theirs[:3]) == ours:
        return
    what = "its compiled extension does not load" if ours[2] and not theirs[2] else "other code"
    raise WorkerMismatchError(
        f"Ray's workers import fastdream {theirs[0]} from {theirs[3]}, not the driver's ({what}: the pictures "
        "would differ); start Ray from another folder than the source checkout, or let fastdream start it"
    )


def _worker_fastdream() -> Tuple[str, str, bool, str]:
    """In a worker: its :func:`fingerprint` and where its fastdream lives."""
    import fastdream

    from fastdream.ray_support import fingerprint as worker_fingerprint

    return (*worker_fingerprint(), os.path.dirname(os.path.abspath(fastdream.__file__)))


@functools.lru_cache(maxsize=None)
def fingerprint() -> Tuple[str, str, bool]:
    """``(version, digest of the package's Python sources, compiled extension importable)`` of the
    fastdream this process runs."""
    import fastdream

    from . import _extension

    root = os.path.dirname(os.path.abspath(fastdream.__file__))
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                digest.update(os.path.relpath(os.path.join(folder, name), root).encode())
                with open(os.path.join(folder, name), "rb") as handle:
                    digest.update(handle.read())
    return fastdream.__version__, digest.hexdigest()[:16], _extension.available()


def actor_resources(ray, threads: Optional[int] = None) -> Tuple[dict, Optional[int], int]:
    """``(ray_actor_options, torch threads, GPUs)`` for the actors that hold Dreamers: one GPU each
    where the cluster has GPUs; else one CPU each (so Ray's read tasks always find one) computing
    with ``threads`` torch threads, by default this process's (``torch.get_num_threads()``, which
    ``--threads`` sets). The CPU step's per-image mean |g| is summed per thread, so a result is
    the single-process one bit for bit only with the same thread count."""
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

