"""One octave of DeepDream iterations: jitter → forward → objective → backward → fused step.

The image ``x`` stays float32 NCHW-contiguous on the compute device and is updated in place. The
model may run under autocast (bf16/fp16) and in channels_last; the gradient comes back to the
jittered input, and the fused step un-rolls it, normalises it by its per-image mean magnitude,
steps and clips (``docs/architecture.md``, "Semantics" and "Data flow"). The shift table of the octave
is on the device before the loop starts, so an iteration needs nothing from the host. The kernels are
``fastdream.ops``', which pick the compiled or the reference backend per device themselves.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from . import ops
from .tiles import tiled_gradient

Features = Callable[[torch.Tensor], Dict[str, torch.Tensor]]


@dataclass
class StepConfig:
    """What one iteration needs besides the image: units are image units ([0, 1] scale)."""

    step_size: float
    lo: float = 0.0
    hi: float = 1.0


class Stepper:
    """Runs the iterations of one octave.

    Args:
        features: image-space Tensor[B, 3, h, w] → {layer: activation}; normalises for the model,
            sets the layout and the precision itself.
        objective: activations → scalar loss (summed over the batch).
        config: step size and clip bounds.
        grad_transforms: applied in order to each whole gradient before the step (smoothing,
            Laplacian normalisation); pure tensor functions, no host reads.
    """

    def __init__(self, features: Features, objective, config: StepConfig, grad_transforms=()):
        self.features = features
        self.grad_transforms = list(grad_transforms)
        self.objective = objective
        self.config = config

    def gradient(self, x_in: torch.Tensor) -> torch.Tensor:
        """dL/dx_in for a (jittered) image batch, weights frozen."""
        x_in.requires_grad_(True)
        loss = self.objective(self.features(x_in))
        (grad,) = torch.autograd.grad(loss, x_in)
        return grad

    def run(
        self,
        x: torch.Tensor,
        shifts: torch.Tensor,
        on_step: Optional[Callable[[], None]] = None,
        tiling: Optional[Tiling] = None,
    ) -> torch.Tensor:
        """``len(shifts)`` iterations on ``x`` (float32 Tensor[B, 3, h, w], in place).

        ``shifts``: int32 Tensor[iterations, B, 2] on the device of ``x``. ``tiling``: compute each
        gradient window by window (``fastdream.tiles``), with one host-side grid offset per iteration.
        """
        for i in range(shifts.shape[0]):
            self.iteration(x, shifts[i], tiling, i)
            if on_step is not None:
                on_step()
        return x

    def iteration(self, x: torch.Tensor, s: torch.Tensor, tiling: Optional[Tiling] = None, i: int = 0) -> None:
        """One iteration on ``x`` in place with the shifts ``s`` (int32 Tensor[B, 2], on the device);
        ``i`` picks the grid offset when tiled. Untiled, it is what ``fastdream.graphs`` captures."""
        c = self.config
        x_in = ops.jitter(x, s)
        if tiling is None:
            grad = self.gradient(x_in)
        else:
            grad = tiled_gradient(self.gradient, x_in, tiling.tile, tiling.margin, tiling.offsets[i])
        for transform in self.grad_transforms:
            grad = transform(grad)
        ops.normalized_step_(x, grad, s, c.step_size, c.lo, c.hi)


@dataclass
class Tiling:
    """Window-by-window gradients: core ``tile`` side and ``margin`` in pixels, and per iteration
    the (oy, ox) offset of the grid (host ints)."""

    tile: int
    margin: int
    offsets: Sequence[Tuple[int, int]]


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast for the model's forward at ``dtype``, or nothing for float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
