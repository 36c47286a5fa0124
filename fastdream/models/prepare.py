"""Making a built-in model ready and fast to dream with: frozen, eval mode, BatchNorm folded.

These change the module in place and are applied only to models fastdream built itself; a user's
module is never modified.
"""
from __future__ import annotations

from typing import Iterable, Set

import torch
import torch.nn as nn

# (conv, batchnorm) attribute pairs where the forward is exactly ``bn(conv(x))`` in the built-in
# models: EfficientNet-Lite0 blocks and stem/head, torchvision's BasicConv2d (GoogLeNet, Inception v3)
# and ResNet bottlenecks and downsample branches.
_CONV_BN_PAIRS = (
    ("_conv_stem", "_bn0"), ("_conv_head", "_bn1"),
    ("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"),
    ("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("0", "1"),
)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients, and no in-place ReLUs (so any layer's output can be kept)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)) and m.inplace:
            m.inplace = False
    return model


@torch.no_grad()
def fold_batchnorm(model: nn.Module, keep: Iterable[str] = ()) -> int:
    """Fold eval-mode BatchNorm into the convolution before it; returns how many were folded.

    ``keep``: qualified names of layers whose own output is dreamed at; a convolution among them is
    not folded (its output would change), the BatchNorm becomes ``nn.Identity`` otherwise.
    """
    kept: Set[str] = set(keep)
    folded = 0
    for prefix, module in list(model.named_modules()):
        children = module._modules  # attribute children and Sequential indices alike
        for conv_name, bn_name in _CONV_BN_PAIRS:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.num_features != conv.out_channels or bn.running_var is None:
                continue
            if conv_name.isdigit() and not isinstance(module, nn.Sequential):
                continue
            if (f"{prefix}.{conv_name}" if prefix else conv_name) in kept:
                continue
            inv_std = torch.rsqrt(bn.running_var + bn.eps)
            scale = bn.weight * inv_std if bn.affine else inv_std
            shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
            children[bn_name] = nn.Identity()
            folded += 1
    return folded


def enable_inplace_activations(model: nn.Module, keep: Iterable[str]) -> int:
    """Let activations overwrite their input where no kept layer's output would be changed by it.

    ``freeze`` turns in-place ReLUs off so that any layer's output can be kept; this turns them
    back on where it is safe, for the built-in architectures: a ReLU in an ``nn.Sequential`` unless
    the layer just before it is kept, a ReLU of another module (ResNet's shared ``relu``) unless a
    layer inside that module is kept, and EfficientNet-Lite0's ReLU6s unless a layer inside their
    block (or the stem / head) is kept. Returns how many activations were switched.
    """
    from .efficientnet_lite import EfficientNetLite0, MBConvBlock

    kept: Set[str] = set(keep)

    def inside(prefix: str) -> bool:
        return any(k == prefix or k.startswith(prefix + ".") for k in kept)

    switched = 0
    for name, module in model.named_modules():
        if isinstance(module, MBConvBlock):
            module.inplace = not any(k.startswith(name + ".") for k in kept)
            switched += module.inplace
        elif isinstance(module, EfficientNetLite0):
            module.inplace_stem = not (inside("_conv_stem") or inside("_bn0"))
            module.inplace_head = not (inside("_conv_head") or inside("_bn1"))
            switched += module.inplace_stem + module.inplace_head
        for child_name, child in module.named_children():
            if not isinstance(child, (nn.ReLU, nn.ReLU6)):
                continue
            qualified = f"{name}.{child_name}" if name else child_name
            if qualified in kept:
                continue
            if isinstance(module, nn.Sequential):
                index = int(child_name)
                before = f"{name}.{index - 1}" if name else str(index - 1)
                safe = index > 0 and before not in kept
            else:
                safe = not inside(name) if name else False
            if safe:
                child.inplace = True
                switched += 1
    return switched
