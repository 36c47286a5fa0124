"""The ``fastdream`` command line: argument types and the parser (flags of the options from
``fastdream.options``); ``fastdream.cli`` runs what it parses.
"""

from __future__ import annotations

import argparse
import re
from typing import Dict

from .. import options
from ..jobs import OUTPUT_FORMATS

PROG = "fastdream"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fastdream: error: MESSAGE (see 'fastdream dream --help')``,
    no usage block (the subcommand parsers are of this class too)."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


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
    parser.add_argument(
        "--threads", type=_count_type, metavar="N",
        help="torch CPU threads (default: torch's choice). Outputs are reproducible for the same seed, input, "
        "machine, backend and thread count; on a busy machine fewer threads can be much faster",
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
        "--format", choices=OUTPUT_FORMATS, help="output format for folder outputs (default: png)"
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
    from ..serve_requests import add_limit_flags

    add_limit_flags(serve)
    _add_dream_options(serve, "serve")

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

    video = commands.add_parser(
        "video",
        help="dream every frame of a video",
        description="Dream every frame of a video (or GIF, or numbered images), feeding part of each dreamed "
        "frame into the next: input_k = (1 - B) * frame_k + B * dreamed_(k-1); with --flow, "
        "input_k = frame_k + B * (dreamed_(k-1) - frame_(k-1)) moved along the optical flow, where it is reliable.",
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

    commands.add_parser("models", help="list the built-in models", description="List the built-in models.")

    layers = commands.add_parser(
        "layers", help="list a model's layer names", description="List the layer names of a model."
    )
    layers.add_argument("model", metavar="MODEL", help="a model name from 'fastdream models'")
    return parser
