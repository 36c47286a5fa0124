"""Objectives: what a dream maximises, given the activations of the chosen layers.

``plan`` (the plan, the call's context, the registry of sources), ``basic`` (l2, mean, channel
subsets, :func:`weighted_sum`), ``guide`` (a guide image's features), ``channels`` (channels picked
per image by a mode), ``classes`` (ImageNet logits), and ``compose``, the one function that builds a
Dreamer's objective from the registered sources. Every module of this package is imported here, so
a new objective is one module that registers its :class:`Source`.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .basic import BASES, Objective, l2, layer_objective, layer_terms, mean_activation, weighted_sum
from .channels import CHANNEL_MODES, channel_objective, select_channels
from .classes import class_indices, class_objective, imagenet_categories
from .compose import compose
from .guide import guided_objective
from .plan import Context, ObjectivePlan, PerLayer, Source, first_octave, plan_options, register, registered
from .plan import unregister

for _module in _pkgutil.iter_modules(__path__):  # the sources not named above register themselves too
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BASES", "CHANNEL_MODES", "Context", "Objective", "ObjectivePlan", "PerLayer", "Source", "channel_objective",
    "class_indices", "class_objective", "compose", "first_octave", "guided_objective", "imagenet_categories", "l2",
    "layer_objective", "layer_terms", "mean_activation", "plan_options", "register", "registered",
    "select_channels", "unregister", "weighted_sum",
]
