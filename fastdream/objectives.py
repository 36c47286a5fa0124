"""Objectives: what the dream maximises, given the activations of the chosen layers.

An objective maps ``{layer: Tensor[B, C, h, w]}`` to one scalar, the sum over the batch of each
image's own loss, so that the gradient of image ``b`` depends on image ``b`` alone. The loss is
computed in float32 whatever precision the model ran in.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import torch

Objective = Callable[[Dict[str, torch.Tensor]], torch.Tensor]
ObjectiveArg = Union[str, Callable[[torch.Tensor], torch.Tensor]]

OBJECTIVES = ("l2", "mean")


def l2(a: torch.Tensor) -> torch.Tensor:
    """The seed's objective: ``0.5 * sum(a**2)``, so ``dL/da = a``."""
    a = a.float()
    return 0.5 * (a * a).sum()


def mean_activation(a: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's mean activation."""
    return a.float().flatten(1).mean(dim=1).sum()


_BUILTIN = {"l2": l2, "mean": mean_activation}


def build_objective(
    objective: ObjectiveArg,
    layer_weights: Mapping[str, float],
    channels: Optional[Sequence[int]] = None,
) -> Objective:
    """The weighted sum over layers of ``objective`` applied to each layer's (selected) channels.

    Args:
        objective: ``"l2"``, ``"mean"``, or a callable ``Tensor[B, C, h, w] -> scalar`` (it must sum
            over the batch, not mix images).
        layer_weights: ``{layer: weight}``.
        channels: channel indices to keep at every layer, or ``None`` for all.
    """
    per_layer = _BUILTIN[objective] if isinstance(objective, str) else objective
    weights = dict(layer_weights)
    index = None if channels is None else list(channels)

    def total(activations: Dict[str, torch.Tensor]) -> torch.Tensor:
        loss = None
        for name, weight in weights.items():
            a = activations[name]
            if index is not None:
                if max(index) >= a.shape[1]:
                    raise ValueError(
                        f"channels: layer {name!r} has {a.shape[1]} channels, got index {max(index)}"
                    )
                a = a[:, index]
            term = per_layer(a)
            if not isinstance(term, torch.Tensor) or term.numel() != 1:
                raise TypeError("objective: a custom objective must return a scalar tensor")
            term = term.reshape(()) * weight if weight != 1.0 else term.reshape(())
            loss = term if loss is None else loss + term
        return loss

    return total
