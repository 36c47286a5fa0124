"""The check of an image argument (the options are checked by ``fastdream.options``)."""
from __future__ import annotations

import math

import torch

IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


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
