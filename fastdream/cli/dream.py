"""``fastdream dream``: image files and folders (one process, or on Ray with ``--ray``), ``--demo``
and ``--noise``. Planning is ``fastdream.jobs``'s; this module runs the plan and prints."""
from __future__ import annotations

import pathlib
import sys
from typing import Sequence

from .. import options
from ..jobs import Job, Plan, UsageError, build_dreamer, check_file_output, collect_inputs, is_uri
from ..jobs import check_writable, load_limited, one_line, plan_files, plan_folder, remove_stale_temps
from .parser import PROG
from .printing import Interrupted, TilingNote, error_line, note_skipped, options_of


def dream_command(args) -> int:
    given = [name for name, on in (("INPUT", args.inputs), ("--demo", args.demo), ("--noise", args.noise)) if on]
    if len(given) > 1:
        raise UsageError(f"give INPUT files/folders, --demo or --noise, not both {given[0]} and {given[1]}")
    if not given:
        raise UsageError("give INPUT files/folders to dream, --demo for the sample photo or --noise WxH")
    if args.init is not None and args.noise is None:
        raise UsageError("--init applies to --noise only")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: skip existing outputs or replace them")
    if args.ray is not None and not args.inputs:
        raise UsageError(f"--ray dreams INPUT files/folders on a Ray cluster, not {given[0]}")
    if args.noise is not None:
        return _dream_noise(args)
    if args.ray is not None:
        return _dream_on_ray(args)
    plan = _plan(args)
    _prepare_outputs(plan, args)
    dreamer = build_dreamer(options_of(args))
    return _run(plan.jobs, dreamer, args)


def _plan(args) -> Plan:
    """The local plan of ``dream INPUT... -o OUTPUT`` (or ``--demo``), what --resume kept said."""
    if args.demo:
        from ..image_io import sample_image_path

        sources, many = [sample_image_path()], False
    else:
        sources, many = collect_inputs(args.inputs)
    plan = plan_files(sources, args.output, to_folder=many, fmt=args.format, resume=args.resume,
                      overwrite=args.overwrite)
    note_skipped(args, len(plan.skipped))
    return plan


def _prepare_outputs(plan: Plan, args) -> None:
    """Before anything is dreamed: the output folder made and found writable, the temporary files
    a killed run left for these outputs removed, and what --resume dreams again said."""
    if plan.folder is not None and not is_uri(plan.folder):
        plan.folder.mkdir(exist_ok=True)
    folders = {pathlib.Path(job.dest).absolute().parent for job in plan.jobs if not is_uri(job.dest)}
    for folder in sorted(folders):
        check_writable(folder)
    removed = remove_stale_temps(plan)
    if not args.quiet:
        if removed:
            print(f"removed {len(removed)} temporary {'file' if len(removed) == 1 else 'files'} "
                  "that an interrupted run left", file=sys.stderr)
        for dest in plan.redone:
            print(f"{dest} is not a complete image: dreaming it again (--resume)", file=sys.stderr)


def _dream_noise(args) -> int:
    """``--noise WxH -o FILE``: one image dreamed from the Dreamer's ``init``."""
    from ..image_io import save_image

    output = pathlib.Path(args.output)
    check_file_output(args.output, args.format, noise=True)
    if output.exists() and not args.overwrite:
        if args.resume:
            note_skipped(args, 1)
            return 0
        raise FileExistsError(f"output exists: {output} (use --overwrite to replace it)")
    dreamer = build_dreamer(options_of(args))
    height, width = args.noise
    try:
        result = dreamer(None, size=(height, width), seed=args.seed, progress=not args.quiet)
        TilingNote(dreamer, args)()
    except options.OptionError as exc:
        if exc.option != "size":
            raise
        raise UsageError(f"--noise {width}x{height}: {exc.render(lambda name: 'the size')}") from None
    save_image(result, output, overwrite=args.overwrite)
    if not args.quiet:
        print(output)
    return 0


# --- one process -------------------------------------------------------------------------------


def _dreamed(jobs: Sequence[Job], dreamer, args, per_file_errors):
    """Per job, in order: the dreamed image or the exception that stopped it."""

    def images():  # a bad file is handed on as its exception: a generator that raises is over
        for job in jobs:
            try:
                yield load_limited(job.source, args.max_side)
            except per_file_errors as exc:
                yield exc

    if args.batch_size == 1 or len(jobs) == 1:
        # One at a time, every image with --seed as it is (dream_many would give image k seed + k).
        for image in images():
            if isinstance(image, BaseException):
                yield image
                continue
            try:
                yield dreamer(image, seed=args.seed, progress=not args.quiet)
            except per_file_errors as exc:
                yield exc
        return
    yield from dreamer.dream_many(images(), args.batch_size, seed=args.seed, progress=False, errors="return")


def _failure_line(source, message: str) -> str:
    """The error line of one image of many: ``fastdream: error: SOURCE: MESSAGE``."""
    return error_line(message if str(source) in message else f"{source}: {message}")


def _summary(args, done: int, total: int) -> int:
    """Says how many images were dreamed (when some failed, or several were asked for); the exit code."""
    failed = total - done
    if failed or (total > 1 and not args.quiet):
        print(f"dreamed {done} of {total} images, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _run(jobs: Sequence[Job], dreamer, args) -> int:
    import torch
    from tqdm import tqdm

    from ..errors import per_image_errors
    from ..image_io import save_image

    per_file_errors = per_image_errors()
    done = 0
    bar = tqdm(total=len(jobs), desc="images", unit="img", file=sys.stderr, disable=args.quiet or len(jobs) < 2)

    def report(job, exc):
        message = one_line(exc, command_line=True)
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            message += " (try --max-side, --max-memory" + (" or a smaller --batch-size)" if args.batch_size > 1 else ")")
        tqdm.write(_failure_line(job.source, message), file=sys.stderr)

    results = _dreamed(jobs, dreamer, args, per_file_errors)
    tiling = TilingNote(dreamer, args)
    seen = 0
    try:
        for job, result in zip(jobs, results):
            seen += 1
            bar.update()
            tiling()
            if not isinstance(result, BaseException):
                try:
                    save_image(result, job.dest, overwrite=args.overwrite or job.replace)
                except per_file_errors as exc:
                    result = exc
            if isinstance(result, BaseException):
                report(job, result)
                continue
            done += 1
            if not args.quiet:
                tqdm.write(str(job.dest), file=sys.stdout)
    except torch.cuda.OutOfMemoryError as exc:  # a batch too large: it and the rest are not attempted
        report(jobs[seen], exc)
    except KeyboardInterrupt:
        if len(jobs) < 2:
            raise
        raise Interrupted(
            f"{done} of {len(jobs)} images written; run the same command with --resume to finish"
        ) from None
    finally:
        bar.close()
    return _summary(args, done, len(jobs))


# --- on Ray --------------------------------------------------------------------------------------


def _dream_on_ray(args) -> int:
    """``dream INPUT... -o OUTPUT --ray [ADDRESS]``: the same plan, options and seeds, dreamed by
    ``fastdream.cluster.dream_files``; INPUT and -o may be URIs (one input folder then)."""
    from ..ray_support import require_ray

    require_ray(f"{PROG} dream --ray")
    if any(is_uri(text) for text in [*args.inputs, args.output]):
        if len(args.inputs) != 1:
            raise UsageError("with URIs, --ray takes one input folder and -o FOLDER")
        plan = plan_folder(args.inputs[0], args.output, fmt=args.format, resume=args.resume,
                           overwrite=args.overwrite)
        note_skipped(args, len(plan.skipped))
    else:
        plan = _plan(args)
    _prepare_outputs(plan, args)
    from ..cluster import dream_files

    def show(source, dest, error):
        if error:
            print(_failure_line(source, error), file=sys.stderr)
        elif not args.quiet:
            print(dest, flush=True)

    sources = [str(job.source) for job in plan.jobs]
    try:  # dream_files checks every option in a Dreamer here, before Ray starts
        report = dream_files(
            sources, [str(job.dest) for job in plan.jobs], options_of(args), seed=args.seed,
            batch_size=args.batch_size, max_side=args.max_side, address=args.ray, on_result=show,
        )
    except options.OptionError as exc:
        raise UsageError(one_line(exc, command_line=True)) from None
    return _summary(args, len(report.written), len(sources))
