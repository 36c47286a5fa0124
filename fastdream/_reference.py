"""Reference twins in plain PyTorch: the ground truth every backend is tested against.

Each function here has the semantics of one fast op (``fastdream.ops``) or of the whole seed
algorithm (``docs/architecture.md``, "Semantics"), written the obvious eager way, the way peers
write it. Nothing here is tuned for speed; it is tuned for being obviously right.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Union

import torch
import torch.nn.functional as F

Bound = Union[float, Sequence[float]]


def jitter_ref(src: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Twin of ``ops.jitter``: roll each image of ``src`` by its own (dy, dx).

    Args:
        src: Tensor[B, C, H, W].
        shifts: int Tensor[B, 2], (dy, dx) per image, any sign and size.

    Returns:
        Tensor[B, C, H, W] with ``out[b] = torch.roll(src[b], (dy_b, dx_b), (-2, -1))``.
    """
    host = shifts.detach().to("cpu", torch.int64).tolist()
    return torch.stack([torch.roll(src[b], (dy, dx), (-2, -1)) for b, (dy, dx) in enumerate(host)])


def _per_channel(bound: Bound, channels: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(bound, dtype=like.dtype, device=like.device).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    return t.view(1, channels, 1, 1)


_FLOAT32_MAX = torch.finfo(torch.float32).max


def step_scale_ref(grad: torch.Tensor, step_size: float) -> torch.Tensor:
    """The per-image factor of the step: ``step_size / mean|grad[b]|``, scale-free like the seed's.

    The mean and the division in float64, then rounded to float32 (``csrc/step_scale.h``). No
    epsilon: the one guard is an all-zero (or NaN) gradient, whose factor is 0, so the image does
    not move. Saturated at +-float32 max (only a gradient of subnormal floats gets there).

    Args:
        grad: Tensor[B, ...] of any float dtype.
        step_size: the mean absolute change per pixel.

    Returns:
        float32 Tensor[B].
    """
    mean = grad.float().abs().flatten(1).sum(dim=1, dtype=torch.float64) / grad[0].numel()
    scale = torch.where(mean > 0, step_size / mean, torch.zeros_like(mean))
    return scale.clamp(-_FLOAT32_MAX, _FLOAT32_MAX).float()


def normalized_step_ref(
    img: torch.Tensor,
    grad: torch.Tensor,
    shifts: torch.Tensor,
    step_size: float,
    lo: Bound,
    hi: Bound,
) -> torch.Tensor:
    """Twin of ``ops.normalized_step_``: the normalised gradient-ascent step, in place.

    ``img[b] = clip(img[b] + step_size / mean|grad[b]| * roll(grad[b], (-dy_b, -dx_b)), lo, hi)``,
    with the factor of :func:`step_scale_ref` (0 for an all-zero gradient).

    Args:
        img: float32 Tensor[B, C, H, W], updated in place.
        grad: Tensor[B, C, H, W] (float32, bfloat16 or float16), the gradient at the jittered image.
        shifts: int Tensor[B, 2], the (dy, dx) the gradient's input was rolled by.
        step_size: the mean absolute change per pixel (image units).
        lo, hi: clip bounds, a float or one per channel.

    Returns:
        ``img``.
    """
    scale = step_scale_ref(grad, step_size).view(-1, 1, 1, 1)
    g = jitter_ref(grad.float(), -shifts.to(torch.int64))
    img.add_(g * scale)
    channels = img.shape[1]
    img.copy_(torch.minimum(torch.maximum(img, _per_channel(lo, channels, img)), _per_channel(hi, channels, img)))
    return img


def resize_ref(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize, ``align_corners=False``, no antialias (the octave resize of the semantics)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x.clone()
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=False)


def resize_add_ref(img: torch.Tensor, detail: torch.Tensor, size: Sequence[int]):
    """Twin of ``ops.resize_add``: ``base = resize(img, size)``, ``x = base + resize(detail, size)``.

    Returns:
        (base, x), both Tensor[B, C, size[0], size[1]].
    """
    base = resize_ref(img, size)
    return base, base + resize_ref(detail, size)


def warp_ref(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Twin of ``flow.warp``: bilinear gather at ``p + flow(p)`` in pixel coordinates, in float64.

    Args:
        image: floating Tensor[B, C, H, W].
        flow: floating Tensor[B, 2, H, W], (dx, dy) in pixels.

    Returns:
        Tensor[B, C, H, W] of ``image``'s dtype: ``out[b, :, y, x] = image[b, :, y + dy, x + dx]``
        interpolated between the four nearest pixels, positions clamped into the frame first.
    """
    batch, channels, height, width = image.shape
    src = image.double().reshape(batch, channels, height * width)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=image.device),
                            torch.arange(width, dtype=torch.float64, device=image.device), indexing="ij")
    px = (xs + flow[:, 0].double()).clamp(0, width - 1)
    py = (ys + flow[:, 1].double()).clamp(0, height - 1)
    x0, y0 = px.floor(), py.floor()
    wx, wy = (px - x0)[:, None], (py - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)

    def at(yy, xx):
        index = (yy * width + xx).reshape(batch, 1, height * width).expand(-1, channels, -1)
        return src.gather(2, index).reshape(batch, channels, height, width)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy).to(image.dtype)


def dream_reference(
    image: torch.Tensor,
    features: Callable[[torch.Tensor], Dict[str, torch.Tensor]],
    objective: Callable[[Dict[str, torch.Tensor]], torch.Tensor],
    sizes: Sequence[Sequence[int]],
    shift_tables: Sequence[torch.Tensor],
    step_size: float,
    lo: Bound = 0.0,
    hi: Bound = 1.0,
) -> torch.Tensor:
    """The seed algorithm (``docs/architecture.md``, "Semantics") in eager float32 PyTorch.

    Args:
        image: float32 Tensor[B, 3, H, W] in [0, 1]; not modified.
        features: maps an image-space batch to the activations of the chosen layers (it normalises
            for the model itself).
        objective: maps those activations to a scalar loss (summed over the batch).
        sizes: the octave sizes, smallest first; the last is normally (H, W).
        shift_tables: per octave, an int Tensor[iterations, B, 2] of (dy, dx) jitter shifts.
        step_size, lo, hi: as in :func:`normalized_step_ref`.

    Returns:
        float32 Tensor[B, 3, H', W'] at the last octave size.
    """
    img = image.detach().float()
    detail = torch.zeros(img.shape[0], img.shape[1], *sizes[0], dtype=img.dtype, device=img.device)
    x = img
    for size, table in zip(sizes, shift_tables):
        base = resize_ref(img, size)
        x = base + resize_ref(detail, size)
        for shifts in table:
            x_in = jitter_ref(x, shifts).requires_grad_(True)
            loss = objective(features(x_in))
            (g,) = torch.autograd.grad(loss, x_in)
            normalized_step_ref(x, g, shifts, step_size, lo, hi)
        detail = x - base
    return x
