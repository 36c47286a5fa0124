"""Argument checks shared by the API: each raises ``TypeError``/``ValueError`` naming the argument."""
from __future__ import annotations

import math
import numbers
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(name: str, value, *, greater_than: Optional[float] = None, at_least: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if greater_than is not None and not value > greater_than:
        raise ValueError(f"{name} must be > {greater_than}, got {value}")
    if at_least is not None and not value >= at_least:
        raise ValueError(f"{name} must be >= {at_least}, got {value}")
    return value


def check_layers(layers) -> Optional[Dict[str, float]]:
    """``None`` | name | names | ``{name: weight}`` → ``{name: weight}`` (``None`` stays ``None``)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, Mapping):
        items = list(layers.items())
    elif isinstance(layers, Sequence):
        items = [(name, 1.0) for name in layers]
    else:
        raise TypeError(
            f"layers must be a layer name, a list of names or a {{name: weight}} dict, got {type(layers).__name__}"
        )
    if not items:
        raise ValueError("layers must name at least one layer")
    out: Dict[str, float] = {}
    for name, weight in items:
        if not isinstance(name, str):
            raise TypeError(f"layers: layer names must be str, got {type(name).__name__}")
        out[name] = check_real(f"layers[{name!r}] (weight)", weight)
    if all(w == 0 for w in out.values()):
        raise ValueError("layers: at least one layer weight must be non-zero")
    return out


def check_classes(classes) -> Optional[Dict[Union[str, int], float]]:
    """``None`` | a class (name or index) | a list | ``{class: weight}`` → ``{class: weight}``."""
    if classes is None:
        return None
    if isinstance(classes, (str, numbers.Integral)) and not isinstance(classes, bool):
        classes = [classes]
    if isinstance(classes, Mapping):
        items = list(classes.items())
    elif isinstance(classes, Sequence):
        items = [(c, 1.0) for c in classes]
    else:
        raise TypeError(f"classes must be a class name or index, a list of them or a {{class: weight}} dict, "
                        f"got {type(classes).__name__}")
    if not items:
        raise ValueError("classes must name at least one class")
    out: Dict[Union[str, int], float] = {}
    for c, weight in items:
        if isinstance(c, bool) or not isinstance(c, (str, numbers.Integral)):
            raise TypeError(f"classes: each class must be a name (str) or an index (int), got {type(c).__name__}")
        out[c] = check_real(f"classes[{c!r}] (weight)", weight)
    return out


def check_sigmas(smoothing) -> Tuple[float, ...]:
    """A sigma σ (→ the cascade σ·(0.5, 1, 2)) or a sequence of sigmas, each > 0, in pixels."""
    if isinstance(smoothing, numbers.Real) and not isinstance(smoothing, bool):
        sigma = check_real("smoothing", smoothing, greater_than=0.0)
        return (0.5 * sigma, sigma, 2.0 * sigma)
    if isinstance(smoothing, (str, bytes)) or not isinstance(smoothing, Sequence) or not smoothing:
        raise TypeError(f"smoothing must be None, a sigma or a non-empty list of sigmas, got {smoothing!r}")
    return tuple(check_real("smoothing sigma", s, greater_than=0.0) for s in smoothing)


def check_channels(channels) -> Optional[List[int]]:
    if channels is None:
        return None
    if isinstance(channels, numbers.Integral) and not isinstance(channels, bool):
        channels = [channels]
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
        raise TypeError(f"channels must be None, an int or a list of ints, got {type(channels).__name__}")
    if not channels:
        raise ValueError("channels must list at least one channel index")
    return [check_int("channels[i]", c, 0) for c in channels]


def check_normalize(normalize) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    if normalize is None:
        return None
    if not (isinstance(normalize, Sequence) and len(normalize) == 2):
        raise TypeError("normalize must be None or a (mean, std) pair, each a float or 3 floats")
    pair = []
    for label, part in zip(("mean", "std"), normalize):
        values = [part] if isinstance(part, numbers.Real) else list(part) if isinstance(part, Sequence) else None
        if values is None or len(values) not in (1, 3):
            raise ValueError(f"normalize: {label} must be a float or 3 floats, got {part!r}")
        values = [check_real(f"normalize {label}", v) for v in values] * (3 if len(values) == 1 else 1)
        pair.append(tuple(values))
    if any(s <= 0 for s in pair[1]):
        raise ValueError(f"normalize: std must be > 0, got {pair[1]}")
    return pair[0], pair[1]


def check_device(device) -> Optional[torch.device]:
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a str such as 'cuda:0' or a torch.device, got {type(device).__name__}")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device} was requested but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a cpu or cuda device, got {device}")
    return device


def check_precision(precision) -> str:
    if not isinstance(precision, str):
        raise TypeError(f"precision must be one of {PRECISIONS}, got {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def check_seed(seed) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return int(seed)


def check_image(image) -> torch.Tensor:
    """A Tensor[3, H, W] or [B, 3, H, W] (or 1 channel), uint8 or float in [0, 1], finite."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor [3, H, W] or [B, 3, H, W], got {type(image).__name__}")
    if image.dtype not in IMAGE_DTYPES:
        raise TypeError(f"image must be uint8 or float16/bfloat16/float32/float64, got {image.dtype}")
    if image.dim() not in (3, 4):
        raise ValueError(f"image must have shape [3, H, W] or [B, 3, H, W], got {list(image.shape)}")
    channels = image.shape[-3]
    if channels not in (1, 3):
        raise ValueError(
            f"image must have 3 (RGB) or 1 (grey) channels in dim -3, got shape {list(image.shape)}"
            + (" (channels last? use image.permute(2, 0, 1))" if image.shape[-1] in (1, 3) else "")
        )
    if image.shape[-1] < 1 or image.shape[-2] < 1:
        raise ValueError(f"image must have a positive height and width, got shape {list(image.shape)}")
    if image.is_floating_point() and image.numel():
        lo, hi = torch.aminmax(image.detach().float())
        lo, hi = float(lo), float(hi)  # one host read per call, before any work
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("image contains NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"image values must lie in [0, 1] for float images, got [{lo:.4g}, {hi:.4g}] "
                "(uint8 images take [0, 255]; clamp or rescale first)"
            )
    return image
