"""Class objectives: maximise the logits of ImageNet classes, named or by index.

:func:`imagenet_categories` reads the class names, :func:`class_indices` turns names into indices
(forgiving spellings, helpful errors) and :func:`class_objective` is the per-layer objective on the
classifier's output (each built-in model names its ``logits_layer``).
"""
from __future__ import annotations

import difflib
import numbers
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .._checks import check_int
from .basic import PerDevice
from .plan import Context, ObjectivePlan, PerLayer, Source, Terms, register

__all__ = ["imagenet_categories", "class_indices", "class_objective", "class_terms"]


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
    for k, i in enumerate(indices):
        check_int("class_objective", f"indices[{k}]", i, 0)
    chosen = PerDevice(torch.tensor([int(i) for i in indices], dtype=torch.int64))
    largest = max(indices)

    def objective(logits: torch.Tensor) -> torch.Tensor:
        flat = logits.flatten(1)
        if largest >= flat.shape[1]:
            raise ValueError(f"class_objective: the model gives {flat.shape[1]} logits, got class index {largest}")
        return flat.float().index_select(1, chosen.on(flat.device)).sum()

    return objective


def class_terms(plan: ObjectivePlan, context: Optional[Context]) -> Terms:
    """One term per class on the model's logits layer."""
    return [(plan.logits_layer, w, class_objective([i])) for i, w in plan.classes.items()]


# Added to the per-layer terms; ``classes`` is resolved to indices by the engine (the model's names).
register(Source("classes", class_terms, options=("classes",), added=True,
                taps=lambda plan: [plan.logits_layer]))
