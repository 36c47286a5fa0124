"""The guided objective: grow, at each position, the guide image's best-matching feature.

The guide's activations are computed once per device (:func:`guide_terms`, the ``guide`` source);
:func:`guided_objective` turns them into a per-layer objective (``Tensor[B, C, h, w] -> scalar``,
summed over the batch, float32). Nothing is read back to the host while the dream runs.
"""
from __future__ import annotations


import torch

from .._convert import to_float01
from .._checks import check_tensor
from .basic import PerDevice
from .plan import Context, ObjectivePlan, PerLayer, Source, Terms, register

__all__ = ["guide_terms", "guided_objective"]

# Elements of one [B, n, N'] score block of the guide match: 2**24 floats = 64 MiB.
_MATCH_BLOCK = 1 << 24


def guided_objective(guide_acts: torch.Tensor) -> PerLayer:
    """Objective of a guided dream: each activation vector's best match in the guide's features.

    Args:
        guide_acts: Tensor[1 or B, C, h', w'], the guide image's activations at the layer (any
            float dtype and device; detached and kept as float32). A batch of 1 guides every image.

    Returns:
        ``objective(a)`` for a = Tensor[B, C, h, w]: ``sum_b sum_i max_j <a[b, :, i], g[b, :, j]>``
        over the positions i of ``a`` and j of the guide. Its gradient is, at every position, the
        guide's feature vector that matches best (the seed notebook's ``objective_guide``), so the
        dream grows what the guide image shows. The best matches are found without autograd, in
        blocks of at most 2**24 scores, so the memory stays bounded for large layers.
    """
    check_tensor("guided_objective", "guide_acts", guide_acts, dims=4, shape="Tensor[1 or B, C, h, w]",
                 floating=True)
    if guide_acts.shape[0] == 0 or guide_acts.shape[2] * guide_acts.shape[3] == 0:
        raise ValueError(f"guided_objective: guide_acts is empty, shape {list(guide_acts.shape)}")
    guide = PerDevice(guide_acts.detach().float().flatten(2).contiguous())  # [G, C, N']
    guide_batch, guide_channels = guide_acts.shape[:2]

    def objective(a: torch.Tensor) -> torch.Tensor:
        batch, channels = a.shape[:2]
        if channels != guide_channels:
            raise ValueError(
                f"guided_objective: the layer has {channels} channels but the guide's features {guide_channels}"
            )
        if guide_batch not in (1, batch):
            raise ValueError(f"guided_objective: a guide batch of {guide_batch} cannot guide a batch of {batch}")
        x = a.float().flatten(2)  # [B, C, N]
        g = guide.on(x.device).expand(batch, -1, -1)  # [B, C, N']
        with torch.no_grad():
            best = _best_matches(x, g)  # [B, N]
        matched = torch.gather(g, 2, best.unsqueeze(1).expand(-1, channels, -1))  # [B, C, N]
        return (x * matched).sum()

    return objective


def _best_matches(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """For x = Tensor[B, C, N] and g = Tensor[B, C, N']: argmax_j <x[b, :, i], g[b, :, j]>, [B, N]."""
    batch, _, positions = x.shape
    step = max(1, _MATCH_BLOCK // max(1, batch * g.shape[2]))
    xt = x.transpose(1, 2)  # [B, N, C]
    parts = [torch.bmm(xt[:, i: i + step], g).argmax(dim=2) for i in range(0, positions, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def guide_terms(plan: ObjectivePlan, context: Context) -> Terms:
    """The guided objective at every layer (the guide's features: once per device)."""
    acts = context.memo.get("guide")
    if acts is None:
        with torch.no_grad():
            guide = to_float01(plan.guide.unsqueeze(0), context.device)
            acts = context.memo["guide"] = context.features(guide)
    return [(name, w, guided_objective(acts[name])) for name, w in plan.layers.items()]


# Per device: the guide's features are the model's on the compute device.
register(Source("guide", guide_terms, options=("guide",), static=False, priority=30))
