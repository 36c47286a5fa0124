"""Reading and writing images as tensors, and the bundled sample photo.

Images are ``uint8`` tensors of shape ``Tensor[3, H, W]`` (RGB, channels first), the form every
``fastdream`` entry point accepts directly.

* :func:`load_image` reads any file Pillow can decode, applies the EXIF orientation and converts
  every colour mode to 8-bit RGB (see its docstring for the exact rules).
* :func:`save_image` writes a tensor atomically (temporary file in the same folder, then
  ``os.replace``) and never replaces an existing file unless asked to.
* :func:`sample_image` / :func:`sample_image_path` give the bundled CC0 photos: Chelsea the cat
  (the default) and a cup of coffee.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib.resources
import io
import os
import pathlib
import warnings
from typing import TYPE_CHECKING, Union

from ._atomic import exists_error, open_temp, publish

if TYPE_CHECKING:  # imported where used: the command line checks paths before it pays for torch
    import numpy as np
    import torch
    from PIL import Image

__all__ = [
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "load_image",
    "save_image",
    "sample_image",
    "sample_image_path",
    "SAMPLE_NAMES",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Suffix (lower case) -> Pillow format name, for every format :func:`save_image` writes.
IMAGE_FORMATS = {
    ".bmp": "BMP",
    ".jpeg": "JPEG",
    ".jpg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
# Encoder options per format: lossy formats at a quality that keeps the dream's fine detail.
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
# Modes each format can store as they are; a grey image goes out as RGB where "L" is missing.
_GREY_FORMATS = {"BMP", "JPEG", "PNG", "TIFF"}

#: Lower-case file suffixes that count as images when a folder is scanned; the same set
#: :func:`save_image` can write. (:func:`load_image` itself reads anything Pillow decodes.)
IMAGE_SUFFIXES = tuple(sorted(IMAGE_FORMATS))

_WHITE = (255, 255, 255)
#: Names of the bundled sample photos (:func:`sample_image`), the default first.
SAMPLE_NAMES = ("chelsea", "coffee")


def _fspath(path: object, func: str) -> str:
    """``os.fspath(path)`` as ``str``, or a TypeError that names ``func``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{func}: path must be a str or os.PathLike, got {type(path).__name__}"
        )
    return os.fsdecode(os.fspath(path))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Converts a decoded Pillow image of any mode to 8-bit RGB (rules in load_image)."""
    import numpy as np
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow's convert clips these to 255 instead of scaling; 16-bit grey is 0..65535.
        grey = np.asarray(im, dtype=np.float64) / 257.0
        return _grey_array_to_rgb(grey)
    if im.mode == "F":
        grey = np.asarray(im, dtype=np.float64)
        finite = grey[np.isfinite(grey)]
        if finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0):
            grey = grey * 255.0
        return _grey_array_to_rgb(np.nan_to_num(grey, nan=0.0))
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _grey_array_to_rgb(grey: np.ndarray) -> Image.Image:
    import numpy as np
    from PIL import Image

    grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(grey8, mode="L").convert("RGB")


def load_image(path: PathLike) -> torch.Tensor:
    """Reads an image file as a ``uint8`` ``Tensor[3, H, W]`` in RGB order (contiguous, CPU).

    Args:
        path: ``str`` or ``os.PathLike``; any format Pillow decodes (PNG, JPEG, WebP, BMP,
            TIFF, GIF, ...). For multi-frame files (GIF, multi-page TIFF) the first frame is read.

    Conversions, in this order:

    * the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``), so photos taken
      with a rotated camera come out the way viewers show them;
    * images with transparency (RGBA, LA, palette with a transparent colour) are composited
      over a white background: DeepDream has no use for alpha, and white is how most viewers
      and printers show transparent areas (the RGB values under fully transparent pixels are
      often garbage, so they are not kept as they are);
    * 16-bit grey (``I;16`` and ``I``) is scaled from 0..65535 to 0..255 (rounded);
      32-bit float grey (``F``) is taken as 0..1 when all values lie there, else as 0..255;
    * every other mode (grey, 1-bit, palette, CMYK, YCbCr, ...) goes through Pillow's RGB
      conversion. Pillow itself reads 16-bit-per-channel RGB PNGs as 8-bit RGB.

    Raises:
        TypeError: ``path`` is not a ``str`` or ``os.PathLike``.
        FileNotFoundError: no file at ``path``.
        ValueError: the file is a folder, cannot be decoded, is truncated, or is larger than
            Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    name = _fspath(path, "load_image")
    if not os.path.exists(name):
        raise FileNotFoundError(errno.ENOENT, "load_image: no such file", name)
    if os.path.isdir(name):
        raise ValueError(f"load_image: {name!r} is a folder, not an image file")
    return _decode(name, name, "load_image")


def decode_image(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """The image file held in ``data`` (an upload, an object store's bytes) as :func:`load_image`
    reads a file: ``uint8`` ``Tensor[3, H, W]``, RGB, with the same conversions. ``name`` is what
    the error messages call it. Raises ``TypeError`` for non-bytes, ``ValueError`` as load_image."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image: data must be bytes, got {type(data).__name__}")
    return _decode(io.BytesIO(bytes(data)), name, "decode_image")


def _decode(source, name: str, func: str) -> torch.Tensor:
    """Pillow's decode of ``source`` (a path or a file object) with load_image's conversions."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            # A merely large image (between MAX_IMAGE_PIXELS and twice that) is the user's choice.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{func}: {name!r} is too large to read safely: {exc}") from exc
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, PermissionError):
            raise
        detail = str(exc).replace(repr(source), repr(name))  # Pillow names a file object by its repr
        raise ValueError(f"{func}: {name!r} is not a readable image ({type(exc).__name__}: {detail})") from exc
    array = np.array(rgb, dtype=np.uint8)  # copy: [H, W, 3]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_uint8_hwc(image: torch.Tensor, func: str = "save_image") -> np.ndarray:
    """Checks ``image`` for ``func`` (save_image, encode_image) and returns a uint8 numpy array [H, W, C] (a copy)."""
    import torch

    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{func}: image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        hint = " (for a batch of one, pass image[0])" if image.dim() == 4 else ""
        raise ValueError(
            f"{func}: image must have shape Tensor[3, H, W] or Tensor[1, H, W], "
            f"got {list(image.shape)}{hint}"
        )
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{func}: image is empty, shape {list(image.shape)}")
    from ._convert import to_uint8

    pixels = to_uint8(image, func)  # a copy: the caller's tensor is never modified
    return pixels.permute(1, 2, 0).contiguous().numpy().copy()


def _encode(array, fmt: str, handle) -> None:
    """Writes a uint8 [H, W, 1 or 3] array to the file object ``handle`` in Pillow format ``fmt``."""
    from PIL import Image

    if array.shape[2] == 1:
        pil = Image.fromarray(array[:, :, 0], mode="L")
        if fmt not in _GREY_FORMATS:
            pil = pil.convert("RGB")
    else:
        pil = Image.fromarray(array, mode="RGB")
    pil.save(handle, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))


def encode_image(image: torch.Tensor, suffix: str = ".png") -> bytes:
    """``image`` as :func:`save_image` would write it to a file with this ``suffix`` (``.png``,
    ``.jpg`` …), as bytes (an HTTP answer, an object store)."""
    key = suffix.lower() if suffix.startswith(".") else "." + suffix.lower()
    if key not in IMAGE_FORMATS:
        raise ValueError(f"encode_image: unknown suffix {suffix!r}; supported suffixes: {', '.join(IMAGE_SUFFIXES)}")
    buffer = io.BytesIO()
    _encode(_to_uint8_hwc(image, "encode_image"), IMAGE_FORMATS[key], buffer)
    return buffer.getvalue()


def _format_for(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(
            f"save_image: cannot tell the image format from {name!r} "
            f"(suffix {suffix or 'missing'!r}); supported suffixes: {', '.join(IMAGE_SUFFIXES)}"
        )
    return IMAGE_FORMATS[suffix]


def save_image(image: torch.Tensor, path: PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """Writes ``image`` to ``path`` atomically and returns the path written.

    Args:
        image: ``Tensor[3, H, W]`` (RGB) or ``Tensor[1, H, W]`` (grey), on any device; either
            ``uint8`` (0..255, written as is) or any floating dtype (0..1; clamped to that
            range, then scaled by 255 and rounded to the nearest integer). Never modified.
        path: ``str`` or ``os.PathLike``. The format comes from the suffix (case-insensitive):
            ``.png``, ``.jpg``/``.jpeg`` (quality 95), ``.webp`` (quality 95), ``.bmp``,
            ``.tif``/``.tiff``.
        overwrite: replace an existing file. Without it an existing file is never touched.

    The image is first written to a hidden temporary file in the same folder, flushed to disk
    and then moved into place in one step, so ``path`` holds either the old content or the
    complete new image, never a partial file; the temporary file is removed on any failure
    (KeyboardInterrupt included). The folder must exist: a typo in a folder name is reported
    rather than silently creating a new tree of folders.

    Raises:
        TypeError: ``image`` is not a tensor or has an unsupported dtype, or ``path`` is not a
            ``str``/``os.PathLike``.
        ValueError: bad shape, NaN values, or an unknown suffix (the message lists the
            supported ones).
        FileNotFoundError: the folder of ``path`` does not exist (the message names it).
        NotADirectoryError: the folder of ``path`` is a file.
        IsADirectoryError: ``path`` is an existing folder.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """

    name = _fspath(path, "save_image")
    fmt = _format_for(name)
    array = _to_uint8_hwc(image)
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.exists(folder):
        raise FileNotFoundError(
            errno.ENOENT, "save_image: folder does not exist (it is not created)", folder
        )
    if not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, "save_image: not a folder", folder)
    if os.path.isdir(name):
        raise IsADirectoryError(errno.EISDIR, "save_image: path is a folder", name)
    if not overwrite and os.path.lexists(name):
        raise exists_error(name, "save_image")

    fd, temp = open_temp(folder, os.path.basename(name), "save_image")
    try:
        with os.fdopen(fd, "wb") as handle:
            _encode(array, fmt, handle)
            handle.flush()
            os.fsync(handle.fileno())
        publish(temp, name, overwrite, "save_image")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return pathlib.Path(name)


_resource_stack = contextlib.ExitStack()
atexit.register(_resource_stack.close)


def sample_image_path(name: str = "chelsea") -> pathlib.Path:
    """Path of a bundled sample photo: ``"chelsea"`` (``fastdream/data/chelsea.png``, the default)
    or ``"coffee"`` (``fastdream/data/coffee.png``).

    * ``"chelsea"``: Chelsea the cat, 451×300 RGB;
    * ``"coffee"``: a cup of coffee, 600×400 RGB (handy as a ``guide`` image).

    Both from scikit-image's data set, CC0 (public domain); see ``fastdream/data/LICENSE.txt``. Found
    through ``importlib.resources``, so it works from a source checkout and an installed wheel alike
    (from a zipped install the file is extracted once, for the life of the process).

    Raises:
        ValueError: ``name`` is not one of the sample names.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"sample_image: unknown sample {name!r}; valid names: {', '.join(SAMPLE_NAMES)}")
    resource = importlib.resources.files("fastdream") / "data" / f"{name}.png"
    if isinstance(resource, pathlib.Path):
        return resource
    return pathlib.Path(_resource_stack.enter_context(importlib.resources.as_file(resource)))


def sample_image(name: str = "chelsea") -> torch.Tensor:
    """A bundled sample photo (see :func:`sample_image_path`) as ``uint8`` ``Tensor[3, H, W]``:
    ``Tensor[3, 300, 451]`` for ``"chelsea"``, ``Tensor[3, 400, 600]`` for ``"coffee"``."""
    return load_image(sample_image_path(name))
