"""Why a dream failed, said in terms of the model: which layer gave NaN, which layer lost the image.

Nothing here runs while a dream goes well. The octave loop only keeps a device-side flag per octave
(``torch.isfinite(x).all()``, read once at the end of the call); when it is down, or when autograd
finds no path from the objective back to the image, the failure is replayed once on a probe input
with every module's output recorded, and the error names the first module at fault.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .errors import NonFiniteError

Features = Callable[[torch.Tensor], Dict[str, torch.Tensor]]

# What autograd says when the loss does not depend on the input (torch 2.x wording, stable since 1.x).
_NO_PATH = ("does not require grad", "appears to not have been used in the graph")


def is_no_path_error(exc: BaseException) -> bool:
    """Whether ``exc`` is autograd's error for a loss that does not reach the image."""
    return isinstance(exc, RuntimeError) and any(words in str(exc) for words in _NO_PATH)


def _recorded(model: nn.Module, features: Features, x: torch.Tensor) -> Tuple[Dict[str, torch.Tensor],
                                                                             List[Tuple[str, torch.Tensor]]]:
    """``features(x)`` and every module's tensor output in the order they ran (hooks removed after)."""
    outputs: List[Tuple[str, torch.Tensor]] = []

    def hook(name):
        def record(module, args, output):
            if isinstance(output, torch.Tensor):
                outputs.append((name, output))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name]
    try:
        acts = features(x)
    finally:
        for handle in handles:
            handle.remove()
    return acts, outputs


def _reaches(output: torch.Tensor, x: torch.Tensor) -> bool:
    if not output.requires_grad:
        return False
    (grad,) = torch.autograd.grad(output.float().sum(), x, retain_graph=True, allow_unused=True)
    return grad is not None


def detached_layer_error(model: nn.Module, features: Features, probe: torch.Tensor,
                         tapped: Sequence[str]) -> ValueError:
    """The error for a model whose dreamed layers do not depend on the image through autograd:
    names the first module whose output lost the image (a ``.detach()``, ``torch.no_grad()``,
    ``.item()`` or a non-differentiable op before it) and the tapped layers it cuts off."""
    x = probe.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        acts, outputs = _recorded(model, features, x)
        cut = [name for name in tapped if name in acts and not _reaches(acts[name], x)]
        first = next((name for name, out in outputs if not _reaches(out, x)), None)
    where = f"module {first!r}'s output" if first is not None else "the model's output"
    layers = ", ".join(map(repr, cut or tapped))
    return ValueError(
        f"model: {where} does not depend on the image through autograd, so layer(s) {layers} cannot be "
        "dreamed: the forward detaches the input before it (.detach(), torch.no_grad(), .item(), .numpy() "
        "or a non-differentiable op); dreaming needs the gradient of the layers with respect to the image")


def nonfinite_error(model: nn.Module, features: Features, objective, transforms, probe: torch.Tensor,
                    octave: int, octaves: int) -> NonFiniteError:
    """The error for a dream whose image became NaN or infinite in octave ``octave`` (1-based),
    naming where on the probe (the input at that octave's size) the first non-finite value arises:
    a module's output, the objective, the gradient or a gradient transform."""
    where = f"in octave {octave} of {octaves}"
    x = probe.detach().clone().requires_grad_(True)
    cause: Optional[str] = None
    with torch.enable_grad():
        acts, outputs = _recorded(model, features, x)
        bad = next((name for name, out in outputs if not torch.isfinite(out).all()), None)
        if bad is not None:
            cause = f"the model's forward: module {bad!r} outputs NaN or inf"
        elif not all(torch.isfinite(a).all() for a in acts.values()):
            cause = "the model's forward: a dreamed layer's output is NaN or inf"
        else:
            loss = objective(acts)
            if not torch.isfinite(loss).all():
                cause = "the objective: it is NaN or inf on finite layer outputs"
            else:
                (grad,) = torch.autograd.grad(loss, x)
                if not torch.isfinite(grad).all():
                    cause = ("the gradient: the backward of the model (or of the objective) gives NaN or inf "
                             "for a finite forward")
                else:
                    for transform in transforms:
                        grad = transform(grad)
                        if not torch.isfinite(grad).all():
                            cause = "a gradient transform (smoothing / lap_normalize) gives NaN or inf"
                            break
    if cause is None:
        cause = ("an iteration: forward, objective and gradient are finite on the octave's input, so a later "
                 "iteration's image made the model, its objective or its gradient non-finite")
    return NonFiniteError(f"the dream became NaN or infinite {where}; it came from {cause}")
