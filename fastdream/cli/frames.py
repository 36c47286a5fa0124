"""``fastdream zoom`` (the feedback loop) and ``fastdream video`` (``Dreamer.stream``): frames
dreamed one by one and written as they come (``fastdream.video.VideoWriter``)."""
from __future__ import annotations

import pathlib
import sys
from typing import Optional

from ..batching import seed_for
from ..jobs import UsageError, build_dreamer, check_video_output, load_limited
from .printing import Interrupted, TilingNote, options_of


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


def zoom_command(args) -> int:
    from ..video import VideoWriter

    source = pathlib.Path(args.input)
    if not source.exists():
        raise FileNotFoundError(f"input not found: {args.input}")
    check_video_output(args.output, source, args.overwrite)  # checked before torch is imported
    options = options_of(args)  # --guide and --weights paths checked before torch is imported
    from .._convert import to_float01
    from ..transforms import zoom_transform

    image = load_limited(source, args.max_side)
    writer = None
    try:
        # On Ctrl-C the writer closes the output with the frames done so far.
        with VideoWriter(args.output, args.fps, overwrite=args.overwrite) as writer:
            dreamer = build_dreamer(options)
            tiling = TilingNote(dreamer, args)
            frame = to_float01(image)
            with _frame_bar(args, args.frames) as bar:
                for index in range(args.frames):  # the dream's own bar (steps) below the frames bar
                    frame = dreamer(frame, seed=seed_for(args.seed, index), progress=not args.quiet)
                    tiling()
                    writer.write(frame)
                    bar.update()
                    if index + 1 < args.frames:
                        frame = zoom_transform(frame, args.zoom, args.rotate, args.translate)
    except KeyboardInterrupt:
        raise Interrupted(_frames_written(writer, args.frames)) from None
    if not args.quiet:
        print(args.output)
    return 0


def video_command(args) -> int:
    from ..video import VideoWriter, read_video

    source = pathlib.Path(args.input)
    check_video_output(args.output, source, args.overwrite)  # checked before torch is imported
    if args.flow:
        if args.blend == 0:
            raise UsageError("--flow moves the previous dreamed frame into the next: it needs --blend > 0, got 0")
        from ..flow import require_opencv

        require_opencv()  # before anything is read or written
    options = options_of(args)  # --guide and --weights paths checked before torch is imported
    frames, fps, count = read_video(args.input)
    from .._convert import to_float01
    from ..transforms import limit_side

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
            dreamer = build_dreamer(options)
            tiling = TilingNote(dreamer, args)
            with _frame_bar(args, total) as bar:
                for dreamed in dreamer.stream(inputs(), blend=args.blend, flow=args.flow, seed=args.seed, progress=False):
                    tiling()
                    writer.write(dreamed)
                    bar.update()
    except KeyboardInterrupt:
        raise Interrupted(_frames_written(writer, total)) from None
    if not args.quiet:
        print(args.output)
    return 0
