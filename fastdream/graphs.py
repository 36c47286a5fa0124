"""One DeepDream iteration captured in a CUDA graph and replayed (``docs/architecture.md``, "CUDA graphs").

    >>> stepper = GraphStepper(features, objective, config, cache=prepared.graphs)
    >>> stepper.run(x, shifts)             # the same contract as step.Stepper.run

What is captured: exactly ``step.Stepper.iteration`` untiled, i.e. ``ops.jitter(x, slot)`` → the
model's forward (autocast, channels_last, stopped at the deepest tapped layer) → objective →
``torch.autograd.grad`` to the jittered input → gradient transforms → ``ops.normalized_step_(x,
grad, slot, ...)``. The same kernels run as in eager mode, so replays give the eager result.

Per key — (shape of the octave image, device, autocast dtype, objective identity, step config,
gradient-transform options, the model's parameter addresses) — a ``_Graph`` keeps the static
tensors the graph reads and writes: ``x`` (float32 Tensor[B, 3, h, w], the octave image, updated
in place by the fused step) and ``shifts`` (int32 Tensor[B, 2], the slot). A ``run`` copies the
caller's image into ``x``, then per iteration copies that iteration's row of the octave's shift
table (already on the device) into the slot — device to device, no host sync, no allocation —
and replays; at the end it copies ``x`` back. Everything the graph allocates lives in one private
memory pool per ``GraphCache``: the graphs of a cache run one after another on one stream and keep
no output in the pool, so they can share it.

The first ``run`` of a key runs its first ``WARMUP`` iterations eagerly on a side stream, on the
static tensors themselves (they are real iterations, not wasted work): the lazy initialisation
PyTorch's CUDA-graph docs ask to happen before a capture (autograd's device threads, cuDNN/cuBLAS
handles, ``cudnn.benchmark`` autotuning, one-time device copies of objective constants, the
regularizers' cached kernels) happens there. Then it captures (capture records, it does not
execute) and replays for the remaining iterations. Octaves with no more than ``WARMUP`` iterations
run eagerly and are never captured.

Eager instead of a graph: tiled octaves (a host-side grid offset per iteration and window-sized
forwards: not one fixed sequence of kernels), CPU tensors, and any key whose capture raised (a
model or objective that reads the host, ``objective(...).item()``, list indexing that copies an
index to the device, ...): that key is remembered and runs eagerly from then on, and
``FallbackNotice`` says why in one ``RuntimeWarning`` per Dreamer. Running out of memory during
the capture is not such a failure: ``torch.cuda.OutOfMemoryError`` is raised as it is (the
engine's out-of-memory retry dreams the call again in tiles) and the key is not marked.

The capture is thread-local (``capture_error_mode="thread_local"``): other threads may allocate
and synchronise while it runs.

Caveats (the static tensors are addressed by pointer): the parameters of the model must stay where
they are (the key holds their addresses, so moving or replacing them makes a new key), and
tensors an objective or transform caches outside the graph must stay alive while its graph is
cached (the cache holds a reference to the objective for that reason).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import warnings
from collections import OrderedDict
from typing import Callable, Hashable, Optional

import torch
import torch.nn as nn

from .step import Stepper, Tiling

__all__ = ["GraphCache", "GraphStepper", "FallbackNotice", "WARMUP"]

WARMUP = 3
"""Eager iterations on a side stream before the capture of a new key (PyTorch's docs: a few)."""


class FallbackNotice:
    """Warns once (per owner, e.g. per Dreamer) that CUDA graphs fell back to eager iterations."""

    def __init__(self):
        self.warned = False

    def warn(self, reason: str) -> None:
        if self.warned:
            return
        self.warned = True
        warnings.warn(
            f"fastdream: CUDA graph capture failed ({reason}); running these iterations eagerly (same "
            "result, slower). Pass cuda_graphs=False to skip the attempt.",
            RuntimeWarning,
            stacklevel=4,
        )


class GraphCache:
    """Captured iterations by key, least recently used first out; pure Python bookkeeping.

    ``captures`` counts the entries ever stored (a test reads it to see a graph reused);
    ``failed`` maps the keys whose capture raised to the reason. ``pool`` is the private memory
    pool of the graphs (set on the first capture).
    """

    def __init__(self, capacity: int = 16):
        if capacity < 1:
            raise ValueError(f"GraphCache: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: "OrderedDict[Hashable, object]" = OrderedDict()
        self.failed: dict = {}
        self.captures = 0
        self.pool = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self.captures += 1
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def mark_failed(self, key, reason: str) -> None:
        self._entries.pop(key, None)
        self.failed[key] = reason

    def clear(self) -> None:
        self._entries.clear()
        self.failed.clear()


@dataclasses.dataclass
class _Graph:
    """One captured iteration and the static tensors it reads and writes."""

    graph: object  # torch.cuda.CUDAGraph (a stand-in in CPU tests)
    x: torch.Tensor  # float32 Tensor[B, 3, h, w], contiguous: the octave image
    shifts: torch.Tensor  # int32 Tensor[B, 2]: the slot each replay's shifts are copied into
    keep: tuple  # what the graph reads by address and must outlive it (the objective)


def _out_of_memory(exc: BaseException) -> Optional[BaseException]:
    """The ``torch.cuda.OutOfMemoryError`` that ``exc`` is or was raised while handling, or None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def weights_signature(model: Optional[nn.Module]) -> tuple:
    """Addresses, dtypes and shapes of a model's parameters and buffers: a graph reads them by
    address, so a model whose tensors moved (``.to()``, replaced parameters) gets a new key."""
    if model is None:
        return ()
    return tuple(
        (t.data_ptr(), t.dtype, tuple(t.shape)) for t in itertools.chain(model.parameters(), model.buffers())
    )


class GraphStepper(Stepper):
    """``step.Stepper`` whose untiled CUDA iterations are replays of a captured CUDA graph.

    Args (besides ``Stepper``'s):
        cache: where graphs live across calls (the engine keeps one per device and precision).
        notice: says once that a capture failed (the engine keeps one per Dreamer).
        signature: hashable options that shape the captured work but are not in ``config`` or the
            objective's identity (the gradient transforms' settings).
        model: the model whose parameters the graph reads (their addresses go into the key).
        dtype: the autocast dtype of the forward (``None``: float32), part of the key.

    ``torch.backends.cudnn.benchmark`` is left as the caller set it; with ``True`` the autotuning
    runs in the warm-up iterations, before the capture, as it must.
    """

    def __init__(self, features, objective, config, grad_transforms=(), *,
                 cache: GraphCache, notice: Optional[FallbackNotice] = None, signature: Hashable = (),
                 model: Optional[nn.Module] = None, dtype: Optional[torch.dtype] = None):
        super().__init__(features, objective, config, grad_transforms)
        self.cache = cache
        self.notice = notice if notice is not None else FallbackNotice()
        self._base_key = (id(objective), dataclasses.astuple(config), signature, dtype, weights_signature(model))

    # -- the parts a CPU test replaces with fakes -------------------------------------------------

    def graphable(self, x: torch.Tensor, tiling: Optional[Tiling]) -> bool:
        """Tiled octaves always run eagerly: each iteration has its own host-side grid offset and
        window-sized forwards, not one fixed sequence of kernels to replay."""
        return tiling is None and x.device.type == "cuda"

    def _device(self, device: torch.device):
        return torch.cuda.device(device)

    def _side_stream(self, device: torch.device):
        """A context running on a fresh side stream that waits for, and is waited for by, the current one."""
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)

        @contextlib.contextmanager
        def context():
            try:
                with torch.cuda.stream(side):
                    yield
            finally:
                current.wait_stream(side)

        return context()

    def _capture(self, fn: Callable[[], None]):
        """A graph of ``fn``'s work, captured into the cache's pool (autocast's weight cache off:
        a cast cached during capture would live in the pool and be freed behind the graph).

        ``capture_error_mode="thread_local"``: in the default "global" mode a blocking CUDA call of
        any other thread during the capture (a thread of the caller's, ``dream_many``'s read-ahead
        building CUDA tensors: a cudaMalloc, a sync) fails it; only this thread's calls must be
        capture-safe, and the iteration's are."""
        if self.cache.pool is None:
            self.cache.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        cache_enabled = torch.is_autocast_cache_enabled()
        torch.set_autocast_cache_enabled(False)
        try:
            with torch.cuda.graph(graph, pool=self.cache.pool, capture_error_mode="thread_local"):
                fn()
        finally:
            torch.set_autocast_cache_enabled(cache_enabled)
        return graph

    # -- the iterations ---------------------------------------------------------------------------

    def key(self, x: torch.Tensor) -> tuple:
        return (tuple(x.shape), str(x.device)) + self._base_key

    def run(
        self,
        x: torch.Tensor,
        shifts: torch.Tensor,
        on_step: Optional[Callable[[], None]] = None,
        tiling: Optional[Tiling] = None,
    ) -> torch.Tensor:
        """``len(shifts)`` iterations on ``x`` in place, replayed from a graph where one can be had.

        ``x``: float32 Tensor[B, 3, h, w], contiguous; ``shifts``: int32 Tensor[iterations, B, 2] on
        the device of ``x``. Results equal ``Stepper.run``'s.
        """
        iterations = shifts.shape[0]
        if iterations == 0 or not self.graphable(x, tiling):
            return super().run(x, shifts, on_step, tiling)
        key = self.key(x)
        if key in self.cache.failed:
            return super().run(x, shifts, on_step, tiling)
        with self._device(x.device):
            entry = self.cache.get(key)
            start = 0
            if entry is None:
                if iterations <= WARMUP:  # nothing left to replay: not worth a capture
                    return super().run(x, shifts, on_step, tiling)
                entry = _Graph(None, torch.empty_like(x, memory_format=torch.contiguous_format),
                               torch.empty(tuple(shifts.shape[1:]), dtype=shifts.dtype, device=shifts.device),
                               (self.objective, self.grad_transforms))
                entry.x.copy_(x)
                with self._side_stream(x.device):  # real iterations 0 … WARMUP-1, the warm-up
                    for i in range(WARMUP):
                        entry.shifts.copy_(shifts[i])
                        self.iteration(entry.x, entry.shifts)
                        if on_step is not None:
                            on_step()
                start = WARMUP
                try:
                    entry.graph = self._capture(lambda: self.iteration(entry.x, entry.shifts))
                except Exception as exc:  # noqa: BLE001 - any failure but out of memory means eager
                    oom = _out_of_memory(exc)
                    if oom is not None:
                        # not the key's fault: the engine retries the call in tiles (tiled octaves run
                        # eagerly), and the shape may capture later with more memory free; an error
                        # that ending the capture raised over it is reported as the OutOfMemoryError
                        if oom is exc:
                            raise
                        raise torch.cuda.OutOfMemoryError(str(oom)) from exc
                    reason = f"{type(exc).__name__}: {exc}".strip()
                    self.cache.mark_failed(key, reason)
                    self.notice.warn(reason)
                    x.copy_(entry.x)  # the capture ran nothing: x is as after the warm-up
                    return super().run(x, shifts[start:], on_step, None)
                self.cache.put(key, entry)
            else:
                entry.x.copy_(x)
            slot = entry.shifts
            for i in range(start, iterations):
                slot.copy_(shifts[i])
                entry.graph.replay()
                if on_step is not None:
                    on_step()
            x.copy_(entry.x)
        return x
