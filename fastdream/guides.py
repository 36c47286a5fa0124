"""Objective pieces beyond "maximise the layer": a guide image, chosen channels, ImageNet classes.

Every ``*_objective`` here returns a per-layer objective of the same kind as
``fastdream.objectives`` takes: a callable ``Tensor[B, C, h, w] -> scalar`` (``class_objective``:
``Tensor[B, K]`` logits), the sum over the batch of each image's own loss, computed in float32
whatever precision the model ran in. :func:`weighted_sum` composes such pieces, one per layer,
into the ``{layer: activations} -> scalar`` objective the dream maximises.

None of them reads a value back to the host while the dream runs: the checks depend on shapes
only, and value checks (channel and class indices) happen once, when the objective is built.
"""
from __future__ import annotations

import difflib
import numbers
import re
from typing import Dict, List, Mapping, Sequence, Tuple

import torch

from .objectives import PerLayer, l2, mean_activation, weighted_sum  # noqa: F401 - weighted_sum re-exported

__all__ = [
    "CHANNEL_MODES",
    "guided_objective",
    "select_channels",
    "channel_objective",
    "imagenet_categories",
    "class_indices",
    "class_objective",
    "weighted_sum",
]


CHANNEL_MODES = ("strongest", "weakest", "average")
_BASES = {"l2": l2, "mean": mean_activation}
# Elements of one [B, n, N'] score block of the guide match: 2**24 floats = 64 MiB.
_MATCH_BLOCK = 1 << 24


class _PerDevice:
    """A constant tensor, copied once to each device it is asked for."""

    def __init__(self, tensor: torch.Tensor):
        self._copies = {tensor.device: tensor}

    def on(self, device: torch.device) -> torch.Tensor:
        copy = self._copies.get(device)
        if copy is None:
            copy = self._copies[device] = next(iter(self._copies.values())).to(device)
        return copy


def _check_tensor(func: str, name: str, value, dims: int, shape: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{func}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != dims:
        raise ValueError(f"{func}: {name} must have shape {shape}, got {list(value.shape)}")


# --- guide image -------------------------------------------------------------------------------


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
    _check_tensor("guided_objective", "guide_acts", guide_acts, 4, "Tensor[1 or B, C, h, w]")
    if not guide_acts.is_floating_point():
        raise TypeError(f"guided_objective: guide_acts must be a floating-point tensor, got {guide_acts.dtype}")
    if guide_acts.shape[0] == 0 or guide_acts.shape[2] * guide_acts.shape[3] == 0:
        raise ValueError(f"guided_objective: guide_acts is empty, shape {list(guide_acts.shape)}")
    guide = _PerDevice(guide_acts.detach().float().flatten(2).contiguous())  # [G, C, N']
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


# --- channels ----------------------------------------------------------------------------------


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
    _check_tensor("select_channels", "acts", acts, 4, "Tensor[B, C, h, w]")
    if not isinstance(mode, str) or mode not in CHANNEL_MODES:
        raise ValueError(f"select_channels: mode must be one of {CHANNEL_MODES}, got {mode!r}")
    if isinstance(count, bool) or not isinstance(count, numbers.Integral):
        raise TypeError(f"select_channels: count must be an int, got {type(count).__name__}")
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
    _check_tensor("channel_objective", "index", index, 2, "Tensor[B, k]")
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise TypeError(f"channel_objective: index must be an integer tensor, got {index.dtype}")
    if index.numel() == 0:
        raise ValueError(f"channel_objective: index is empty, shape {list(index.shape)}")
    if not isinstance(base, str) or base not in _BASES:
        raise ValueError(f"channel_objective: base must be one of {tuple(_BASES)}, got {base!r}")
    if int(index.min()) < 0:
        raise ValueError(f"channel_objective: index must be >= 0, got {int(index.min())}")
    largest = int(index.max())
    table = _PerDevice(index.detach().to(torch.int64).contiguous())
    index_batch, k = index.shape
    per_image = _BASES[base]

    def objective(a: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = a.shape
        if largest >= channels:
            raise ValueError(f"channel_objective: the layer has {channels} channels, got index {largest}")
        if index_batch not in (1, batch):
            raise ValueError(f"channel_objective: index has {index_batch} rows for a batch of {batch}")
        idx = table.on(a.device).view(index_batch, k, 1, 1).expand(batch, k, height, width)
        return per_image(torch.gather(a, 1, idx))

    return objective


# --- ImageNet classes --------------------------------------------------------------------------


def imagenet_categories(weights_meta=None) -> List[str]:
    """The class names a classifier's logits stand for.

    Args:
        weights_meta: where to read them: a torchvision weights enum member (its ``.meta``), a
            ``meta`` mapping with a ``"categories"`` list, or ``None`` for the standard 1000
            ImageNet-1k names as torchvision ships them (no download).

    Returns:
        A new list of names, index i naming logit i.
    """
    if weights_meta is None:
        from torchvision.models import get_weight

        weights_meta = get_weight("ResNet50_Weights.IMAGENET1K_V1")
    meta = getattr(weights_meta, "meta", weights_meta)
    if not isinstance(meta, Mapping):
        raise TypeError(
            "imagenet_categories: weights_meta must be None, torchvision weights or a meta mapping, "
            f"got {type(weights_meta).__name__}"
        )
    categories = meta.get("categories")
    if not categories or not all(isinstance(c, str) for c in categories):
        raise ValueError("imagenet_categories: weights_meta has no 'categories' list of names")
    return list(categories)


def _words(name: str) -> Tuple[str, ...]:
    return tuple(re.split(r"[\s_\-]+", name.strip().lower()))


def class_indices(classes, categories: Sequence[str]) -> List[int]:
    """Class indices from indices and/or names.

    Args:
        classes: an int, a name, or a sequence of them (``["tabby cat", 281]``).
        categories: the names of the logits (:func:`imagenet_categories`).

    Returns:
        The indices, in the order given (duplicates kept).

    A name matches a category when both are the same words (case, spaces, ``_`` and ``-``
    ignored: ``"Tiger_Shark"`` is ``"tiger shark"``); failing that, when exactly one category's
    words all occur in the name (``"tabby cat"`` → ``"tabby"``, 281). Anything else is a
    ValueError listing close matches (categories that contain all the name's words, then
    difflib's nearest spellings); a name that fits several categories is a ValueError listing
    them, to be passed by index.
    """
    if isinstance(classes, (str, numbers.Integral)):
        classes = [classes]
    if not isinstance(classes, Sequence) or isinstance(classes, bytes):
        raise TypeError(f"classes must be an int, a name or a list of them, got {type(classes).__name__}")
    if not classes:
        raise ValueError("classes must name at least one class")
    by_words: Dict[Tuple[str, ...], List[int]] = {}
    for i, name in enumerate(categories):
        by_words.setdefault(_words(name), []).append(i)
    out = []
    for item in classes:
        if isinstance(item, bool) or not isinstance(item, (str, numbers.Integral)):
            raise TypeError(f"classes: each class must be an int or a name, got {type(item).__name__}")
        if isinstance(item, numbers.Integral):
            if not 0 <= item < len(categories):
                raise ValueError(f"classes: index {item} is out of range [0, {len(categories)})")
            out.append(int(item))
            continue
        out.append(_index_of(item, categories, by_words))
    return out


def _index_of(name: str, categories: Sequence[str], by_words: Dict[Tuple[str, ...], List[int]]) -> int:
    words = _words(name)
    hits = by_words.get(words)
    if hits is None:
        given = set(words)
        hits = [i for key, ids in by_words.items() if set(key) <= given for i in ids]
    if len(hits) == 1:
        return hits[0]
    if hits:
        listed = ", ".join(f"{categories[i]!r} ({i})" for i in hits)
        raise ValueError(f"classes: {name!r} is ambiguous: {listed}; pass the index instead")
    keys = {" ".join(key): ids[0] for key, ids in by_words.items()}
    wider = [" ".join(key) for key in by_words if set(words) <= set(key)]
    close = (wider + difflib.get_close_matches(" ".join(words), list(keys), n=5, cutoff=0.6))[:5]
    hint = "; close matches: " + ", ".join(f"{categories[keys[c]]!r} ({keys[c]})" for c in close) if close else ""
    raise ValueError(f"classes: unknown class name {name!r}{hint}")


def class_objective(indices: Sequence[int]) -> PerLayer:
    """Objective that maximises the logits of ``indices`` (the same classes for every image).

    Args:
        indices: class indices (:func:`class_indices`), at least one.

    Returns:
        ``objective(logits)`` for logits = Tensor[B, K] (or [B, K, 1, 1], as a 1×1 convolutional
        classifier gives): ``sum_b sum_c logits[b, c]`` over the chosen c, in float32.
    """
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
        raise TypeError(f"class_objective: indices must be a sequence of ints, got {type(indices).__name__}")
    if not indices:
        raise ValueError("class_objective: indices must hold at least one class index")
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"class_objective: indices must be ints, got {type(i).__name__}")
        if i < 0:
            raise ValueError(f"class_objective: indices must be >= 0, got {i}")
    chosen = _PerDevice(torch.tensor([int(i) for i in indices], dtype=torch.int64))
    largest = max(indices)

    def objective(logits: torch.Tensor) -> torch.Tensor:
        flat = logits.flatten(1)
        if largest >= flat.shape[1]:
            raise ValueError(f"class_objective: the model gives {flat.shape[1]} logits, got class index {largest}")
        return flat.float().index_select(1, chosen.on(flat.device)).sum()

    return objective
