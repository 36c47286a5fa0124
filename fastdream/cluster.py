"""Dream folders of images on a Ray cluster with Ray Data (the optional ``[ray]`` extra).

    >>> from fastdream.cluster import dream_files
    >>> report = dream_files(["in/a.png", "in/b.jpg"], ["out/a.png", "out/b.png"],
    ...                      {"octaves": 4, "iterations": 10}, seed=7)
    >>> report.failed                                  # [(source, message), ...]

``fastdream dream in/ -o out/ --ray [ADDRESS]`` calls :func:`run_cli`. Inputs are read with
``ray.data.read_binary_files`` (local paths or URIs such as ``s3://bucket/in/``), dreamed by a
pool of actors that each build one :class:`~fastdream.Dreamer` (one actor per GPU with
``num_gpus=1`` on GPU clusters), and every result is written by the actor that dreamed it, to the
output named after its input (an atomic local write, or ``pyarrow.fs`` for URIs). The driver only
plans and reports: bad images are reported with their name and reason, the rest are written.

Results are the single-process CLI's, byte for byte, for the same seed: images are dreamed in the
same batches with the same seeds (:func:`plan_batches`, the rule of ``cli._run``: with batch size 1
every image gets ``seed``; with batch size N, ``Dreamer.dream_many``'s windows of 4·N images,
grouped by shape, batch ``k`` seeded ``seed + k``), and a batch's result does not depend on the
machine's thread count. Batch size N > 1 needs every image's shape first: a probe pass decodes the
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
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .batching import WINDOW, seed_for, window_batches
from .errors import per_image_errors

RAY_INSTALL_HINT = (
    "needs Ray, which is the optional fastdream[ray] extra: from the fastdream checkout run "
    'pip install ".[ray]", or pip install "ray[data,serve]>=2.40"'
)

_NO_SEED = -1  # a column of ints cannot hold None


def require_ray(what: str = "fastdream.cluster"):
    """Imports and returns ``ray``, or raises ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{what} {RAY_INSTALL_HINT} ({exc})") from None
    return ray


def is_uri(path: str) -> bool:
    """``s3://...``, ``gs://...``, ``file:///...``: read and written through ``pyarrow.fs``."""
    return "://" in str(path)


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
    alone with ``seed`` itself (``cli._run`` calls the Dreamer once per file). Batch size N:
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


def _decode(data: bytes, source: str, max_side: Optional[int]):
    """uint8 Tensor[3, H, W] from a file's bytes, exactly as ``fastdream.load_image`` reads the file."""
    from .image_io import decode_image
    from .transforms import limit_side

    image = decode_image(data, source)
    return image if max_side is None else limit_side(image, max_side)


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__



def _probe(batch: dict, max_side: Optional[int]) -> dict:
    """Ray Data task: each file's tensor shape after loading, or why it cannot be loaded."""
    shapes, errors = [], []
    for data, source in zip(batch["bytes"], batch["path"]):
        try:
            image = _decode(bytes(data), str(source), max_side)
            shapes.append(list(image.shape))
            errors.append("")
        except per_image_errors() as exc:
            shapes.append([0, 0, 0])
            errors.append(_one_line(exc))
    return {"path": batch["path"], "shape": shapes, "error": errors}


class DreamWorker:
    """A Ray Data actor: one Dreamer, built once; dreams rows grouped by their ``batch`` column.

    Rows carry ``bytes`` and ``path`` (from ``read_binary_files``) and ``dest``, ``batch``,
    ``seed`` (from the plan). Returns one row per input: ``source``, ``dest``, ``error`` (empty
    when written). Subclass it to change how images are read or written (``dream_files(worker=)``).
    """

    def __init__(self, options: dict, max_side: Optional[int] = None, threads: Optional[int] = None):
        import torch

        from .dreamer import Dreamer

        if threads is not None:  # the CPU kernels' reductions depend on it (see dream_files)
            torch.set_num_threads(threads)
        options = dict(options)
        if options.get("device") is None and torch.cuda.is_available():
            options["device"] = "cuda"  # the actor's GPU (Ray sets CUDA_VISIBLE_DEVICES)
        self.dreamer = Dreamer(**options)
        self.max_side = max_side

    def load(self, data: bytes, source: str):
        return _decode(data, source, self.max_side)

    def write(self, image, dest: str) -> None:
        _write(image, dest)

    def __call__(self, batch: dict) -> dict:
        import torch

        errors_of = per_image_errors()
        rows = list(zip(batch["bytes"], batch["path"], batch["dest"], batch["batch"], batch["seed"]))
        out = {"source": [], "dest": [], "error": []}

        def emit(source, dest, error=""):
            out["source"].append(str(source))
            out["dest"].append(str(dest))
            out["error"].append(error)

        groups: Dict[int, list] = {}
        for row in rows:
            groups.setdefault(int(row[3]), []).append(row)
        for members in groups.values():
            images, kept = [], []
            for data, source, dest, _, _ in members:
                try:
                    image = self.load(bytes(data), str(source))
                    self.dreamer.check(image)
                except errors_of as exc:
                    emit(source, dest, _one_line(exc))
                    continue
                images.append(image)
                kept.append((source, dest))
            if not images:
                continue
            seed = int(members[0][4])
            try:
                if len(images) > 1 and len({tuple(i.shape) for i in images}) > 1:
                    raise ValueError("a planned batch holds images of different sizes (inputs changed?)")
                dreamed = self.dreamer(
                    torch.stack(images), seed=None if seed == _NO_SEED else seed, progress=False
                )
            except errors_of as exc:
                for source, dest in kept:
                    emit(source, dest, _one_line(exc))
                continue
            for image, (source, dest) in zip(dreamed, kept):
                try:
                    self.write(image, str(dest))
                except errors_of as exc:
                    emit(source, dest, _one_line(exc))
                    continue
                emit(source, dest)
        return out


# --- the driver ---------------------------------------------------------------------------------


def _connect(address: Optional[str]):
    """``ray.init`` unless connected already: ``None``/``"local"`` starts (or joins) a local Ray,
    anything else is a cluster address (``auto``, ``ray://host:10001``, ``host:6379``)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    if address in (None, "local"):
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return ray, True


def _pool(ray, concurrency: Optional[int], threads: Optional[int]) -> Tuple[dict, Optional[int]]:
    """Actor-pool arguments and torch threads per actor: one actor per GPU; on a CPU cluster one
    actor per node (Ray Data spreads actors), with as many threads as this process uses (``torch.get_num_threads``):
    the CPU step's per-image mean |g| is summed per thread, so the single-process result is
    reproduced bit for bit only with the same thread count. The actor asks Ray for one CPU so the
    read tasks always find one."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"compute": ray.data.ActorPoolStrategy(size=concurrency or gpus), "num_gpus": 1}, threads
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU"))
    pool = {"compute": ray.data.ActorPoolStrategy(size=concurrency or max(1, nodes)), "num_cpus": 1}
    return pool, threads


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
        options: ``Dreamer(**options)`` keyword arguments, built once per actor.
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
    from .options import check_int, check_seed

    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_seed("seed", seed)
    report = Report()
    if not sources:
        return report
    ray, started = _connect(address)
    try:
        return _dream(ray, list(map(str, sources)), list(map(str, dests)), options, seed, batch_size,
                      max_side, concurrency, threads, worker, on_result, report)
    finally:
        if started:
            ray.shutdown()


def _dream(ray, sources, dests, options, seed, batch_size, max_side, concurrency, threads, worker, on_result,
           report):
    _quiet_progress(ray)
    def done(source, dest, error):
        if error:
            report.failed.append((source, error))
        else:
            report.written.append(dest)
        if on_result is not None:
            on_result(source, dest, error)

    index = _aliases(sources)
    if batch_size == 1:
        shapes: List[Optional[tuple]] = [(0,)] * len(sources)  # every file alone: no probe needed
    else:
        shapes = [None] * len(sources)
        probed = ray.data.read_binary_files(sources, include_paths=True).map_batches(
            _probe, fn_kwargs={"max_side": max_side}, batch_size=16
        )
        too_small = _size_check(options)
        for row in probed.iter_rows():
            i = index[str(row["path"])]
            error = row["error"] or too_small(tuple(row["shape"]))
            if error:
                done(sources[i], dests[i], error)
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
    pool, threads = _pool(ray, concurrency, threads)
    constructor = {"options": options, "max_side": max_side, "threads": threads}
    if batch_size == 1:
        dreamed = data.map_batches(worker, batch_size=1, fn_constructor_kwargs=constructor, **pool)
    else:
        partitions = max(1, min(64, len(plan) // 16 + 1))
        dreamed = data.groupby("batch", num_partitions=partitions).map_groups(
            worker, fn_constructor_kwargs=constructor, **pool
        )
    for row in dreamed.iter_rows():
        source = sources[index[str(row["source"])]]
        done(source, row["dest"], row["error"])
    return report


def _size_check(options: dict):
    """``shape -> message`` ("" when fine): the Dreamer's minimum input size, checked in the driver
    (as ``dream_many`` does before it groups) without building the model."""
    from ._checks import check_min_size
    from .models.registry import DEFAULT_MODEL, get_spec

    model = options.get("model", DEFAULT_MODEL)
    if not isinstance(model, str):
        return lambda shape: ""
    min_input = get_spec(model).min_input

    def check(shape: tuple) -> str:
        try:
            check_min_size(shape[-2:], min_input, model)
        except ValueError as exc:
            return _one_line(exc)
        return ""

    return check


def _aliases(sources: Sequence[str]) -> Dict[str, int]:
    """Every name Ray Data's ``path`` column may give a source -> its index: Ray drops a URI's
    scheme (``s3://b/k`` -> ``b/k``) and may make local paths absolute."""
    names: Dict[str, int] = {}
    for i, source in enumerate(sources):
        for name in (source, source.split("://", 1)[-1], os.path.abspath(source)):
            names.setdefault(name, i)
    return names


# --- folders and the command line -----------------------------------------------------------------


def list_images(folder: str) -> List[str]:
    """The image files in ``folder`` (a local path or a URI), sorted, not recursive, hidden files
    skipped: the CLI's rule for a folder."""
    from .image_io import IMAGE_SUFFIXES

    if not is_uri(folder):
        from .cli import _scan_folder

        return [str(path) for path in _scan_folder(pathlib.Path(folder))]
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(folder)
    scheme = folder.split("://", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=False))
    names = sorted(
        info.path
        for info in infos
        if info.type == fs.FileType.File
        and pathlib.PurePosixPath(info.path).suffix.lower() in IMAGE_SUFFIXES
        and not pathlib.PurePosixPath(info.path).name.startswith(".")
    )
    return [f"{scheme}://{name}" for name in names]


def dream_folder(
    folder: str,
    output: str,
    options: dict,
    *,
    suffix: str = ".png",
    resume: bool = False,
    **kwargs,
) -> Report:
    """Dreams every image of ``folder`` into ``output``/<stem><suffix> (local paths or URIs such
    as ``s3://bucket/in/``); ``resume=True`` skips outputs that exist. Other keyword arguments:
    :func:`dream_files`."""
    sources = list_images(folder)
    dests = [_join(output, pathlib.PurePosixPath(source).stem + suffix) for source in sources]
    if resume:
        exists = _exists_many(dests)
        sources = [s for s, e in zip(sources, exists) if not e]
        dests = [d for d, e in zip(dests, exists) if not e]
    if not is_uri(output):
        pathlib.Path(output).mkdir(exist_ok=True)
    return dream_files(sources, dests, options, **kwargs)


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name if is_uri(folder) else str(pathlib.Path(folder) / name)


def _exists_many(paths: Sequence[str]) -> List[bool]:
    if not paths or not is_uri(paths[0]):
        return [os.path.exists(path) for path in paths]
    from pyarrow import fs

    filesystem, _ = fs.FileSystem.from_uri(paths[0])
    infos = filesystem.get_file_info([fs.FileSystem.from_uri(path)[1] for path in paths])
    return [info.type != fs.FileType.NotFound for info in infos]


def run_cli(args) -> int:
    """``fastdream dream INPUT... -o OUTPUT --ray [ADDRESS]``: the CLI's plan (``--resume``,
    ``--overwrite``, output checks), its options and seeds, dreamed on Ray; exit code 1 if any
    image failed. Inputs and -o may also be URIs (``s3://bucket/in/``)."""
    from . import cli

    require_ray("fastdream dream --ray")
    if args.demo:
        raise cli.UsageError("--ray dreams files and folders, not --demo")
    remote = any(is_uri(text) for text in list(args.inputs) + [args.output])
    if remote:
        if len(args.inputs) != 1 or args.overwrite:
            raise cli.UsageError("with URIs, --ray takes one input folder and -o FOLDER (no --overwrite)")
        sources = list_images(args.inputs[0])
        suffix = "." + (args.format or "png")
        dests = [_join(args.output, pathlib.PurePosixPath(s).stem + suffix) for s in sources]
        exists = _exists_many(dests)
        if any(exists) and not args.resume:
            raise FileExistsError(f"{sum(exists)} outputs exist, first {dests[exists.index(True)]} (use --resume)")
        sources = [s for s, e in zip(sources, exists) if not e]
        dests = [d for d, e in zip(dests, exists) if not e]
        if len(exists) != len(sources):
            cli._say_skipped(args, len(exists) - len(sources))
    else:
        jobs, out_folder = cli._plan(args)
        sources = [str(job.source) for job in jobs]
        dests = [str(job.dest) for job in jobs]
        if out_folder is not None:
            out_folder.mkdir(exist_ok=True)
    options = cli._dreamer_options(args)
    local = {name: value for name, value in options.items() if name != "device"}
    cli._build_dreamer(args, local)  # every option checked here, before the cluster starts

    def show(source, dest, error):
        if error:
            message = error if source in error else f"{source}: {error}"
            print(f"{cli.PROG}: error: {message}", file=sys.stderr)
        elif not args.quiet:
            print(dest, flush=True)

    report = dream_files(
        sources, dests, options, seed=args.seed, batch_size=args.batch_size, max_side=args.max_side,
        address=args.ray, on_result=show,
    )
    failed = len(report.failed)
    if failed or (len(sources) > 1 and not args.quiet):
        print(f"dreamed {len(report.written)} of {len(sources)} images, {failed} failed", file=sys.stderr)
    return 1 if failed else 0
