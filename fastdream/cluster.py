"""Dream folders of images on a Ray cluster with Ray Data (the optional ``[ray]`` extra).

    >>> from fastdream.cluster import dream_files
    >>> report = dream_files(["in/a.png", "in/b.jpg"], ["out/a.png", "out/b.png"],
    ...                      {"octaves": 4, "iterations": 10}, seed=7)
    >>> report.failed                                  # [(source, message), ...]

``fastdream dream in/ -o out/ --ray [ADDRESS]`` calls :func:`dream_files` with the command line's
plan (``fastdream.jobs``). Inputs are read with
``ray.data.read_binary_files`` (local paths or URIs such as ``s3://bucket/in/``), dreamed by a
pool of actors that each build one :class:`~fastdream.Dreamer` (one actor per GPU with
``num_gpus=1`` on GPU clusters), and every result is written by the actor that dreamed it, to the
output named after its input (an atomic local write, or ``pyarrow.fs`` for URIs). The driver only
plans and reports: bad images are reported with their name and reason, the rest are written.

Results are the single-process CLI's, byte for byte, for the same seed: images are dreamed in the
same batches with the same seeds (:func:`plan_batches`, the command line's rule: with batch size 1
every image gets ``seed``; with batch size N, ``Dreamer.dream_many``'s windows of 4·N images,
grouped by shape, batch ``k`` seeded ``seed + k``), and CPU actors compute with the driver's torch
thread count (``fastdream.ray_support.actor_resources``). Batch size N > 1 needs every image's shape first: a probe pass decodes the
inputs (Ray tasks) before the dreaming pass, which then gathers each planned batch with a
``groupby``.

Fault tolerance is Ray's: the actors are restarted and their tasks retried when a worker dies
(``max_restarts``, ``max_task_retries``); a retried task rewrites the same outputs.

Where this sits in the project: docs/architecture.md, "Clusters and servers".
"""
from __future__ import annotations

import logging
import os
import pathlib
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .batching import WINDOW, seed_for, window_batches
from .errors import per_image_errors
from .jobs import decode_limited, is_uri, one_line, plan_folder
from .ray_support import actor_dreamer_options, actor_resources, connect

_NO_SEED = -1  # a column of ints cannot hold None


@dataclass
class Report:
    """What a run did: outputs written and ``(source, message)`` for each image that failed."""

    written: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)


# --- planning: the single-process path's batches and seeds ----------------------------------------


def plan_batches(
    shapes: Sequence[Optional[tuple]], batch_size: int, seed: Optional[int]
) -> List[Tuple[List[int], Optional[int]]]:
    """The batches ``(indices, seed)`` the single-process CLI dreams for images of these shapes.

    ``shapes[i]`` is image ``i``'s tensor shape, or ``None`` for an image that failed to load (it
    still takes its place in a window, as in ``Dreamer.dream_many``). Batch size 1: every image
    alone with ``seed`` itself (the command line calls the Dreamer once per file). Batch size N:
    ``dream_many``'s cut (``fastdream.batching``), batch ``k`` of the run seeded ``seed + k``.
    """
    if batch_size == 1:
        return [([i], seed) for i, shape in enumerate(shapes) if shape is not None]
    window_size = WINDOW * batch_size
    batches: List[Tuple[List[int], Optional[int]]] = []
    for start in range(0, len(shapes), window_size):
        keys = [None if shape is None else tuple(shape) for shape in shapes[start : start + window_size]]
        for chunk in window_batches(keys, batch_size):
            batches.append(([start + i for i in chunk], seed_for(seed, len(batches))))
    return batches


# --- reading and writing (inside the Ray workers) --------------------------------------------------


def _write(image, dest: str) -> None:
    """Writes ``image`` to ``dest``: atomically on a local path (a retried task replaces its own
    earlier output), through ``pyarrow.fs`` for a URI."""
    from .image_io import save_image

    if not is_uri(dest):
        save_image(image, dest, overwrite=True)
        return
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(dest)
    with tempfile.TemporaryDirectory(prefix="fastdream-") as folder:
        local = os.path.join(folder, pathlib.PurePosixPath(path).name)
        save_image(image, local)
        with open(local, "rb") as src, filesystem.open_output_stream(path) as out:
            out.write(src.read())


def _probe(batch: dict, max_side: Optional[int]) -> dict:
    """Ray Data task: each file's tensor shape after loading, or why it cannot be loaded."""
    shapes, errors = [], []
    for data, source in zip(batch["bytes"], batch["path"]):
        try:
            image = decode_limited(bytes(data), str(source), max_side)
            shapes.append(list(image.shape))
            errors.append("")
        except per_image_errors() as exc:
            shapes.append([0, 0, 0])
            errors.append(one_line(exc))
    return {"path": batch["path"], "shape": shapes, "error": errors}


class DreamWorker:
    """A Ray Data actor: one Dreamer, built once; dreams one planned batch per call.

    Rows carry ``bytes`` and ``path`` (from ``read_binary_files``) and ``dest``, ``batch``,
    ``seed`` (from the plan; every row of a call belongs to the same planned batch). Returns one
    row per input: ``source``, ``dest``, ``error`` (empty when written). Subclass it to change how
    images are read or written (``dream_files(worker=)``).
    """

    def __init__(self, options: dict, max_side: Optional[int] = None, threads: Optional[int] = None):
        from .dreamer import Dreamer

        self.dreamer = Dreamer(**actor_dreamer_options(options, threads))
        self.max_side = max_side

    def load(self, data: bytes, source: str):
        return decode_limited(data, source, self.max_side)

    def write(self, image, dest: str) -> None:
        _write(image, dest)

    def __call__(self, batch: dict) -> dict:
        import torch

        errors_of = per_image_errors()
        out = {"source": [], "dest": [], "error": []}

        def emit(source, dest, error=""):
            out["source"].append(str(source))
            out["dest"].append(str(dest))
            out["error"].append(error)

        if len(set(map(int, batch["batch"]))) > 1:  # map_groups hands one group, map_batches one row
            raise ValueError("DreamWorker takes the rows of one planned batch per call")
        images, kept = [], []
        for data, source, dest in zip(batch["bytes"], batch["path"], batch["dest"]):
            try:
                image = self.load(bytes(data), str(source))
                self.dreamer.check(image)
            except errors_of as exc:
                emit(source, dest, one_line(exc))
                continue
            images.append(image)
            kept.append((source, dest))
        if not images:
            return out
        seed = int(batch["seed"][0])
        try:
            if len({tuple(i.shape) for i in images}) > 1:
                raise ValueError("a planned batch holds images of different sizes (inputs changed?)")
            dreamed = self.dreamer(torch.stack(images), seed=None if seed == _NO_SEED else seed, progress=False)
        except errors_of as exc:
            for source, dest in kept:
                emit(source, dest, one_line(exc))
            return out
        for image, (source, dest) in zip(dreamed, kept):
            try:
                self.write(image, str(dest))
            except errors_of as exc:
                emit(source, dest, one_line(exc))
                continue
            emit(source, dest)
        return out


# --- the driver ---------------------------------------------------------------------------------


def _quiet_progress(ray) -> None:
    """No Ray Data progress bars or execution logs in the driver's output (the caller reports)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "enable_operator_progress_bars"):
        context.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def dream_files(
    sources: Sequence[str],
    dests: Sequence[str],
    options: dict,
    *,
    seed: Optional[int] = None,
    batch_size: int = 1,
    max_side: Optional[int] = None,
    address: Optional[str] = None,
    concurrency: Optional[int] = None,
    threads: Optional[int] = None,
    worker: type = DreamWorker,
    on_result=None,
) -> Report:
    """Dreams ``sources[i]`` into ``dests[i]`` on Ray (local paths or URIs) and returns a Report.

    Args:
        sources, dests: input files and their outputs (same length; outputs are replaced).
        options: ``Dreamer(**options)`` keyword arguments, built once per actor; checked first by
            a Dreamer in this process (without ``device``), before Ray starts.
        seed, batch_size: as ``fastdream dream --seed S --batch-size N``; the outputs are those of
            the single-process path, byte for byte (:func:`plan_batches`).
        max_side: downscale inputs whose long side exceeds this (``--max-side``).
        address: ``None``/``"local"`` (a local Ray) or a cluster address; if Ray is initialised
            already, that connection is used and left open.
        concurrency: actors (default: one per GPU, else one per node).
        threads: torch threads per actor on CPUs (default: this process's, which makes the
            outputs those of the single-process path on the same kind of machine).
        worker: the actor class (a :class:`DreamWorker` subclass).
        on_result: called as ``on_result(source, dest, error)`` for each image as it finishes.
    """
    if len(sources) != len(dests):
        raise ValueError(f"sources and dests must have the same length, got {len(sources)} and {len(dests)}")
    from .dreamer import Dreamer
    from .options import check_int, check_seed

    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_seed("seed", seed)
    here = Dreamer(**{name: value for name, value in options.items() if name != "device"})
    report = Report()
    if not sources:
        return report
    ray, started = connect(address)
    try:
        return _dream(ray, list(map(str, sources)), list(map(str, dests)), options, here, seed, batch_size,
                      max_side, concurrency, threads, worker, on_result, report)
    finally:
        if started:
            ray.shutdown()


def _dream(ray, sources, dests, options, here, seed, batch_size, max_side, concurrency, threads, worker,
           on_result, report):
    _quiet_progress(ray)

    def done(source, dest, error):
        if error:
            report.failed.append((source, error))
        else:
            report.written.append(dest)
        if on_result is not None:
            on_result(source, dest, error)

    index, given = _aliases(sources), list(sources)
    # Workers run in the shipped package's folder (fastdream.ray_support.init_ray): local paths absolute.
    given_dest = {_absolute(dest): dest for dest in dests}
    sources, dests = [_absolute(source) for source in sources], [_absolute(dest) for dest in dests]
    if batch_size == 1:
        shapes: List[Optional[tuple]] = [(0,)] * len(sources)  # every file alone: no probe needed
    else:
        shapes = [None] * len(sources)
        probed = ray.data.read_binary_files(sources, include_paths=True).map_batches(
            _probe, fn_kwargs={"max_side": max_side}, batch_size=16
        )
        for row in probed.iter_rows():
            i = index[str(row["path"])]
            error = row["error"] or _size_error(here, tuple(row["shape"]))
            if error:
                done(given[i], given_dest[dests[i]], error)
            else:
                shapes[i] = tuple(row["shape"])
    plan = plan_batches(shapes, batch_size, seed)
    if not plan:
        return report
    batch_of = {}
    for number, (members, batch_seed) in enumerate(plan):
        for i in members:
            batch_of[i] = (number, _NO_SEED if batch_seed is None else batch_seed)
    todo = [sources[i] for i in sorted(batch_of)]

    def annotate(batch: dict) -> dict:
        found = [index[str(path)] for path in batch["path"]]
        batch["dest"] = [dests[i] for i in found]
        batch["batch"] = [batch_of[i][0] for i in found]
        batch["seed"] = [batch_of[i][1] for i in found]
        return batch

    data = ray.data.read_binary_files(todo, include_paths=True).map_batches(annotate, batch_size=64)
    actor, threads, gpus = actor_resources(ray, threads)
    if gpus:
        size = concurrency or gpus
    else:  # one actor per node (Ray Data spreads actors)
        nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU"))
        size = concurrency or max(1, nodes)
    pool = {"compute": ray.data.ActorPoolStrategy(size=size), **actor}
    constructor = {"options": options, "max_side": max_side, "threads": threads}
    if batch_size == 1:
        dreamed = data.map_batches(worker, batch_size=1, fn_constructor_kwargs=constructor, **pool)
    else:
        partitions = max(1, min(64, len(plan) // 16 + 1))
        dreamed = data.groupby("batch", num_partitions=partitions).map_groups(
            worker, fn_constructor_kwargs=constructor, **pool
        )
    for row in dreamed.iter_rows():
        done(given[index[str(row["source"])]], given_dest[str(row["dest"])], row["error"])
    return report


def _size_error(dreamer, shape: tuple) -> str:
    """Why the Dreamer would refuse an image of ``shape`` ("" when it would not): asked with a
    uint8 view of that shape that allocates nothing."""
    import torch

    try:
        dreamer.check(torch.empty((), dtype=torch.uint8).expand(shape))
    except (ValueError, TypeError) as exc:
        return one_line(exc)
    return ""


def _absolute(path: str) -> str:
    return path if is_uri(path) else os.path.abspath(path)


def _aliases(sources: Sequence[str]) -> Dict[str, int]:
    """Every name Ray Data's ``path`` column may give a source -> its index: Ray drops a URI's
    scheme (``s3://b/k`` -> ``b/k``) and may make local paths absolute."""
    names: Dict[str, int] = {}
    for i, source in enumerate(sources):
        for name in (source, source.split("://", 1)[-1], os.path.abspath(source)):
            names.setdefault(name, i)
    return names


# --- folders --------------------------------------------------------------------------------------


def dream_folder(
    folder: str,
    output: str,
    options: dict,
    *,
    suffix: str = ".png",
    resume: bool = False,
    overwrite: bool = False,
    **kwargs,
) -> Report:
    """Dreams every image of ``folder`` into ``output``/<stem><suffix> (local paths or URIs such
    as ``s3://bucket/in/``), with the command line's rules: an existing output is kept with
    ``resume=True``, replaced with ``overwrite=True``, else a FileExistsError before anything is
    dreamed. Other keyword arguments: :func:`dream_files`."""
    plan = plan_folder(folder, output, fmt=suffix.lstrip("."), resume=resume, overwrite=overwrite)
    if plan.folder is not None:
        plan.folder.mkdir(exist_ok=True)
    return dream_files([str(job.source) for job in plan.jobs], [str(job.dest) for job in plan.jobs], options,
                       **kwargs)
