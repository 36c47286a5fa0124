"""Models: the registry of built-in models, layer names and truncation, preparation for dreaming."""
from __future__ import annotations

from typing import List, Union

import torch
import torch.nn as nn

from .layers import LayerTap, module_layer_names, resolve_layers
from .registry import DEFAULT_MODEL, MODELS, ModelSpec, default_layer, get_spec, list_models


def list_layers(model: Union[str, nn.Module]) -> List[str]:
    """Layer names ``model`` can dream at: a built-in model's aliases (e.g. VGG's ``relu4_3``) first,
    then every qualified submodule name (``named_modules()``).

    Built-in models are built on the meta device for this: no weights are loaded or downloaded.
    """
    if isinstance(model, nn.Module):
        return module_layer_names(model)
    spec = get_spec(model)
    with torch.device("meta"):
        module = spec.build(None)
    return list(spec.aliases) + module_layer_names(module)


__all__ = [
    "DEFAULT_MODEL", "MODELS", "ModelSpec", "LayerTap", "default_layer", "get_spec",
    "list_layers", "list_models", "module_layer_names", "resolve_layers",
]
