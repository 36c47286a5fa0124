"""Geometric transforms of whole frames, for the zoom feedback loop (dream, zoom, dream again)."""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ._checks import check_real, check_tensor

__all__ = ["zoom_transform", "affine_theta", "limit_side"]


def affine_theta(height: int, width: int, zoom: float, rotate: float, translate: Tuple[float, float]):
    """The 2×3 ``affine_grid`` matrix (normalised coordinates, ``align_corners=False``) that maps an
    output position to the input position it samples, as nested lists of floats.

    In centred pixel coordinates (x right, y down) the content moves as ``p = z·R·q + t``, where R
    turns counter-clockwise on screen by ``rotate`` degrees; the output samples ``q = Rᵀ(p - t)/z``.
    Rotating in pixel units (not normalised ones) keeps non-square frames free of shear.
    """
    c, s = math.cos(math.radians(rotate)), math.sin(math.radians(rotate))
    half_w, half_h = width / 2.0, height / 2.0
    dx, dy = translate
    # Rᵀ = [[c, -s], [s, c]] in (x, y-down) coordinates; S = diag(W/2, H/2); A = S⁻¹ Rᵀ S / z.
    a00, a01 = c / zoom, -s * half_h / half_w / zoom
    a10, a11 = s * half_w / half_h / zoom, c / zoom
    b0 = -(c * dx - s * dy) / zoom / half_w
    b1 = -(s * dx + c * dy) / zoom / half_h
    return [[a00, a01, b0], [a10, a11, b1]]


def zoom_transform(
    img: torch.Tensor, zoom: float = 1.0, rotate: float = 0.0, translate: Sequence[float] = (0.0, 0.0)
) -> torch.Tensor:
    """Zoom about the centre, rotate and translate a batch of frames (the same for every image).

    Args:
        img: float Tensor[B, C, H, W] (or [C, H, W]); not modified.
        zoom: scale factor > 0 about the frame's centre; > 1 zooms in (content grows).
        rotate: degrees, counter-clockwise as seen on screen.
        translate: (dx, dy) in pixels, applied after zoom and rotation; +dx moves the content
            right, +dy down.

    Returns:
        A new tensor of ``img``'s shape, dtype and device: bilinear ``grid_sample``, reflection
        padding, ``align_corners=False`` (float16/bfloat16 are sampled in float32). With identity
        parameters it is an exact copy of ``img``.
    """
    fn = "zoom_transform"
    check_tensor(fn, "img", img, dims=(3, 4), shape="Tensor[B, C, H, W] or [C, H, W]", floating=True)
    zoom = check_real(fn, "zoom", zoom, greater_than=0.0)
    rotate = check_real(fn, "rotate", rotate)
    if isinstance(translate, (str, bytes)) or not isinstance(translate, Sequence) or len(translate) != 2:
        raise TypeError("zoom_transform: translate must be a (dx, dy) pair of numbers")
    translate = (check_real(fn, "translate[0]", translate[0]), check_real(fn, "translate[1]", translate[1]))
    if (zoom == 1.0 and rotate % 360.0 == 0.0 and translate == (0.0, 0.0)) or img.numel() == 0:
        return img.clone()
    batched = img if img.dim() == 4 else img.unsqueeze(0)
    height, width = batched.shape[-2:]
    work = batched.dtype if batched.dtype in (torch.float32, torch.float64) else torch.float32
    theta = torch.tensor(affine_theta(height, width, zoom, rotate, translate), dtype=work, device=img.device)
    grid = F.affine_grid(theta.expand(batched.shape[0], 2, 3), list(batched.shape), align_corners=False)
    out = F.grid_sample(batched.to(work), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    out = out.to(img.dtype)
    return out if img.dim() == 4 else out.squeeze(0)


def limit_side(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """uint8 Tensor[3, H, W] downscaled (bilinear, antialiased, rounded) so that its long side is at
    most ``max_side`` pixels; the image itself where it is that small already (``--max-side``)."""
    height, width = image.shape[-2:]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return small[0].round().clamp(0, 255).to(torch.uint8)
