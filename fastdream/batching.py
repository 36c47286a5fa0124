"""How many images become batches: windows in input order, same-key groups in each window, chunks of
at most ``batch_size``, and the seed of batch ``k``. ``Dreamer.dream_many`` and the Ray path
(``fastdream.cluster``) both cut their inputs here, so they dream the same batches with the same
seeds (docs/architecture.md, "Clusters and servers"). Pure Python: no torch.
"""
from __future__ import annotations

from typing import Callable, Dict, Hashable, List, Optional, Sequence, Union

WINDOW = 4
"""A window holds ``WINDOW × batch_size`` images: read ahead, then grouped by key (shape)."""

GPU_BATCH = 8
"""``dream_many``'s batch size on a GPU."""

CPU_BATCH_PIXELS = 8 * 256 * 256
"""``dream_many``'s batches on the CPU hold up to this many pixels: 8 images of 256², 3 of 384², 2 of
512², 1 from 725² (measured: docs/architecture.md, "Batches on the CPU"; ``benchmarks/cpu_batch.py``)."""


def cpu_batch_size(height: int, width: int) -> int:
    """``dream_many``'s batch size on the CPU for images of ``height × width`` px: as many as
    ``CPU_BATCH_PIXELS`` holds, at least 1 and at most ``GPU_BATCH``."""
    return max(1, min(GPU_BATCH, CPU_BATCH_PIXELS // max(1, height * width)))


def seed_for(seed: Optional[int], k: int) -> Optional[int]:
    """The seed of item ``k`` of a run seeded with ``seed`` (batch ``k`` of ``dream_many``, frame
    ``k`` of ``stream``); ``None`` stays ``None`` (fresh randomness)."""
    return None if seed is None else (seed + k) % 2**63


def window_batches(
    keys: Sequence[Optional[Hashable]], batch_size: Union[int, Callable[[Hashable], int]]
) -> List[List[int]]:
    """The batches of one window: lists of indices into ``keys`` with equal keys, groups in order
    of their first appearance, chunks of at most ``batch_size`` (an int, or ``key -> int``) in input
    order. ``None`` keys (images that failed) are left out but keep their place."""
    groups: Dict[Hashable, List[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    batches = []
    for key, indices in groups.items():
        step = batch_size(key) if callable(batch_size) else batch_size
        batches.extend(indices[start : start + step] for start in range(0, len(indices), step))
    return batches
