"""One function that turns a Dreamer's objective options into the :class:`Objective` of a call.

    >>> plan = ObjectivePlan(layers={"_blocks.9": 1.0})
    >>> objective = compose(plan)                     # static: built once, graph-capturable

The per-layer part comes from the first of :data:`LAYER_SOURCES` that the plan asks for (a guide
image, a channel mode, else the ``objective`` option on the chosen ``channels``); the class terms
(:data:`ADDED_SOURCES`) are added to it. Each source is the ``*_terms(plan, context)`` function of
its module: a new objective is one module with its per-layer objective and its ``*_terms``,
listed here (``docs/architecture.md``, "Objectives").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from .._reference import resize_ref
from .basic import Objective, ObjectiveArg, Terms, basic_terms, weighted_sum
from .channels import channel_mode_terms
from .classes import class_terms
from .guide import guide_terms

Features = Callable[[torch.Tensor], Dict[str, torch.Tensor]]


@dataclass
class ObjectivePlan:
    """The objective options of a Dreamer, resolved against its model.

    ``layers``: ``{resolved layer name: weight}``; ``classes``: ``{class index: weight}`` on the
    model's ``logits_layer``; ``guide``: Tensor[3, H, W] (uint8 or float); the rest as the options.
    """

    layers: Dict[str, float]
    objective: ObjectiveArg = "l2"
    channels: Optional[List[int]] = None
    classes: Optional[Dict[int, float]] = None
    logits_layer: Optional[str] = None
    guide: Optional[torch.Tensor] = None
    channel_mode: Optional[str] = None
    channel_count: int = 8

    @property
    def static(self) -> bool:
        """Whether the objective depends on the options alone (not on the call's input or device)."""
        return self.guide is None and self.channel_mode is None

    @property
    def tapped(self) -> List[str]:
        """The layers whose outputs the objective reads."""
        return list(self.layers) + ([self.logits_layer] if self.classes else [])


@dataclass
class Context:
    """What a non-static objective is built from: the model's ``features`` on ``device``, the
    call's input at its first octave size (``first_octave``, made on demand) and a ``memo`` dict
    kept per device (the guide's features, computed once)."""

    features: Features
    device: torch.device
    first_octave: Callable[[], torch.Tensor]
    memo: dict


LAYER_SOURCES = (guide_terms, channel_mode_terms, basic_terms)
"""Per-layer objectives, in priority order: the first that returns terms (not None) is used."""
ADDED_SOURCES = (class_terms,)
"""Terms added to the per-layer ones."""


def compose(plan: ObjectivePlan, context: Optional[Context] = None) -> Objective:
    """The objective ``plan`` asks for; ``context`` is needed (and used) only when ``plan.static`` is False."""
    if not plan.static and context is None:
        raise ValueError("compose: a guide or channel_mode objective needs the call's context")
    terms: Terms = []
    for source in LAYER_SOURCES:
        found = source(plan, context)
        if found is not None:
            terms = found
            break
    for source in ADDED_SOURCES:
        terms = terms + source(plan, context)
    return weighted_sum(terms, static=plan.static)


def first_octave(image: torch.Tensor, size) -> Callable[[], torch.Tensor]:
    """The call's input resized to the first octave size, made when asked."""
    return lambda: resize_ref(image, size)

