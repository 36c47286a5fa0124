"""Channel objectives: dream the channels of a layer that a mode picks in each input image.

:func:`select_channels` ranks the channels of each image by their mean activation;
:func:`channel_objective` maximises per-image channel sets. The value checks (indices) run once,
when the objective is built: nothing is read back to the host while the dream runs.
"""
from __future__ import annotations


import torch

from .._checks import check_choice, check_int, check_tensor
from ..options import CHANNEL_MODES
from .basic import BASES, PerDevice
from .plan import Context, ObjectivePlan, PerLayer, Source, Terms, register

__all__ = ["CHANNEL_MODES", "channel_mode_terms", "select_channels", "channel_objective"]


def select_channels(acts: torch.Tensor, mode: str, count: int) -> torch.Tensor:
    """The ``count`` channels of each image that ``mode`` picks, by their spatial mean activation.

    Args:
        acts: Tensor[B, C, h, w], a layer's activations for the input images.
        mode: ``"strongest"`` (largest mean activation first), ``"weakest"`` (smallest first) or
            ``"average"`` (the channels whose mean activation is closest to the mean over all
            channels, closest first: the layer's typical channels, neither dominant nor silent).
        count: how many channels, 1 <= count <= C.

    Returns:
        int64 Tensor[B, count] on ``acts``' device, each row ordered as described (ties broken
        by ``torch.topk``).
    """
    fn = "select_channels"
    check_tensor(fn, "acts", acts, dims=4, shape="Tensor[B, C, h, w]")
    check_choice(fn, "mode", mode, CHANNEL_MODES)
    count = check_int(fn, "count", count)
    channels = acts.shape[1]
    if not 1 <= count <= channels:
        raise ValueError(f"select_channels: count must be in [1, {channels}] (the layer's channels), got {count}")
    score = acts.detach().float().mean(dim=(2, 3))  # [B, C]
    if mode == "strongest":
        return score.topk(int(count), dim=1, largest=True).indices
    if mode == "weakest":
        return score.topk(int(count), dim=1, largest=False).indices
    distance = (score - score.mean(dim=1, keepdim=True)).abs()
    return distance.topk(int(count), dim=1, largest=False).indices


def channel_objective(index: torch.Tensor, base: str = "l2") -> PerLayer:
    """Objective that maximises per-image channel sets.

    Args:
        index: int Tensor[B, k] (or [1, k] for the whole batch), the channels of each image, e.g.
            from :func:`select_channels`. Checked once here (one read of its maximum).
        base: ``"l2"`` (0.5·sum(a²) over the chosen channels) or ``"mean"`` (their mean activation).

    Returns:
        ``objective(a)`` for a = Tensor[B, C, h, w]: ``sum_b base(a[b, index[b]])``.
    """
    check_tensor("channel_objective", "index", index, dims=2, shape="Tensor[B, k]")
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise TypeError(f"channel_objective: index must be an integer tensor, got {index.dtype}")
    if index.numel() == 0:
        raise ValueError(f"channel_objective: index is empty, shape {list(index.shape)}")
    check_choice("channel_objective", "base", base, tuple(BASES))
    if int(index.min()) < 0:
        raise ValueError(f"channel_objective: index must be >= 0, got {int(index.min())}")
    largest = int(index.max())
    table = PerDevice(index.detach().to(torch.int64).contiguous())
    index_batch, k = index.shape
    per_image = BASES[base]

    def objective(a: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = a.shape
        if largest >= channels:
            raise ValueError(f"channel_objective: the layer has {channels} channels, got index {largest}")
        if index_batch not in (1, batch):
            raise ValueError(f"channel_objective: index has {index_batch} rows for a batch of {batch}")
        idx = table.on(a.device).view(index_batch, k, 1, 1).expand(batch, k, height, width)
        return per_image(torch.gather(a, 1, idx))

    return objective


def channel_mode_terms(plan: ObjectivePlan, context: Context) -> Terms:
    """The channels the plan's mode picks in each input image (at its first octave size)."""
    with torch.no_grad():
        acts = context.features(context.first_octave())
    base = plan.objective if isinstance(plan.objective, str) else "l2"
    return [(name, w, channel_objective(select_channels(acts[name], plan.channel_mode, plan.channel_count), base))
            for name, w in plan.layers.items()]


# Per call: the ranking reads the call's input.
register(Source("channel_mode", channel_mode_terms, options=("channel_mode", "channel_count", "objective"),
                static=False, priority=20))
