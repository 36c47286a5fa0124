"""Layer names, and running a model only as far as the deepest requested layer.

Layer names are qualified names from ``module.named_modules()`` (``"_blocks.9"``, ``"inception4c"``,
``"layer3.2"``), plus per-model aliases such as VGG's ``"relu4_3"``. :class:`LayerTap` captures the
outputs of the requested layers with forward hooks and stops the forward pass as soon as the last
of them has been produced, so layers whose output is unused never run (the "truncation" of
DESIGN.md §2) for any module, whatever its ``forward`` does, without tracing it.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import torch
import torch.nn as nn


class _Reached(Exception):
    """Raised from a hook once every requested layer has produced its output."""


def module_layer_names(module: nn.Module) -> List[str]:
    """Qualified names of every submodule of ``module`` (the root excluded), in definition order."""
    return [name for name, _ in module.named_modules() if name]


def resolve_layers(module: nn.Module, names: Sequence[str], aliases: Mapping[str, str], model_label: str) -> List[str]:
    """Map user layer names (aliases allowed) to qualified module names; ``ValueError`` lists valid ones."""
    known = dict(module.named_modules())
    resolved = []
    for name in names:
        qualified = aliases.get(name, name)
        if not qualified or qualified not in known:
            # Shallow names first: they are the ones people dream at (inception4c, _blocks.9, layer3).
            valid = list(aliases) + sorted(module_layer_names(module), key=lambda n: n.count("."))
            shown = ", ".join(valid[:80])
            if len(valid) > 80:
                shown += f", … ({len(valid)} in all: fastdream.list_layers(model) lists them)"
            raise ValueError(f"layers: model {model_label} has no layer {name!r}; valid names: {shown}")
        resolved.append(qualified)
    return resolved


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
