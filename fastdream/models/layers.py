"""Layer names, and running a model only as far as the deepest requested layer.

Layer names are qualified names from ``module.named_modules()`` (``"_blocks.9"``, ``"inception4c"``,
``"layer3.2"``), plus per-model aliases such as VGG's ``"relu4_3"``. :class:`LayerTap` captures the
outputs of the requested layers with forward hooks and stops the forward pass as soon as the last
of them has been produced, so layers whose output is unused never run (the "truncation" of
docs/architecture.md, "Models") for any module, whatever its ``forward`` does, without tracing it.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import UnknownNameError


class _Reached(Exception):
    """Raised from a hook once every requested layer has produced its output."""


def module_layer_names(module: nn.Module) -> List[str]:
    """Qualified names of every submodule of ``module`` (the root excluded), in definition order."""
    return [name for name, _ in module.named_modules() if name]


def resolve_layers(module: nn.Module, names: Sequence[str], aliases: Mapping[str, str], model_label: str) -> List[str]:
    """Map user layer names (aliases allowed) to qualified module names.

    An unknown name raises :class:`~fastdream.errors.UnknownNameError` (a ``ValueError``) that names
    the closest few valid names, the model's default layer and how to list them all.
    """
    known = dict(module.named_modules())
    resolved = []
    for name in names:
        qualified = aliases.get(name, name)
        if not qualified or qualified not in known:
            valid = list(aliases) + module_layer_names(module)
            raise unknown_layer_error(name, valid, model_label)
        resolved.append(qualified)
    return resolved


def unknown_layer_error(name: str, valid: Sequence[str], model_label: str) -> UnknownNameError:
    """The error for layer ``name`` missing from ``valid`` (the names of model ``model_label``, a
    repr such as ``'vgg16'`` for a built-in model, any label for a module)."""
    from .registry import MODELS, closest_names

    close = closest_names(str(name), valid, 5)
    if not close:  # nothing alike: show a few of the shallow names people dream at
        close = sorted(valid, key=lambda n: n.count("."))[:5]
        shown = "names look like " + ", ".join(close)
    else:
        shown = "closest: " + ", ".join(close)
    builtin = model_label.strip("'\"")
    builtin = builtin if builtin in MODELS and model_label != builtin else None
    if builtin is not None:
        shown += f" (default: {MODELS[builtin].default_layer})"
        python = f"fastdream.list_layers({builtin!r}) lists all {len(valid)} names"
        command = f"run 'fastdream layers {builtin}' to list all {len(valid)} names"
    else:
        python = f"fastdream.list_layers(model) lists all {len(valid)} names"
        command = None
    head = f"layers: model {model_label} has no layer {name!r}; {shown}; "
    return UnknownNameError(head + python, head + command if command else None)


class LayerTap:
    """Runs ``model`` up to the deepest of ``layers`` and returns their outputs.

    Args:
        model: any ``nn.Module``.
        layers: qualified module names (already resolved).

    Calling it with a Tensor[B, 3, H, W] returns ``{name: Tensor}`` for every requested layer.
    Hooks are attached for the duration of one call only, so the caller's module is left as it was.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        modules = dict(model.named_modules())
        self._modules = [(name, modules[name]) for name in self.layers]

    def __call__(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs: Dict[str, torch.Tensor] = {}
        wanted = len(self._modules)

        def make_hook(name):
            def hook(_module, _inputs, output):
                if name in outputs:  # a module used twice: keep its first output
                    return
                if not isinstance(output, torch.Tensor):
                    raise ValueError(
                        f"layers: layer {name!r} outputs a {type(output).__name__}, not a tensor; "
                        "choose a layer whose output is a single tensor"
                    )
                outputs[name] = output
                if len(outputs) == wanted:
                    raise _Reached

            return hook

        handles = [module.register_forward_hook(make_hook(name)) for name, module in self._modules]
        try:
            self.model(x)
        except _Reached:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise ValueError(f"layers: {missing} never ran in the model's forward pass; choose layers that it uses")
        return outputs
