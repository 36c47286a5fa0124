"""Tiled gradients: any image size within a memory budget.

Past a tile size, the gradient of an iteration is computed window by window: each core tile of a
grid is extended by a margin on every side (context for the receptive field), the window's own
gradient is computed, and only its core is kept. The grid is shifted by a fresh random offset each
iteration, so tile borders never sit at the same place twice and leave no seams. The step then
uses the whole image's mean |g| exactly as untiled (``docs/architecture.md``, "Semantics").

Memory: autograd keeps about ``bytes_per_pixel`` bytes of activations per input pixel for the
truncated model (measured once, on a small probe); a window of ``(tile + 2·margin)²`` pixels is
what must fit besides the full-size image buffers.
"""
from __future__ import annotations

import math
import os
from typing import Callable, List, Optional, Tuple

import torch

from .options import OptionError

Region = Tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)

ALIGN = 32
"""Tiles, margins and grid offsets are multiples of this many pixels (the largest total stride of
the built-in models), so every window starts on the full image's feature grid. Strided networks
are strongly shift-variant (a 1-pixel shift changes EfficientNet-Lite0's input gradient by ~100 %),
so an unaligned window would see a different feature phase than its neighbour."""

IMAGE_BUFFERS = 7
"""Full-size float32 buffers alive during a dream: img, base, detail, x, x_in, grad, the result."""


def tile_regions(height: int, width: int, tile: int, offset: Tuple[int, int] = (0, 0)) -> List[Region]:
    """Core regions of a ``tile``-sized grid shifted by ``offset``, covering ``height × width`` once."""
    regions = []
    oy, ox = offset[0] % tile, offset[1] % tile
    ys = sorted({0, *range(oy, height, tile)} - {height})
    xs = sorted({0, *range(ox, width, tile)} - {width})
    for i, y0 in enumerate(ys):
        y1 = ys[i + 1] if i + 1 < len(ys) else height
        for j, x0 in enumerate(xs):
            x1 = xs[j + 1] if j + 1 < len(xs) else width
            regions.append((y0, y1, x0, x1))
    return regions


def grid_offsets(iterations: int, tile: int, generator: Optional[torch.Generator]) -> List[Tuple[int, int]]:
    """A fresh random (oy, ox) grid offset per iteration, multiples of ``ALIGN`` in [0, tile)."""
    steps = max(tile // ALIGN, 1)
    table = (torch.randint(0, steps, (iterations, 2), generator=generator) * ALIGN).tolist()
    return [(int(oy), int(ox)) for oy, ox in table]


def aligned(pixels: int, up: bool = False) -> int:
    """``pixels`` rounded to a multiple of ``ALIGN`` (down, at least ``ALIGN``; or up)."""
    if up:
        return -(-pixels // ALIGN) * ALIGN
    return max(pixels // ALIGN, 1) * ALIGN


def tiled_gradient(
    gradient: Callable[[torch.Tensor], torch.Tensor],
    x_in: torch.Tensor,
    tile: int,
    margin: int,
    offset: Tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """dL/dx_in assembled from windows of at most ``tile + 2·margin`` pixels a side.

    Args:
        gradient: Tensor[B, C, h, w] → its gradient (same shape), one window at a time.
        x_in: Tensor[B, C, H, W], the (jittered) image.
        tile: core tile side in pixels; margin: context added on each side (clamped at the borders).
        offset: (oy, ox) shift of the grid.
    """
    height, width = x_in.shape[-2:]
    if height <= tile and width <= tile:
        return gradient(x_in)
    grad = torch.empty_like(x_in)
    for y0, y1, x0, x1 in tile_regions(height, width, tile, offset):
        wy0, wy1 = max(y0 - margin, 0), min(y1 + margin, height)
        wx0, wx1 = max(x0 - margin, 0), min(x1 + margin, width)
        window = x_in[..., wy0:wy1, wx0:wx1].contiguous()
        g = gradient(window)
        grad[..., y0:y1, x0:x1] = g[..., y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    return grad


def saved_bytes_per_pixel(
    features: Callable[[torch.Tensor], dict], objective, device: torch.device, probe: int = 128
) -> float:
    """Bytes autograd keeps per input pixel (batch 1) for forward+backward of the truncated model."""
    total = 0
    seen = set()

    def pack(t: torch.Tensor):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    x = torch.rand(1, 3, probe, probe, device=device, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = objective(features(x))
    del loss
    return max(total / (probe * probe), 64.0)


def available_memory(device: torch.device) -> int:
    """Bytes free for a dream on ``device`` now: CUDA's free memory, or the OS's MemAvailable."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def tile_for_budget(
    budget: int, bytes_per_pixel: float, batch: int, height: int, width: int, margin: int, minimum: int
) -> Optional[int]:
    """The largest core tile side (a multiple of ``ALIGN``) whose window fits ``budget`` beside the
    full-size image buffers.

    Returns ``None`` when the whole image fits untiled; raises ``ValueError`` when not even a
    ``minimum``-sized tile fits.
    """
    fixed = IMAGE_BUFFERS * batch * 3 * height * width * 4
    left = budget - fixed
    # 1.5: the backward's transient buffers on top of what autograd saved.
    per_pixel = 1.5 * bytes_per_pixel * batch
    if left >= per_pixel * height * width:
        return None
    side = int(math.sqrt(max(left, 0) / per_pixel)) - 2 * margin if left > 0 else 0
    if side < max(minimum, ALIGN):
        need = fixed + per_pixel * (minimum + 2 * margin) ** 2
        raise OptionError(
            "{0}: {budget:.0f} MiB is too small for a {batch}×{height}×{width} image (needs about {need:.0f} MiB "
            "even with {minimum}-pixel tiles)", "max_memory", budget=budget / 2**20, batch=batch, height=height,
            width=width, need=need / 2**20, minimum=minimum)
    return aligned(side)
