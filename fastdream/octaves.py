"""The octave pyramid and the jitter shift tables (``docs/architecture.md``, "Semantics").

Everything here is decided on the host before an octave starts, so the iteration loop itself
never has to ask the device anything.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch


def octave_sizes(height: int, width: int, octaves: int, octave_scale: float, min_size: int) -> List[Tuple[int, int]]:
    """Octave sizes, smallest first, ending with ``(height, width)``.

    ``s_k = (round(H / scale**k), round(W / scale**k))`` for ``k = octaves-1 … 0``; octaves whose short
    side would fall below ``min_size`` pixels are dropped (fewer octaves instead of a crash). The full
    size is always kept.
    """
    sizes = []
    for k in range(octaves - 1, -1, -1):
        h = max(int(round(height / octave_scale**k)), 1)
        w = max(int(round(width / octave_scale**k)), 1)
        if k == 0 or min(h, w) >= min_size:
            sizes.append((h, w))
    return sizes


def shift_table(iterations: int, batch: int, jitter: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Random jitter shifts for one octave: int32 Tensor[iterations, batch, 2] of (dy, dx).

    Each shift is uniform in ``[-jitter, jitter]``, drawn on the CPU from ``generator`` so that a seed
    gives the same shifts on every device and backend.
    """
    if jitter == 0:
        return torch.zeros(iterations, batch, 2, dtype=torch.int32)
    return torch.randint(-jitter, jitter + 1, (iterations, batch, 2), generator=generator, dtype=torch.int32)
