"""What an objective is made from: the plan (the objective options resolved against the model), the
context of a call, and the registry of objective sources.

    >>> plan = ObjectivePlan({"_blocks.9": 1.0}, channels=[3])
    >>> plan.static, plan.channel_count       # an option not given reads its default
    (True, 8)

An objective *source* is one module (``docs/architecture.md``, "Objectives"): its per-layer
objective and a :class:`Source` registered with :func:`register`, which declares the option fields
it reads, whether its terms depend on those options alone (``static``: built once, capturable in a
CUDA graph) and how to make its terms. :func:`fastdream.objectives.compose.compose` asks the
registered sources; the engine fills the plan with every declared option, whatever the source.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .._reference import resize_ref
from ..options import Options

PerLayer = Callable[[torch.Tensor], torch.Tensor]
"""A per-layer objective: ``Tensor[B, C, h, w] -> scalar``, summed over the batch."""
Terms = List[Tuple[str, float, PerLayer]]
"""``(layer, weight, per_layer)`` terms, what ``weighted_sum`` adds up."""
Features = Callable[[torch.Tensor], Dict[str, torch.Tensor]]
"""The prepared model: image-space float32 Tensor[B, 3, h, w] → ``{layer: activation}``."""

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Options)}


class ObjectivePlan:
    """The objective options of a Dreamer, resolved against its model.

    ``layers``: ``{resolved layer name: weight}``; ``logits_layer``: the built-in model's classifier
    output (``None`` for a module of yours); ``options``: the option fields the sources read, by
    name, canonical (``classes`` as ``{class index: weight}``). An option read as an attribute
    (``plan.guide``) that was not given is its :class:`~fastdream.options.Options` default.
    """

    def __init__(self, layers: Dict[str, float], logits_layer: Optional[str] = None, **options: Any):
        unknown = sorted(set(options) - set(_DEFAULTS))
        if unknown:
            raise TypeError(f"ObjectivePlan: {unknown} are not options (fastdream.options.Options)")
        self.layers = dict(layers)
        self.logits_layer = logits_layer
        self.options = options

    def __getattr__(self, name: str):
        if name in _DEFAULTS:
            return self.__dict__["options"].get(name, _DEFAULTS[name])
        raise AttributeError(f"'ObjectivePlan' object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"ObjectivePlan({self.layers!r}, logits_layer={self.logits_layer!r}, **{self.options!r})"

    @property
    def sources(self) -> List["Source"]:
        """The sources this plan uses: the first per-layer source that is on, then every added one."""
        return self.sources_for(static_only=False)

    def sources_for(self, static_only: bool) -> List["Source"]:
        """:attr:`sources`, or with ``static_only`` as if the non-static sources were not there
        (the objective of the options alone: a probe of the model's memory per pixel)."""
        on = [s for s in registered() if s.on(self) and (s.static or not static_only)]
        per_layer = [s for s in on if not s.added][:1]
        return per_layer + [s for s in on if s.added]

    @property
    def static(self) -> bool:
        """Whether the objective depends on the options alone (not on the call's input or device)."""
        return all(s.static for s in self.sources)

    @property
    def tapped(self) -> List[str]:
        """The layers whose outputs the objective reads."""
        tapped = list(self.layers)
        for source in self.sources:
            tapped += [name for name in source.taps(self) if name not in tapped]
        return tapped


@dataclass
class Context:
    """What a non-static objective is built from: the model's ``features`` on ``device``, the
    call's input at its first octave size (``first_octave``, made on demand) and a ``memo`` dict
    kept per device (the guide's features, computed once)."""

    features: Features
    device: torch.device
    first_octave: Callable[[], torch.Tensor]
    memo: dict


def first_octave(image: torch.Tensor, size) -> Callable[[], torch.Tensor]:
    """The call's input resized to the first octave size, made when asked."""
    return lambda: resize_ref(image, size)


def _first_option_set(source: "Source", plan: ObjectivePlan) -> bool:
    return bool(source.options) and getattr(plan, source.options[0]) is not None


@dataclass(frozen=True)
class Source:
    """One objective source: how its terms are made and from which options.

    ``terms(plan, context)``: its ``(layer, weight, per_layer)`` terms (``context`` is ``None`` for
    a ``static`` source). ``options``: the :class:`~fastdream.options.Options` fields it reads.
    ``static``: its terms depend on the options alone. ``added``: its terms are added to the
    per-layer ones; else it is a per-layer source and the first of them that is ``on`` (highest
    ``priority`` first) makes them. ``on(plan)``: whether the plan asks for it (default: its first
    option is not ``None``). ``taps(plan)``: layers it reads beyond ``plan.layers``.
    """

    name: str
    terms: Callable[[ObjectivePlan, Optional[Context]], Terms]
    options: Tuple[str, ...] = ()
    static: bool = True
    added: bool = False
    priority: int = 0
    when: Optional[Callable[[ObjectivePlan], bool]] = None
    taps: Callable[[ObjectivePlan], Sequence[str]] = field(default=lambda plan: ())

    def __post_init__(self):
        unknown = sorted(set(self.options) - set(_DEFAULTS))
        if unknown:
            raise ValueError(f"Source {self.name!r}: {unknown} are not options (fastdream.options.Options); "
                             "declare an option's field there first")

    def on(self, plan: ObjectivePlan) -> bool:
        return self.when(plan) if self.when is not None else _first_option_set(self, plan)


_sources: Dict[str, Source] = {}
_lock = threading.Lock()


def register(source: Source) -> Source:
    """Make ``source`` known to every Dreamer built from now on (a name registered again is replaced)."""
    if not isinstance(source, Source):
        raise TypeError(f"register: source must be a fastdream.objectives.Source, got {type(source).__name__}")
    with _lock:
        _sources[source.name] = source
    return source


def unregister(name: str) -> None:
    """Forget the source ``name`` (Dreamers built with it keep their objective)."""
    with _lock:
        _sources.pop(name, None)


def registered() -> List[Source]:
    """The registered sources, highest priority first (per-layer and added alike)."""
    with _lock:
        return sorted(_sources.values(), key=lambda s: -s.priority)


def plan_options() -> List[str]:
    """Every option field some registered source reads (what the engine puts in a plan)."""
    names: List[str] = []
    for source in registered():
        names += [name for name in source.options if name not in names]
    return names
