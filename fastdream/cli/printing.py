"""What the commands print and share: error lines, notes on stderr, the tiling note, Ctrl-C notes,
and the options a command line gave."""
from __future__ import annotations

import sys

from .. import options
from ..jobs import dreamer_options, one_line, skipped_note
from .parser import PROG


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a note on what was finished before it (printed after ``fastdream: interrupted``)."""


def error_line(message) -> str:
    """``fastdream: error: MESSAGE`` for a message or an exception (in flag syntax)."""
    text = one_line(message, command_line=True) if isinstance(message, BaseException) else message
    return f"{PROG}: error: {text}"


def note_skipped(args, count: int) -> None:
    """Says on stderr (unless ``--quiet``) how many outputs ``--resume`` kept."""
    if count and not args.quiet:
        print(skipped_note(count), file=sys.stderr)


def options_of(args) -> dict:
    """The ``Dreamer(...)`` options the flags give: those given on the command line (the others
    keep the API's defaults), ``--guide`` loaded (``fastdream.jobs.dreamer_options``). Called
    just before the Dreamer is built; with ``--threads N`` it sets torch's thread count for this
    process then (and so for Ray's CPU actors, which take the driver's)."""
    given = dreamer_options({name: getattr(args, name) for name in args.options_given}, args.max_side)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    return given


class TilingNote:
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
