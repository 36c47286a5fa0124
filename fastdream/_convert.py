"""Image tensors between the caller's form (uint8 in [0, 255] or float in [0, 1]) and the float32
[0, 1] the dream computes in. One place for the scaling and the rounding, so every path (a call, a
guide, a stream's feedback, a saved file) quantises the same way.
"""
from __future__ import annotations

from typing import Optional

import torch


def to_float01(image: torch.Tensor, device: Optional[torch.device] = None) -> torch.Tensor:
    """A new float32 tensor in [0, 1], contiguous, on ``device`` (default: the image's): uint8 is
    divided by 255, float images are copied as they are. Detached from any autograd graph."""
    out = image.detach().to(device=device if device is not None else image.device, dtype=torch.float32,
                            memory_format=torch.contiguous_format, copy=True)
    if image.dtype == torch.uint8:
        out.div_(255.0)
    return out


def to_dtype_like(image01: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float [0, 1] tensor as ``dtype``: uint8 rounds half to even after ×255 and clamps to
    [0, 255]; a float dtype is a plain cast. Returns a new tensor for uint8, else ``.to(dtype)``."""
    if dtype == torch.uint8:
        return image01.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return image01.to(dtype)


def to_uint8(image: torch.Tensor, what: str, noun: str = "image") -> torch.Tensor:
    """A uint8 copy on the CPU of a uint8 image, or of a float one in [0, 1] (clamped to [0, 1], ×255,
    rounded half to even: 0.999 → 255, not 254; float64 computed in float64). For files: a NaN
    raises ``ValueError``, another dtype ``TypeError``, each naming ``what`` (the function) and
    calling the tensor ``noun``."""
    pixels = image.detach().to("cpu")
    if pixels.dtype == torch.uint8:
        return pixels.clone()
    if not pixels.is_floating_point():
        raise TypeError(f"{what}: {noun} must be uint8 (0..255) or a floating dtype (0..1), got {pixels.dtype}")
    work = pixels.to(torch.float64 if pixels.dtype == torch.float64 else torch.float32)
    if torch.isnan(work).any():
        raise ValueError(f"{what}: {noun} contains NaN values")
    return work.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
