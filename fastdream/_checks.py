"""Every argument rule of the library, once: numbers, sizes, tensors and the caller's image.

    >>> check_real("zoom_transform", "zoom", -1.0, greater_than=0.0)
    Traceback (most recent call last):
    ValueError: zoom_transform: zoom must be > 0.0, got -1.0

A wrong type raises ``TypeError``, a wrong value ``ValueError``; each message names the function,
the argument and what was expected. The rules themselves (``*_problem``) return what is wrong
instead of raising, so that :mod:`fastdream.options` words the same rule as an ``OptionError``
about an option (``octaves must be >= 1, got 0``; on the command line ``--octaves ...``).

No torch import at module level: ``fastdream.options`` (the command line's ``--help``) uses the
number rules; the tensor checks import torch when they run (torch is loaded by then).
"""
from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

if TYPE_CHECKING:
    import torch

Problem = Optional[Tuple[type, str]]
"""``None`` (fine) or ``(TypeError or ValueError, "must be ..., got ...")``."""


def type_name(value) -> str:
    return type(value).__name__


def is_real(value) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` to Python, never a number to us)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------ rules


def real_problem(value, *, greater_than: Optional[float] = None, at_least: Optional[float] = None) -> Problem:
    """What is wrong with ``value`` as a finite real number ``> greater_than`` / ``>= at_least``."""
    if not is_real(value):
        return TypeError, f"must be a real number, got {type_name(value)}"
    value = float(value)
    if not math.isfinite(value):
        return ValueError, f"must be finite, got {value}"
    if greater_than is not None and not value > greater_than:
        return ValueError, f"must be > {greater_than}, got {value}"
    if at_least is not None and not value >= at_least:
        return ValueError, f"must be >= {at_least}, got {value}"
    return None


def int_problem(value, minimum: Optional[int] = None) -> Problem:
    """What is wrong with ``value`` as an int ``>= minimum``."""
    wanted = "an int" if minimum is None else f"an int >= {minimum}"
    if not is_int(value):
        return TypeError, f"must be {wanted}, got {type_name(value)}"
    if minimum is not None and value < minimum:
        return ValueError, f"must be >= {minimum}, got {value}"
    return None


def choice_problem(value, choices: Sequence[str], optional: bool = False) -> Problem:
    """What is wrong with ``value`` as one of the strings ``choices`` (or ``None`` if ``optional``)."""
    if value is None and optional:
        return None
    listed = f"one of {tuple(choices)}" if len(choices) > 2 else " or ".join(map(repr, choices))
    listed = f"None or {listed}" if optional else listed
    if not isinstance(value, str):
        return TypeError, f"must be {listed}, got {type_name(value)}"
    if value not in choices:
        return ValueError, f"must be {listed}, got {value!r}"
    return None


def size_problem(size, minimum: int = 1) -> Problem:
    """What is wrong with ``size`` as a ``(height, width)`` pair of ints ``>= minimum``."""
    wanted = f"a (height, width) pair of ints >= {minimum}"
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence):  # torch.Size is a tuple
        return TypeError, f"must be {wanted}, got {type_name(size)}"
    if len(size) != 2:
        return ValueError, f"must be {wanted}, got {len(size)} values {tuple(size)}"
    if not all(is_int(s) for s in size):
        return TypeError, f"must be {wanted}, got {tuple(type_name(s) for s in size)}"
    if min(size) < minimum:
        return ValueError, f"must be {wanted}, got {tuple(size)}"
    return None


def fail(func: str, name: str, problem: Problem) -> None:
    """Raise ``problem`` (if any) as ``"{func}: {name} must ..."``."""
    if problem is not None:
        kind, text = problem
        raise kind(f"{func}: {name} {text}")


# -------------------------------------------------------------------------------------- checkers


def check_real(func: str, name: str, value, *, greater_than: Optional[float] = None,
               at_least: Optional[float] = None) -> float:
    fail(func, name, real_problem(value, greater_than=greater_than, at_least=at_least))
    return float(value)


def check_int(func: str, name: str, value, minimum: Optional[int] = None) -> int:
    fail(func, name, int_problem(value, minimum))
    return int(value)


def check_choice(func: str, name: str, value, choices: Sequence[str]) -> str:
    fail(func, name, choice_problem(value, choices))
    return value


def check_size(func: str, name: str, size, minimum: int = 1) -> Tuple[int, int]:
    fail(func, name, size_problem(size, minimum))
    return int(size[0]), int(size[1])


def check_reals(func: str, name: str, values, *, greater_than: Optional[float] = None) -> Tuple[float, ...]:
    """A real number or a non-empty sequence of them, each finite (and ``> greater_than``)."""
    if is_real(values):
        values = [values]
    elif isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{func}: {name} must be a real number or a sequence of them, got {type_name(values)}")
    if not values:
        raise ValueError(f"{func}: {name} must hold at least one value")
    return tuple(check_real(func, name, v, greater_than=greater_than) for v in values)


def check_per_channel(func: str, name: str, value, channels: int, max_channels: int) -> list:
    """A bound per channel: a float or a sequence (a CPU tensor too) of 1 or ``channels`` floats,
    none NaN (+-inf allowed: no bound on that side); more than one only for ``<= max_channels``
    channels. Returns a list of 1 or ``channels`` floats."""
    import torch  # noqa: PLC0415

    expected = f"a float or a sequence of 1 or C = {channels} floats"
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise TypeError(f"{func}: {name} must be {expected} (a CPU tensor at most: reading a "
                            f"{value.device.type} tensor would synchronise), got a tensor on {value.device}")
        value = value.detach().flatten().tolist()
    if is_real(value):
        values = [value]
    elif isinstance(value, (list, tuple)):
        values = list(value)
        if not all(is_real(v) for v in values):
            raise TypeError(f"{func}: {name} must be {expected}, got a sequence with non-numbers")
    else:
        raise TypeError(f"{func}: {name} must be {expected}, got {type_name(value)}")
    if len(values) not in (1, channels):
        raise ValueError(f"{func}: {name} must be {expected}, got {len(values)} values")
    values = [float(v) for v in values]
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{func}: {name} must hold non-NaN values, got {values}")
    if len(values) > 1 and channels > max_channels:
        raise ValueError(f"{func}: per-channel {name} supports at most {max_channels} channels, got C = {channels}")
    return values


def describe(t: "torch.Tensor") -> str:
    """``float32 [2, 3, 8, 8] on cpu``, for messages."""
    return f"{str(t.dtype).replace('torch.', '')} [{', '.join(map(str, t.shape))}] on {t.device}"


def check_tensor(func: str, name: str, value, *, dims=None, shape: str = "", dtypes=None, dtype: str = "",
                 floating: bool = False, optional: bool = False):
    """``value`` as a tensor: ``dims`` (an int or a tuple of ints) dimensions, described as
    ``shape`` (``"Tensor[B, C, H, W]"``); of one of ``dtypes`` (described as ``dtype``) or any
    floating dtype (``floating``); ``None`` passes where ``optional``. Returns it."""
    import torch  # noqa: PLC0415 - loaded by whoever holds a tensor

    if value is None and optional:
        return None
    if not isinstance(value, torch.Tensor):
        wanted = "a torch.Tensor or None" if optional else "a torch.Tensor"
        raise TypeError(f"{func}: {name} must be {wanted}, got {type_name(value)}")
    if dtypes is not None and value.dtype not in dtypes:
        raise TypeError(f"{func}: {name} must be a {dtype} {shape}, got {describe(value)}".replace("  ", " "))
    if floating and not value.is_floating_point():
        raise TypeError(f"{func}: {name} must be a floating-point {shape}, got {describe(value)}".replace("  ", " "))
    if dims is not None and value.dim() not in ((dims,) if isinstance(dims, int) else dims):
        if isinstance(dims, int):
            raise ValueError(f"{func}: {name} must be a {dims}-D {shape}, got {value.dim()}-D {describe(value)}")
        raise ValueError(f"{func}: {name} must have shape {shape}, got {describe(value)}")
    return value


# ------------------------------------------------------------------------------- the caller's image

IMAGE_DTYPES_TEXT = "uint8 or float16/bfloat16/float32/float64"


def image_dtypes():
    import torch  # noqa: PLC0415

    return (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_image(image, name: str = "image"):
    """A Tensor[3, H, W] or [B, 3, H, W] (or 1 channel), uint8 or float in [0, 1], finite, with
    data (not on the ``meta`` device). One host read of a float image's range, before any work."""
    import torch  # noqa: PLC0415

    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [3, H, W] or [B, 3, H, W], got {type_name(image)}")
    if image.dtype not in image_dtypes():
        raise TypeError(f"{name} must be {IMAGE_DTYPES_TEXT}, got {image.dtype}")
    if image.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (a tensor without data); create it on 'cpu' or 'cuda'")
    if image.dim() not in (3, 4):
        raise ValueError(f"{name} must have shape [3, H, W] or [B, 3, H, W], got {list(image.shape)}")
    channels = image.shape[-3]
    if channels not in (1, 3):
        raise ValueError(
            f"{name} must have 3 (RGB) or 1 (grey) channels in dim -3, got shape {list(image.shape)}"
            + (" (channels last? use image.permute(2, 0, 1))" if image.shape[-1] in (1, 3) else "")
        )
    if image.shape[-1] < 1 or image.shape[-2] < 1:
        raise ValueError(f"{name} must have a positive height and width, got shape {list(image.shape)}")
    if image.is_floating_point() and image.numel():
        lo, hi = torch.aminmax(image.detach().float())
        lo, hi = float(lo), float(hi)  # one host read per call, before any work
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} values must lie in [0, 1] for float images, got [{lo:.4g}, {hi:.4g}] "
                "(uint8 images take [0, 255]; clamp or rescale first)"
            )
    return image


def check_min_size(size, min_input: int, model_name: str) -> None:
    """ValueError unless an image of ``size = (height, width)`` is at least ``min_input`` px on its
    short side (what ``model_name`` needs)."""
    height, width = size
    if min(height, width) < min_input:
        raise ValueError(
            f"image is {height}×{width}; model {model_name!r} needs at least {min_input} px on the short side"
        )
