"""Colour handling: a luminance-only dream that keeps the input's colours.

``keep_colors(original, dreamed)`` takes the luma Y of the dream and the chroma (Cb, Cr) of the
original, in ITU-R BT.601 full range (the JPEG convention):

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cb = 0.5 + (B - Y) / 1.772
    Cr = 0.5 + (R - Y) / 1.402

and converts back to RGB. The inverse transform's Y column is (1, 1, 1), so swapping in the
dream's luma is the same as adding ``Y(dreamed) - Y(original)`` to every channel of the original:
that is how it is computed (one pass, no 3×3 matrices).
"""
from __future__ import annotations

import torch

from ._checks import check_tensor

__all__ = ["keep_colors", "LUMA_WEIGHTS"]

#: BT.601 luma weights of R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _luma(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b).unsqueeze(-3)


def keep_colors(original: torch.Tensor, dreamed: torch.Tensor) -> torch.Tensor:
    """The dream's luminance with the original's colours (BT.601 full-range YCbCr).

    Args:
        original: float Tensor[B, 3, H, W] (or [3, H, W]) in [0, 1], the image that was dreamed.
        dreamed: float Tensor of the same shape and device, in [0, 1], the dream.

    Returns:
        A new tensor of ``dreamed``'s dtype and shape, clamped to [0, 1]: Y from ``dreamed``,
        Cb and Cr from ``original``. Neither input is modified.

    Raises:
        TypeError: an input is not a floating-point tensor.
        ValueError: the shapes differ, are not [B, 3, H, W] / [3, H, W], or the devices differ.
    """
    for name, t in (("original", original), ("dreamed", dreamed)):
        check_tensor("keep_colors", name, t, dims=(3, 4), shape="Tensor[B, 3, H, W] or [3, H, W]", floating=True)
        if t.shape[-3] != 3:
            raise ValueError(f"keep_colors: {name} must have shape Tensor[B, 3, H, W] or [3, H, W], got {list(t.shape)}")
    if original.shape != dreamed.shape:
        raise ValueError(
            f"keep_colors: original and dreamed must have the same shape, got {list(original.shape)} and "
            f"{list(dreamed.shape)}"
        )
    if original.device != dreamed.device:
        raise ValueError(f"keep_colors: original is on {original.device} but dreamed on {dreamed.device}")
    work = torch.promote_types(dreamed.dtype, torch.float32)
    o = original.to(work)
    out = o + (_luma(dreamed.to(work)) - _luma(o))
    return out.clamp_(0.0, 1.0).to(dreamed.dtype)
