"""The ``fastdream`` command: dream image files and folders, list models and layers.

``fastdream dream INPUT... -o OUTPUT [options]`` (``--demo`` or ``--noise WxH`` instead of INPUT;
several inputs go through ``Dreamer.dream_many``), ``fastdream zoom IMAGE -o OUTPUT [options]``,
``fastdream video INPUT -o OUTPUT [options]`` (``Dreamer.stream``), ``fastdream models``,
``fastdream layers MODEL``, ``fastdream --version``; on Ray (the ``[ray]`` extra): ``fastdream dream ...
--ray [ADDRESS]`` (``fastdream.cluster``) and ``fastdream serve`` (``fastdream.serve``). Run ``fastdream dream --help`` for the options.

Exit codes: 0 success; 1 a runtime failure (missing input, existing output, weights that cannot be
loaded, or any image that failed); 2 a usage error (bad flag value or combination, unknown model,
layer or class); 130 interrupted (Ctrl-C). Errors are one line, ``fastdream: error: ...``, on stderr.

The library (and so torch) is imported only when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import os
import pathlib
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from . import options

PROG = "fastdream"
_FORMATS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")
_FORMAT_FAMILY = {"jpg": "jpeg", "tif": "tiff"}


class UsageError(Exception):
    """A bad command line: reported as ``fastdream: error: ...`` with exit code 2."""


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a note on what was finished before it (printed after ``fastdream: interrupted``)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fastdream: error: MESSAGE (see 'fastdream dream --help')``,
    no usage block (the subcommand parsers are of this class too)."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


@dataclass
class _Job:
    source: pathlib.Path
    dest: pathlib.Path


# --- argument types ----------------------------------------------------------------------------


def _text_type(parse):
    """An argparse ``type`` from an options parser: its ValueError becomes argparse's one-line error."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


_count_type = _text_type(options.parse_count)
_positive_float_type = _text_type(options.parse_positive)


def _finite_float_type(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _translate_type(text: str) -> tuple:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected DX,DY in pixels such as 2,-1.5, got {text!r}")
    return tuple(_finite_float_type(part.strip()) for part in parts)


def _size_type(text: str) -> tuple:
    """``WxH`` -> ``(H, W)``, the API's order."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels such as 640x480, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"width and height must be >= 1, got {text!r}")
    return height, width


def _blend_type(text: str) -> float:
    value = _finite_float_type(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


class _VersionAction(argparse.Action):
    """``--version`` that looks the version up only when asked (no torch import for --help)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{PROG} {_version()}")
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fastdream")
    except metadata.PackageNotFoundError:  # a source checkout that is not installed
        import fastdream

        return getattr(fastdream, "__version__", "unknown")


# --- parser ------------------------------------------------------------------------------------

_DREAM_EPILOG = """\
outputs:
  One INPUT file and -o FILE writes FILE (its suffix picks the format). Several
  INPUTs, or a folder (every .png/.jpg/.jpeg/.webp/.bmp/.tif/.tiff file in it,
  sorted, not recursive, hidden files skipped), need -o FOLDER: it is created if
  missing (its parent must exist) and gets <stem>.<format> per input. -o is always
  required, --demo and --noise included. Inputs are never overwritten (not even
  with --overwrite); other existing outputs only with --overwrite, or skipped
  with --resume. Files are written atomically, each as soon as it is dreamed.
  If some images fail (unreadable, too small), the rest are still dreamed, a
  summary counts them and the exit code is then 1.

examples:
  fastdream dream --demo -o cat.png --max-side 300
  fastdream dream photo.jpg -o dream.jpg --layers _blocks.9:1,_blocks.11:0.5
  fastdream dream holiday/ -o dreams/ --iterations 20 --octaves 5 --seed 7
  fastdream dream holiday/ -o dreams/ --batch-size 4 --resume
  fastdream dream huge.tif -o huge.png --max-memory 2G
  fastdream dream photo.jpg -o cat.png --classes tabby:2,285 --smoothing 1 --keep-colors
  fastdream dream --noise 640x480 -o noise.png --lap-normalize 4 --seed 3
"""


_VIDEO_OUTPUT_HELP = "a .mp4/.mkv/.webm video, a .gif, a folder (frame_000000.png, ...) or a %%d pattern such as out/f%%04d.png"
_VIDEO_EPILOG = """\
outputs:
  .mp4/.mkv/.webm need PyAV (pip install av); .gif and numbered
  images need nothing more. Videos and GIFs are written to a temporary file and
  moved into place when complete; numbered images are written one by one. The
  input is never overwritten; an existing output only with --overwrite.

examples:
  fastdream zoom photo.jpg -o zoom.mp4 --frames 100 --zoom 1.05 --rotate 1.5
  fastdream zoom photo.jpg -o frames/ --frames 30 --translate 2,0 --max-side 400
  fastdream video clip.mp4 -o dream.mp4 --blend 0.5 --max-frames 50
  fastdream video clip.mp4 -o dream.mp4 --blend 0.7 --flow
"""

def _add_dream_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags shared by ``dream``, ``zoom`` and ``video``: outputs, then one flag per option of
    ``fastdream.options.Options`` that the command line offers, grouped as the options declare."""
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no list of files written")
    parser.add_argument(
        "--max-side",
        type=_count_type,
        metavar="N",
        help="first downscale inputs (and --guide) whose long side exceeds N pixels (handy on the CPU)",
    )
    parser.set_defaults(options_given=())
    groups: Dict[str, object] = {}
    for field in options.fields():
        meta = field.metadata
        if meta["group"] is None or meta["command"] not in (None, command):
            continue
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        extra = {"nargs": 0} if meta["switch"] else {
            "type": meta["parse"] if meta["parse"] in (None, int, float) else _text_type(meta["parse"]),
            "choices": meta["choices"], "metavar": meta["metavar"]}
        group.add_argument(options.flag(field.name), dest=field.name, action=_OptionAction,
                           help=f"{meta['help']} (default: {meta['shown']})".replace("%", "%%"), **extra)


class _OptionAction(argparse.Action):
    """Stores an option's value (``True`` for a switch) and notes that it was given: only the options
    given on the command line are passed to ``Dreamer(...)``, the others keep the API's defaults."""

    def __init__(self, option_strings, dest, nargs=None, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, default=None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True if self.nargs == 0 else values)
        namespace.options_given = (*namespace.options_given, self.dest)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Fast DeepDream for PyTorch: dream images from the command line.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dream = commands.add_parser(
        "dream",
        help="dream image files or folders",
        description="Dream image files or folders of images (DeepDream).",
        epilog=_DREAM_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dream.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders of images")
    dream.add_argument(
        "--demo", action="store_true", help="dream the bundled sample photo (Chelsea the cat) instead of INPUT"
    )
    dream.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="output file (one input) or folder (several)"
    )
    dream.add_argument(
        "--noise", type=_size_type, metavar="WxH",
        help="dream from noise of this size (see --init) instead of INPUT; needs -o FILE",
    )
    dream.add_argument(
        "--format", choices=_FORMATS, help="output format for folder outputs (default: png)"
    )
    dream.add_argument(
        "--batch-size", type=_count_type, default=1, metavar="N",
        help="dream up to N same-size images at once; with --seed S batch k uses S+k (default: 1: "
        "one at a time, every image with seed S)",
    )
    dream.add_argument(
        "--resume", action="store_true",
        help="skip inputs whose output exists (to finish an interrupted run); excludes --overwrite",
    )
    dream.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="dream on a Ray cluster (needs the [ray] extra): ADDRESS such as auto or ray://HOST:10001, "
        "none for a local Ray; INPUT and -o may then be URIs such as s3://bucket/in/",
    )
    _add_dream_options(dream, "dream")
    dream.set_defaults(handler=_cmd_dream)

    serve = commands.add_parser(
        "serve",
        help="serve dreams over HTTP with Ray Serve",
        description="An HTTP endpoint on Ray Serve (needs the [ray] extra): POST an image (the raw bytes, a "
        "multipart 'image' file or base64 JSON), get the dreamed PNG (or ?format=jpeg); same-size requests "
        "are batched; the limits below bound what one request may cost. Runs until Ctrl-C.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--max-batch-size", type=_count_type, default=8, metavar="N",
        help="same-size requests dreamed together, at most N (default: 8)",
    )
    serve.add_argument(
        "--ray", metavar="ADDRESS", help="run on this Ray cluster (default: a local Ray)"
    )
    from .serve_requests import add_limit_flags

    add_limit_flags(serve)
    _add_dream_options(serve, "serve")
    serve.set_defaults(handler=_cmd_serve)

    zoom = commands.add_parser(
        "zoom",
        help="dream an image into an endless zoom (video, GIF or numbered PNGs)",
        description="The DeepDream feedback loop: dream the image, zoom/rotate/translate the result, dream "
        "it again, and so on; every dreamed frame is written as it comes.",
        epilog=_VIDEO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    zoom.add_argument("input", metavar="IMAGE", help="the image to start from")
    zoom.add_argument("-o", "--output", required=True, metavar="OUTPUT", help=_VIDEO_OUTPUT_HELP)
    zoom.add_argument("--frames", type=_count_type, default=100, metavar="N", help="frames to dream (default: 100)")
    zoom.add_argument(
        "--zoom", type=_positive_float_type, default=1.05, metavar="Z",
        help="zoom between frames about the centre, > 1 zooms in (default: 1.05)",
    )
    zoom.add_argument(
        "--rotate", type=_finite_float_type, default=0.0, metavar="DEG",
        help="rotation between frames, degrees counter-clockwise (default: 0)",
    )
    zoom.add_argument(
        "--translate", type=_translate_type, default=(0.0, 0.0), metavar="DX,DY",
        help="shift between frames in pixels, +DX right, +DY down; a negative DX needs the = form, "
        "--translate=-2,1 (default: 0,0)",
    )
    zoom.add_argument("--fps", type=_positive_float_type, default=25.0, metavar="F", help="frame rate (default: 25)")
    _add_dream_options(zoom, "zoom")
    zoom.set_defaults(handler=_cmd_zoom)

    video = commands.add_parser(
        "video",
        help="dream every frame of a video",
        description="Dream every frame of a video (or GIF, or numbered images), feeding part of each dreamed "
        "frame into the next: input_k = (1 - B) * frame_k + B * dreamed_(k-1).",
        epilog=_VIDEO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    video.add_argument("input", metavar="INPUT", help="a video, a GIF, a folder of frames or a %%d pattern")
    video.add_argument("-o", "--output", required=True, metavar="OUTPUT", help=_VIDEO_OUTPUT_HELP)
    video.add_argument(
        "--blend", type=_blend_type, default=0.5, metavar="B",
        help="share of the previous dreamed frame in the next input, in [0, 1) (default: 0.5)",
    )
    video.add_argument(
        "--flow", action="store_true",
        help="move the previous dreamed detail along the optical flow into the next frame before blending, "
        "where the flow is reliable (no ghosting; scene cuts start afresh); needs OpenCV, the [video] extra",
    )
    video.add_argument("--max-frames", type=_count_type, metavar="N", help="dream only the first N frames")
    video.add_argument(
        "--fps", type=_positive_float_type, metavar="F",
        help="output frame rate (default: the input's, 25 for numbered images)",
    )
    _add_dream_options(video, "video")
    video.set_defaults(handler=_cmd_video)

    models = commands.add_parser("models", help="list the built-in models", description="List the built-in models.")
    models.set_defaults(handler=_cmd_models)

    layers = commands.add_parser(
        "layers", help="list a model's layer names", description="List the layer names of a model."
    )
    layers.add_argument("model", metavar="MODEL", help="a model name from 'fastdream models'")
    layers.set_defaults(handler=_cmd_layers)
    return parser


# --- commands ----------------------------------------------------------------------------------


def _cmd_models(args) -> int:
    import fastdream

    for name in fastdream.list_models():
        print(f"{name}  (default)" if name == fastdream.DEFAULT_MODEL else name)
    return 0


def _cmd_layers(args) -> int:
    import fastdream

    try:
        names = fastdream.list_layers(args.model)
        default = fastdream.default_layer(args.model)
    except (ValueError, TypeError) as exc:  # MODEL is an argument here, not --model
        text = _one_line(exc)
        raise UsageError(text.split(": ", 1)[1] if text.startswith(("model: ", "--model: ")) else text) from None
    for name in names:
        print(f"{name}  (default)" if name == default else name)
    return 0


def _cmd_dream(args) -> int:
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
        from .cluster import run_cli

        return run_cli(args)
    jobs, out_folder = _plan(args)
    dreamer = _build_dreamer(args)
    if out_folder is not None:
        out_folder.mkdir(exist_ok=True)
    return _run(jobs, dreamer, args)


def _cmd_serve(args) -> int:
    from .serve import run_cli

    return run_cli(args)


def _dream_noise(args) -> int:
    """``--noise WxH -o FILE``: one image dreamed from the Dreamer's ``init``."""
    from .image_io import save_image

    output = pathlib.Path(args.output)
    _check_file_output(args)
    if output.exists() and not args.overwrite:
        if args.resume:
            _say_skipped(args, 1)
            return 0
        raise FileExistsError(f"output exists: {output} (use --overwrite to replace it)")
    dreamer = _build_dreamer(args)
    height, width = args.noise
    try:
        result = dreamer(None, size=(height, width), seed=args.seed, progress=not args.quiet)
        _TilingNote(dreamer, args)()
    except options.OptionError as exc:
        if exc.option != "size":
            raise
        raise UsageError(f"--noise {width}x{height}: {exc.render(lambda name: 'the size')}") from None
    save_image(result, output, overwrite=args.overwrite)
    if not args.quiet:
        print(output)
    return 0


def _dreamer_options(args) -> dict:
    """The ``Dreamer(...)`` keyword arguments the flags give: the options given on the command line
    (the others keep the API's defaults), ``--guide`` loaded."""
    given = {name: getattr(args, name) for name in args.options_given}
    for field in options.fields():
        if field.metadata["per_call"]:
            given.pop(field.name, None)  # passed to each call instead (seed)
    if args.channel_count is not None and args.channel_mode is None:
        raise UsageError(f"{options.flag('channel_count')} needs {options.flag('channel_mode')}")
    if args.guide is not None:
        try:
            given["guide"] = _load_limited(pathlib.Path(args.guide), args.max_side)
        except (ValueError, OSError) as exc:
            raise OSError(f"{options.flag('guide')}: {_one_line(exc)}") from None
    return given


def _build_dreamer(args, given: Optional[dict] = None):
    import fastdream

    try:
        return fastdream.Dreamer(**(_dreamer_options(args) if given is None else given))
    except (ValueError, TypeError) as exc:
        raise UsageError(_one_line(exc)) from None


# --- planning: inputs -> outputs, all checked before anything is dreamed ------------------------


def _scan_folder(folder: pathlib.Path) -> List[pathlib.Path]:
    from .image_io import IMAGE_SUFFIXES

    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".") and entry.is_file()
    )


def _collect_inputs(args) -> tuple[List[pathlib.Path], bool]:
    """The input files (deduplicated, in order) and whether the output must be a folder."""
    if args.demo:
        from .image_io import sample_image_path

        return [sample_image_path()], False
    files: List[pathlib.Path] = []
    many = len(args.inputs) > 1
    for text in args.inputs:
        path = pathlib.Path(text)
        if path.is_dir():
            many = True
            found = _scan_folder(path)
            if not found and len(args.inputs) == 1:
                from .image_io import IMAGE_SUFFIXES

                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {text}")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {text}")
    if not files:
        raise FileNotFoundError(f"no image files in {', '.join(args.inputs)}")
    seen = set()
    unique = []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, many


def _plan(args) -> tuple[List[_Job], Optional[pathlib.Path]]:
    """Jobs (input -> output) and the output folder to create (None for a single output file)."""
    from .image_io import IMAGE_SUFFIXES

    sources, many = _collect_inputs(args)
    output = pathlib.Path(args.output)
    to_folder = many or output.is_dir() or args.output.endswith(("/", os.sep))
    suffix = "." + (args.format or "png")

    if to_folder:
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o must be a folder when dreaming several images; {args.output} is a file")
        if not output.exists():
            if output.suffix.lower() in IMAGE_SUFFIXES:
                raise UsageError(
                    f"-o must be a folder when dreaming several images; {args.output} looks like a file name"
                )
            if not output.absolute().parent.is_dir():
                raise FileNotFoundError(f"parent folder of -o does not exist: {output.absolute().parent}")
        jobs = [_Job(src, output / (src.stem + suffix)) for src in sources]
        folder: Optional[pathlib.Path] = output
    else:
        _check_file_output(args)
        jobs = [_Job(sources[0], output)]
        folder = None

    return _check_outputs(jobs, sources, args), folder


def _check_file_output(args) -> None:
    """-o FILE: a known image suffix that agrees with --format, in a folder that exists."""
    from .image_io import IMAGE_SUFFIXES

    output = pathlib.Path(args.output)
    out_suffix = output.suffix.lower()
    if out_suffix not in IMAGE_SUFFIXES:
        what = "(--noise needs -o FILE)" if args.noise is not None else "(or an existing folder)"
        raise UsageError(
            f"cannot tell the output format from {args.output!r}; use one of {', '.join(IMAGE_SUFFIXES)} {what}"
        )
    if args.format and _FORMAT_FAMILY.get(args.format, args.format) != _FORMAT_FAMILY.get(
        out_suffix[1:], out_suffix[1:]
    ):
        raise UsageError(f"--format {args.format} contradicts the suffix of -o {args.output}")
    parent = output.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {parent}")


def _check_outputs(jobs: Sequence[_Job], sources: Sequence[pathlib.Path], args) -> List[_Job]:
    """Refuses outputs that are inputs (by path or by inode: hard links), shared or existing; returns
    the jobs to run (with --resume, those whose output does not exist yet)."""
    inputs = {src.resolve(): src for src in sources}
    inodes = {_inode(src): src for src in sources}
    claimed: Dict[pathlib.Path, pathlib.Path] = {}
    existing = []
    for job in jobs:
        dest = job.dest.resolve()
        hit = inputs.get(dest)
        if hit is None and job.dest.exists():
            hit = inodes.get(_inode(job.dest))
        if hit is not None:
            raise FileExistsError(f"output {job.dest} would overwrite the input {hit}; choose another -o")
        if dest in claimed:
            raise FileExistsError(
                f"inputs {claimed[dest]} and {job.source} would both be written to {job.dest}; "
                "rename one or dream them separately"
            )
        claimed[dest] = job.source
        if job.dest.exists():
            existing.append(job.dest)
    if existing and args.resume:
        _say_skipped(args, len(existing))
        return [job for job in jobs if job.dest not in existing]
    if existing and not args.overwrite:
        if len(existing) == 1:
            raise FileExistsError(f"output exists: {existing[0]} (use --overwrite to replace it, --resume to skip it)")
        raise FileExistsError(
            f"{len(existing)} outputs exist, first {existing[0]} (use --overwrite to replace them, "
            "--resume to skip them)"
        )
    return list(jobs)


def _say_skipped(args, count: int) -> None:
    if not args.quiet:
        print(f"skipped {count} {'image' if count == 1 else 'images'} whose output exists (--resume)",
              file=sys.stderr)


def _inode(path: pathlib.Path) -> tuple:
    info = path.stat()
    return info.st_dev, info.st_ino


# --- running -----------------------------------------------------------------------------------


def _load_limited(path: pathlib.Path, max_side: Optional[int]):
    from .image_io import load_image
    from .transforms import limit_side

    image = load_image(path)
    return image if max_side is None else limit_side(image, max_side)


def _dreamed(jobs: Sequence[_Job], dreamer, args, per_file_errors):
    """Per job, in order: the dreamed image or the exception that stopped it."""

    def images():  # a bad file is handed on as its exception: a generator that raises is over
        for job in jobs:
            try:
                yield _load_limited(job.source, args.max_side)
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


def _run(jobs: Sequence[_Job], dreamer, args) -> int:
    import torch
    from tqdm import tqdm

    from .errors import per_image_errors
    from .image_io import save_image

    per_file_errors = per_image_errors()
    done = 0
    bar = tqdm(total=len(jobs), desc="images", unit="img", file=sys.stderr, disable=args.quiet or len(jobs) < 2)

    def report(job, exc):
        message = _one_line(exc)
        if str(job.source) not in message:
            message = f"{job.source}: {message}"
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            message += " (try --max-side, --max-memory" + (" or a smaller --batch-size)" if args.batch_size > 1 else ")")
        tqdm.write(f"{PROG}: error: {message}", file=sys.stderr)

    results = _dreamed(jobs, dreamer, args, per_file_errors)
    tiling = _TilingNote(dreamer, args)
    seen = 0
    try:
        for job, result in zip(jobs, results):
            seen += 1
            bar.update()
            tiling()
            if not isinstance(result, BaseException):
                try:
                    save_image(result, job.dest, overwrite=args.overwrite)
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
        raise _Interrupted(
            f"{done} of {len(jobs)} images written; run the same command with --resume to finish"
        ) from None
    finally:
        bar.close()
    failed = len(jobs) - done
    if failed or (len(jobs) > 1 and not args.quiet):
        print(f"dreamed {done} of {len(jobs)} images, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


# --- zoom and video ----------------------------------------------------------------------------


def _frame_seed(seed: Optional[int], index: int) -> Optional[int]:
    return None if seed is None else seed + index


def _check_video_output(output: str, source: pathlib.Path, overwrite: bool) -> None:
    """Refuses an output that is (or, for numbered images, shares files or a folder with) the input,
    whatever --overwrite says, and an existing output without --overwrite."""
    from .video import is_sequence_path, sequence_glob

    dest = pathlib.Path(output)
    if is_sequence_path(output):
        pattern = sequence_glob(output)
        if is_sequence_path(str(source)):
            same = os.path.dirname(pattern) == os.path.dirname(sequence_glob(str(source)))
        else:
            same = fnmatch.fnmatchcase(str(source.resolve()), pattern)
        existing = glob.glob(pattern)
    else:
        same = dest.resolve() == source.resolve() or (
            dest.is_file() and source.exists() and _inode(dest) == _inode(source)
        )
        existing = [output] if os.path.lexists(output) else []
    if same:
        raise FileExistsError(f"output {output} would overwrite the input {source}; choose another -o")
    if existing and not overwrite:
        raise FileExistsError(f"output exists: {existing[0]} (use --overwrite to replace it)")


def _frame_bar(args, total: Optional[int]):
    from tqdm import tqdm

    return tqdm(total=total, desc="frames", unit="frame", file=sys.stderr, disable=args.quiet,
                position=0, leave=True)


def _frames_written(writer, total: Optional[int]) -> str:
    """What a Ctrl-C left of a zoom or video: the frames written (and published) so far."""
    if writer is None or not writer.count or not (writer.kind == "sequence" or writer.published):
        return "no frames written"
    of = f" of {total}" if total else ""
    return f"{writer.count}{of} frames written to {writer.path}"


class _TilingNote:
    """Says once, on stderr, that the dream runs tile by tile (--max-memory or --tile-size).

    Reads ``Dreamer.last_tiling``: the ``Tiling`` (``.tile``, ``.margin`` in pixels) of the largest
    octave of the dreamer's last call, None when it was dreamed whole. A Dreamer without that
    attribute is never reported.
    """

    def __init__(self, dreamer, args):
        self.dreamer, self.args, self.said = dreamer, args, False

    def __call__(self) -> None:
        tiling = getattr(self.dreamer, "last_tiling", None)
        if self.said or tiling is None or self.args.quiet:
            return
        self.said = True
        if getattr(self.args, "tile_size", None) is not None:
            why = f"--tile-size {self.args.tile_size}"
        else:
            why = f"--max-memory {options.format_memory(getattr(self.args, 'max_memory', None))}"
        from tqdm import tqdm

        tqdm.write(
            f"{PROG}: dreaming in tiles of {tiling.tile}×{tiling.tile} px (+{tiling.margin} px margin) for {why}",
            file=sys.stderr,
        )


def _cmd_zoom(args) -> int:
    from .video import VideoWriter

    source = pathlib.Path(args.input)
    if not source.exists():
        raise FileNotFoundError(f"input not found: {args.input}")
    _check_video_output(args.output, source, args.overwrite)  # checked before torch is imported
    from ._convert import to_float01
    from .image_io import load_image
    from .transforms import limit_side, zoom_transform

    image = load_image(source)
    if args.max_side is not None:
        image = limit_side(image, args.max_side)
    writer = None
    try:
        # On Ctrl-C the writer closes the output with the frames done so far.
        with VideoWriter(args.output, args.fps, overwrite=args.overwrite) as writer:
            dreamer = _build_dreamer(args)
            tiling = _TilingNote(dreamer, args)
            frame = to_float01(image)
            with _frame_bar(args, args.frames) as bar:
                for index in range(args.frames):  # the dream's own bar (steps) below the frames bar
                    frame = dreamer(frame, seed=_frame_seed(args.seed, index), progress=not args.quiet)
                    tiling()
                    writer.write(frame)
                    bar.update()
                    if index + 1 < args.frames:
                        frame = zoom_transform(frame, args.zoom, args.rotate, args.translate)
    except KeyboardInterrupt:
        raise _Interrupted(_frames_written(writer, args.frames)) from None
    if not args.quiet:
        print(args.output)
    return 0


def _cmd_video(args) -> int:
    from .video import VideoWriter, read_video

    source = pathlib.Path(args.input)
    _check_video_output(args.output, source, args.overwrite)  # checked before torch is imported
    if args.flow:
        if args.blend == 0:
            raise UsageError("--flow moves the previous dreamed frame into the next: it needs --blend > 0, got 0")
        from .flow import require_opencv

        require_opencv()  # before anything is read or written
    frames, fps, count = read_video(args.input)
    from ._convert import to_float01
    from .transforms import limit_side

    total = count if args.max_frames is None else min(count or args.max_frames, args.max_frames)

    def inputs():  # float frames: the feedback blends the unquantised dreamed frame, as it is written
        for index, frame in enumerate(frames):
            if args.max_frames is not None and index >= args.max_frames:
                return
            if args.max_side is not None:
                frame = limit_side(frame, args.max_side)
            yield to_float01(frame)

    writer = None
    try:
        with frames, VideoWriter(args.output, args.fps or fps or 25.0, overwrite=args.overwrite) as writer:
            dreamer = _build_dreamer(args)
            tiling = _TilingNote(dreamer, args)
            with _frame_bar(args, total) as bar:
                for dreamed in dreamer.stream(inputs(), blend=args.blend, flow=args.flow, seed=args.seed, progress=False):
                    tiling()
                    writer.write(dreamed)
                    bar.update()
    except KeyboardInterrupt:
        raise _Interrupted(_frames_written(writer, total)) from None
    if not args.quiet:
        print(args.output)
    return 0


# --- entry point -------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """The error's message on one line; an option named in flag syntax (``--octave-scale``)."""
    if isinstance(exc, options.OptionError):
        text = exc.for_command_line()
    else:  # errors of the models carry their command-line wording (`fastdream layers MODEL`)
        text = getattr(exc, "command_line", None) or str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _is_weights_error(exc: BaseException) -> bool:
    errors = sys.modules.get("fastdream.errors")
    return errors is not None and isinstance(exc, errors.WeightsUnavailableError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ``fastdream`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.handler(args)
    except KeyboardInterrupt as exc:  # what was finished is kept and said: "N of M images written"
        note = str(exc) if isinstance(exc, _Interrupted) else ""
        print(f"\n{PROG}: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastdream layers vgg16 | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 141
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except ImportError as exc:  # an optional package that is missing (the message says how to install it)
        if "pip install" not in str(exc):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if not _is_weights_error(exc):
            raise
        message = getattr(exc, "command_line", None)
        if message is None:
            message = f"{exc} (on the command line: --weights PATH, or --weights none for random initialisation)"
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
