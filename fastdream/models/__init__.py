"""Models: the registry of built-in models, layer names and truncation, preparation for dreaming.

The registry (``list_models``, ``get_spec``, ``DEFAULT_MODEL`` …) is importable without torch; the
names that need torch (``LayerTap``, ``resolve_layers`` …) are imported on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Union

from .registry import DEFAULT_MODEL, MODELS, ModelSpec, default_layer, get_spec, list_models

if TYPE_CHECKING:
    import torch.nn as nn

    from .layers import LayerTap, module_layer_names, resolve_layers

def __getattr__(name):  # the names that need torch, imported on first use
    if name in ("LayerTap", "module_layer_names", "resolve_layers"):
        from . import layers

        return getattr(layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_layers(model: Union[str, "nn.Module"]) -> List[str]:
    """Layer names ``model`` can dream at: a built-in model's aliases (e.g. VGG's ``relu4_3``) first,
    then every qualified submodule name (``named_modules()``).

    Built-in models are built on the meta device for this: no weights are loaded or downloaded.
    """
    if isinstance(model, str):
        spec = get_spec(model)
    else:
        import torch.nn as nn

        if not isinstance(model, nn.Module):
            get_spec(model)  # the TypeError that names what is expected
        from .layers import module_layer_names

        return module_layer_names(model)
    import torch

    from .layers import module_layer_names

    with torch.device("meta"):
        module = spec.build(None)
    return list(spec.aliases) + module_layer_names(module)


__all__ = [
    "DEFAULT_MODEL", "MODELS", "ModelSpec", "LayerTap", "default_layer", "get_spec",
    "list_layers", "list_models", "module_layer_names", "resolve_layers",
]
