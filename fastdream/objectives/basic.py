"""The basic objectives and how per-layer objectives add up to one.

An objective maps ``{layer: Tensor[B, C, h, w]}`` to one scalar, the sum over the batch of each
image's own loss, so that the gradient of image ``b`` depends on image ``b`` alone. The loss is
computed in float32 whatever precision the model ran in. A per-layer objective is a callable
``Tensor[B, C, h, w] -> scalar``; :func:`weighted_sum` adds ``(layer, weight, per_layer)`` terms
into an :class:`Objective`, which says whether it may be captured in a CUDA graph (``static``).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from .._checks import is_real
from ..options import OptionError, OptionTypeError

from .plan import Context, ObjectivePlan, PerLayer, Source, Terms, register

ObjectiveArg = Union[str, Callable[[torch.Tensor], torch.Tensor]]



def l2(a: torch.Tensor) -> torch.Tensor:
    """The seed's objective: ``0.5 * sum(a**2)``, so ``dL/da = a``."""
    a = a.float()
    return 0.5 * (a * a).sum()


def mean_activation(a: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's mean activation."""
    return a.float().flatten(1).mean(dim=1).sum()


BASES = {"l2": l2, "mean": mean_activation}
"""The built-in per-layer objectives by name (the ``objective`` option's choices)."""


class PerDevice:
    """A constant tensor, copied once to each device it is asked for (never inside a CUDA graph)."""

    def __init__(self, tensor: torch.Tensor):
        self._copies = {tensor.device: tensor}

    def on(self, device: torch.device) -> torch.Tensor:
        copy = self._copies.get(device)
        if copy is None:
            copy = self._copies[device] = next(iter(self._copies.values())).to(device)
        return copy


def layer_objective(objective: ObjectiveArg, channels: Optional[Sequence[int]] = None) -> PerLayer:
    """The per-layer objective: ``objective`` (``"l2"``, ``"mean"`` or a callable
    ``Tensor[B, C, h, w] -> scalar``) applied to the ``channels`` of an activation (all if ``None``)."""
    base = BASES[objective] if isinstance(objective, str) else objective
    index = None if channels is None else list(channels)
    on_device: Dict[torch.device, torch.Tensor] = {}  # made on first use: no copy inside a CUDA graph

    def per_layer(a: torch.Tensor) -> torch.Tensor:
        if index is not None:
            if max(index) >= a.shape[1]:
                raise OptionError("{0}: the layer has {n} channels, got index {index}", "channels", n=a.shape[1],
                                  index=max(index))
            chosen = on_device.get(a.device)
            if chosen is None:
                chosen = on_device[a.device] = torch.tensor(index, dtype=torch.int64, device=a.device)
            a = a.index_select(1, chosen)
        term = base(a)
        if not isinstance(term, torch.Tensor) or term.numel() != 1:
            raise OptionTypeError("{0}: a custom objective must return a scalar tensor", "objective")
        return term

    return per_layer


def layer_terms(
    objective: ObjectiveArg, layer_weights: Mapping[str, float], channels: Optional[Sequence[int]] = None
) -> list:
    """``(layer, weight, per_layer)`` terms for :func:`weighted_sum`, one per layer."""
    per_layer = layer_objective(objective, channels)
    return [(name, weight, per_layer) for name, weight in layer_weights.items()]


class Objective:
    """``{layer: activations} -> scalar``: ``sum(weight * per_layer(acts[layer]))`` over its terms.

    ``static``: the objective depends on nothing but the options, so one built once may be captured
    in a CUDA graph and replayed by later calls (``fastdream.graphs``); ``False`` for one built per
    call from the call's input (a channel ranking) or per device (a guide's features).
    """

    def __init__(self, terms: Sequence[Tuple[str, float, PerLayer]], static: bool = True):
        self.terms = tuple(terms)
        self.static = static

    def __call__(self, activations: Dict[str, torch.Tensor]) -> torch.Tensor:
        loss: Optional[torch.Tensor] = None
        for layer, weight, per_layer in self.terms:
            term = per_layer(activations[layer]).reshape(())
            term = term if weight == 1 else term * float(weight)
            loss = term if loss is None else loss + term
        return loss


def weighted_sum(terms: Sequence[Tuple[str, float, PerLayer]], static: bool = True) -> Objective:
    """One objective ``{layer: activations} -> scalar`` from ``(layer, weight, per_layer)`` terms.

    Terms may share a layer (e.g. ``l2`` and a guide at the same layer, or a class objective on
    the classifier's output next to a dreamed layer). Returns ``sum(weight * per_layer(acts[layer]))``
    as an :class:`Objective` with the given ``static``.
    """
    terms = list(terms)
    if not terms:
        raise ValueError("weighted_sum: terms must hold at least one (layer, weight, objective)")
    for term in terms:
        if not (isinstance(term, tuple) and len(term) == 3 and isinstance(term[0], str) and callable(term[2])):
            raise TypeError("weighted_sum: each term must be a (layer name, weight, callable) tuple")
        if not is_real(term[1]):
            raise TypeError(f"weighted_sum: the weight of layer {term[0]!r} must be a real number")
    return Objective(terms, static)


def basic_terms(plan: ObjectivePlan, context: Optional[Context]) -> Terms:
    """The ``objective`` option on the ``channels`` of every layer (needs no context)."""
    return layer_terms(plan.objective, plan.layers, plan.channels)


# The fallback per-layer source: always on (``objective`` is never None), lowest priority.
register(Source("objective", basic_terms, options=("objective", "channels"), priority=0))
