"""Objectives: what a dream maximises, given the activations of the chosen layers.

``basic`` (l2, mean, channel subsets, :func:`weighted_sum`), ``guide`` (a guide image's features),
``channels`` (channels picked per image by a mode), ``classes`` (ImageNet logits), and ``compose``,
the one function that builds a Dreamer's objective from its options.
"""
from .basic import BASES, Objective, PerLayer, l2, layer_objective, layer_terms, mean_activation, weighted_sum
from .channels import CHANNEL_MODES, channel_objective, select_channels
from .classes import class_indices, class_objective, imagenet_categories
from .compose import Context, ObjectivePlan, compose
from .guide import guided_objective

__all__ = [
    "BASES", "CHANNEL_MODES", "Context", "Objective", "ObjectivePlan", "PerLayer", "channel_objective",
    "class_indices", "class_objective", "compose", "guided_objective", "imagenet_categories", "l2",
    "layer_objective", "layer_terms", "mean_activation", "select_channels", "weighted_sum",
]
