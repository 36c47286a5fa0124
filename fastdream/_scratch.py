"""Scratch memory of the CUDA step (``ops.normalized_step_``): its per-image partial sums of |grad|.

One float64 buffer per (device, stream), grown to the largest size asked (a power of two) and kept,
so an eager iteration allocates nothing, and a step's buffer is alive until its kernels are
enqueued (a buffer freed before the launch could go to another thread's tensor, which the kernels
would then overwrite). The caller holds ``ScratchBuffers.lock`` from the look-up until both kernels
are enqueued: two threads stepping on one stream cannot interleave their reduce and step
launches over the same partials. Streams are ordered, so a buffer is reused only after its last
step on that stream; another stream gets its own.

A step captured into a CUDA graph gets a buffer of its own instead, allocated in the capture (the
graph's private pool, like every temporary of the captured iteration): a cached buffer's address
baked into a graph could be written by a replay on another stream while an eager step uses it.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Hashable, Optional

import torch


class ScratchBuffers:
    """float64 buffers by key, grown as needed; ``allocate(numel)`` makes a new one (a test passes a
    CPU allocator)."""

    def __init__(self, allocate: Callable[[int, torch.device], torch.Tensor]):
        self._allocate = allocate
        self._buffers: Dict[Hashable, torch.Tensor] = {}
        self.lock = threading.Lock()  # held from the look-up until the step's kernels are enqueued

    def __len__(self) -> int:
        return len(self._buffers)

    def get(self, key: Optional[Hashable], numel: int, device: torch.device) -> torch.Tensor:
        """A buffer of at least ``numel`` values: the kept one of ``key`` (``None``: a new one, not
        kept, for a step being captured). Call under :attr:`lock`."""
        if key is None:
            return self._allocate(numel, device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self._allocate(1 << max(numel - 1, 0).bit_length(), device)
            self._buffers[key] = buffer  # the old one: its last kernels are enqueued on this stream
        return buffer


def _cuda_float64(numel: int, device: torch.device) -> torch.Tensor:
    return torch.empty(numel, dtype=torch.float64, device=device)


STEP = ScratchBuffers(_cuda_float64)


def step_key(device: torch.device, stream: int) -> Optional[tuple]:
    """The key of the buffer for a step on ``stream`` (a cudaStream_t as int) of ``device``; None
    while that stream is being captured into a CUDA graph."""
    with torch.cuda.device(device):
        if torch.cuda.is_current_stream_capturing():
            return None
    return (device.index, stream)
