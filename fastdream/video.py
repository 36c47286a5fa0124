"""Reading and writing frame sequences: video files, animated GIFs and numbered image files.

* ``.mp4`` / ``.mkv`` / ``.webm``: PyAV (``pip install av``; the extra ``video`` of fastdream);
  H.264 (mp4, mkv) or VP9 (webm), 4:2:0. Those codecs need even sizes, so a frame with an odd
  height or width is padded by repeating its last row or column.
* ``.gif``: Pillow (each frame quantised to its own 256-colour palette, looping forever).
* numbered image files: a folder (frames ``frame_000000.png``, ``frame_000001.png``, … inside) or
  a path with a ``%d``-style pattern such as ``out/f%04d.jpg``; numbered from 0.

Frames are uint8 Tensor[3, H, W] (RGB); :class:`VideoWriter` also takes float frames in [0, 1].
A :class:`VideoWriter` interrupted by Ctrl-C (``KeyboardInterrupt``) still finishes and publishes the
frames written so far, so a long run is never lost.
"""
from __future__ import annotations

import contextlib
import errno
import fractions
import glob
import os
import re
from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple, Union

from ._atomic import exists_error, open_temp, publish

if TYPE_CHECKING:  # imported where used: the command line checks paths before it pays for torch
    import numpy as np
    import torch
    from PIL import Image

__all__ = ["VIDEO_SUFFIXES", "read_video", "VideoWriter", "is_sequence_path", "sequence_glob"]

PathLike = Union[str, "os.PathLike[str]"]

VIDEO_SUFFIXES = (".mkv", ".mp4", ".webm")
_CONTAINERS = {".mp4": ("mp4", "libx264"), ".mkv": ("matroska", "libx264"), ".webm": ("webm", "libvpx-vp9")}
_CODEC_OPTIONS = {"libx264": {"crf": "18"}, "libvpx-vp9": {"crf": "30", "b": "0"}}
_PATTERN = re.compile(r"%0?\d*d")
_FOLDER_PATTERN = "frame_%06d.png"
_INSTALL_HINT = "reading and writing .mp4/.mkv/.webm needs PyAV: pip install av"


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return av


def _name(func: str, path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{func}: path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fsdecode(os.fspath(path))


def is_sequence_path(path: PathLike) -> bool:
    """Whether ``path`` names numbered image files: an existing folder, a name ending in a path
    separator, or a name with a ``%d``-style pattern."""
    name = _name("is_sequence_path", path)
    return os.path.isdir(name) or name.endswith(("/", os.sep)) or bool(_PATTERN.search(os.path.basename(name)))


def _sequence_pattern(name: str) -> str:
    if _PATTERN.search(os.path.basename(name)):
        return name
    return os.path.join(name, _FOLDER_PATTERN)


def _glob_of(pattern: str) -> str:
    return _PATTERN.sub("*", glob.escape(pattern).replace("[%]", "%"))


def sequence_folder(path: PathLike) -> str:
    """The folder (absolute, as written) that a sequence path's numbered files go into."""
    return os.path.dirname(os.path.abspath(_sequence_pattern(_name("sequence_folder", path))))


def sequence_glob(path: PathLike) -> str:
    """The glob of the numbered files a sequence path (folder or ``%d`` pattern) stands for, with
    its folder resolved (links followed)."""
    pattern = _sequence_pattern(_name("sequence_glob", path))
    folder, base = os.path.split(os.path.abspath(pattern))
    return os.path.join(glob.escape(os.path.realpath(folder)), _glob_of(base))


# --- reading -----------------------------------------------------------------------------------


class _Frames:
    """Iterator of uint8 Tensor[3, H, W]; closes its source when exhausted, closed or collected."""

    def __init__(self, frames: Iterator[np.ndarray], close=None):
        self._frames = frames
        self._close = close

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        import numpy as np
        import torch

        try:
            array = next(self._frames)
        except StopIteration:
            self.close()
            raise
        return torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(2, 0, 1).contiguous()

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


def read_video(path: PathLike) -> Tuple[_Frames, Optional[float], Optional[int]]:
    """Opens a video, GIF or image sequence for reading.

    Args:
        path: a ``.mp4``/``.mkv``/``.webm`` (or any file PyAV reads), a ``.gif``, a folder of
            images (sorted by name) or a ``%d``-style pattern (numbered from 0, or from 1).

    Returns:
        ``(frames, fps, count)``: an iterator of uint8 Tensor[3, H, W] (RGB; use it as a context
        manager or call ``.close()`` to release the file early), the frame rate (``None`` for image
        sequences, which store none) and the number of frames (``None`` where the container does
        not say).

    Raises:
        FileNotFoundError: nothing at ``path`` (or no numbered file).
        ImportError: a video file without PyAV installed (the message names the extra).
        ValueError: the file cannot be decoded.
    """
    name = _name("read_video", path)
    if is_sequence_path(name):
        return _read_sequence(name)
    if not os.path.exists(name):
        raise FileNotFoundError(errno.ENOENT, "read_video: no such file", name)
    if name.lower().endswith(".gif"):
        return _read_gif(name)
    av = _import_av()
    try:
        container = av.open(name)
    except av.FFmpegError as exc:
        raise ValueError(f"read_video: {name!r} is not a readable video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise ValueError(f"read_video: {name!r} has no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    count = int(stream.frames) or None
    frames = (frame.to_ndarray(format="rgb24") for frame in container.decode(stream))
    return _Frames(frames, container.close), fps, count


def _read_gif(name: str):
    import numpy as np
    from PIL import Image

    try:
        image = Image.open(name)
        count = getattr(image, "n_frames", 1)
    except (OSError, Image.UnidentifiedImageError) as exc:
        raise ValueError(f"read_video: {name!r} is not a readable GIF ({exc})") from exc
    duration = image.info.get("duration")
    fps = 1000.0 / duration if duration else None

    def frames():
        for i in range(count):
            image.seek(i)
            yield np.asarray(image.convert("RGB"))

    return _Frames(frames(), image.close), fps, count


def _read_sequence(name: str):
    if os.path.isdir(name):
        files = sorted(
            os.path.join(name, f)
            for f in os.listdir(name)
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
        )
    else:
        start = 0 if os.path.exists(name % 0) else 1
        files = []
        while os.path.exists(name % (start + len(files))):
            files.append(name % (start + len(files)))
    if not files:
        raise FileNotFoundError(errno.ENOENT, "read_video: no numbered image files", name)
    from .image_io import load_image

    frames = (load_image(f).permute(1, 2, 0).numpy() for f in files)
    return _Frames(frames), None, len(files)


# --- writing -----------------------------------------------------------------------------------


def _to_hwc(frame, func: str) -> np.ndarray:
    import numpy as np
    import torch

    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"{func}: frame must be a torch.Tensor, got {type(frame).__name__}")
    if frame.dim() != 3 or frame.shape[0] != 3 or frame.shape[1] == 0 or frame.shape[2] == 0:
        raise ValueError(f"{func}: frame must have shape Tensor[3, H, W], got {list(frame.shape)}")
    from ._convert import to_uint8

    return np.ascontiguousarray(to_uint8(frame, func, noun="frame").permute(1, 2, 0).numpy())


class VideoWriter:
    """Writes frames to a video, a GIF or numbered image files, as they come.

    Args:
        path: ``.mp4``/``.mkv``/``.webm`` (PyAV), ``.gif`` (Pillow), a folder or a ``%d``
            pattern (numbered image files, see the module docstring).
        fps: frames per second (> 0); a GIF stores it as a per-frame duration in ms.
        overwrite: replace an existing output. Without it an existing file (or, for image
            sequences, an existing frame 0) is refused before anything is written.

    Use it as a context manager; ``write(frame)`` takes uint8 Tensor[3, H, W] or float in [0, 1],
    every frame of the same size. Videos and GIFs are written to a hidden temporary file in the
    target's folder and moved into place on a clean close, and on Ctrl-C (``KeyboardInterrupt``
    inside the ``with`` block) with the frames written so far; on an error the temporary file is
    removed and the target is left as it was. Image files are each written atomically. A folder
    target is created if missing (its parent must exist).
    """

    def __init__(self, path: PathLike, fps: float, *, overwrite: bool = False):
        name = _name("VideoWriter", path)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0 or fps == float("inf"):
            raise ValueError(f"VideoWriter: fps must be a finite number > 0, got {fps!r}")
        self.path, self.fps, self.overwrite = name, float(fps), bool(overwrite)
        self.count = 0
        self.published = False  # a video or GIF moved into place (numbered images: each as written)
        self._size: Optional[Tuple[int, int]] = None
        self._temp: Optional[str] = None
        self._closed = False
        suffix = os.path.splitext(name)[1].lower()
        if is_sequence_path(name):
            self.kind = "sequence"
            self._pattern = _sequence_pattern(name)
            folder = os.path.dirname(os.path.abspath(self._pattern))
            if not os.path.isdir(os.path.dirname(folder)) and not os.path.isdir(folder):
                raise FileNotFoundError(errno.ENOENT, "VideoWriter: parent folder does not exist", os.path.dirname(folder))
            if not overwrite and glob.glob(_glob_of(self._pattern)):
                raise FileExistsError(
                    errno.EEXIST, "VideoWriter: numbered frames exist (pass overwrite=True to replace them)", name
                )
            os.makedirs(folder, exist_ok=True)
            return
        if suffix == ".gif":
            from PIL import Image

            self._image = Image
            self.kind = "gif"
            self._gif: List[Image.Image] = []
        elif suffix in _CONTAINERS:
            self.kind = "video"
            self._av = _import_av()
        else:
            raise ValueError(
                f"VideoWriter: cannot tell the output kind from {name!r}; use {', '.join(VIDEO_SUFFIXES)}, .gif, "
                "a folder or a %d pattern"
            )
        folder = os.path.dirname(os.path.abspath(name))
        if not os.path.isdir(folder):
            raise FileNotFoundError(errno.ENOENT, "VideoWriter: folder does not exist", folder)
        if os.path.isdir(name):
            raise IsADirectoryError(errno.EISDIR, "VideoWriter: path is a folder", name)
        if not overwrite and os.path.lexists(name):
            raise exists_error(name, "VideoWriter")
        fd, self._temp = open_temp(folder, os.path.basename(name), "VideoWriter")
        os.close(fd)  # reserved; PyAV and Pillow write it by name
        if self.kind == "video":
            fmt, self._codec = _CONTAINERS[suffix]
            try:
                self._container = self._av.open(self._temp, mode="w", format=fmt)
            except BaseException:
                os.unlink(self._temp)
                raise
            self._stream = None

    # -- writing --

    def write(self, frame: torch.Tensor) -> None:
        """Appends one frame (uint8 Tensor[3, H, W], or float in [0, 1])."""
        if self._closed:
            raise ValueError("VideoWriter.write: the writer is closed")
        array = _to_hwc(frame, "VideoWriter.write")
        size = array.shape[:2]
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"VideoWriter.write: frame is {size[0]}×{size[1]} but the first was {self._size[0]}×{self._size[1]}")
        if self.kind == "sequence":
            import torch

            from .image_io import save_image

            save_image(torch.from_numpy(array).permute(2, 0, 1), self._pattern % self.count, overwrite=self.overwrite)
        elif self.kind == "gif":
            self._gif.append(self._image.fromarray(array, mode="RGB").quantize(256))
        else:
            self._write_video(array)
        self.count += 1

    def _write_video(self, array: np.ndarray) -> None:
        import numpy as np

        height, width = array.shape[:2]
        if height % 2 or width % 2:
            array = np.pad(array, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if self._stream is None:
            rate = fractions.Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream(self._codec, rate=rate, options=_CODEC_OPTIONS[self._codec])
            self._stream.width, self._stream.height = array.shape[1], array.shape[0]
            self._stream.pix_fmt = "yuv420p"
        frame = self._av.VideoFrame.from_ndarray(array, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    # -- finishing --

    def close(self) -> None:
        """Finishes the file and moves it into place (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.kind == "sequence":
            return
        try:
            if self.count == 0:
                raise ValueError(f"VideoWriter: no frames were written to {self.path!r}")
            if self.kind == "video":
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._container.close()
            else:
                first, rest = self._gif[0], self._gif[1:]
                first.save(
                    self._temp, format="GIF", save_all=True, append_images=rest,
                    duration=max(1, round(1000.0 / self.fps)), loop=0,
                )
                self._gif = []
            self._publish()
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Stops without publishing: the temporary file is removed, the target left as it was."""
        if self._closed:
            return
        self._closed = True
        self._discard()

    def _discard(self) -> None:
        if self.kind == "video":
            with contextlib.suppress(Exception):
                self._container.close()
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)

    def _publish(self) -> None:
        publish(self._temp, self.path, self.overwrite, "VideoWriter")
        self.published = True

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or (issubclass(exc_type, KeyboardInterrupt) and self.count):
            self.close()  # Ctrl-C: the frames written so far make a valid, shorter file
        else:
            self.abort()
