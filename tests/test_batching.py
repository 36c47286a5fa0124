"""fastdream.batching: the cut of many images into batches, against a naive twin on random keys."""
import random

import pytest

from fastdream.batching import CPU_BATCH_PIXELS, GPU_BATCH, cpu_batch_size, seed_for, window_batches


def naive(keys, batch_size):
    """Per distinct key in order of first appearance, its indices in order, cut every batch_size."""
    order = []
    for key in keys:
        if key is not None and key not in order:
            order.append(key)
    out = []
    for key in order:
        indices = [i for i, k in enumerate(keys) if k == key]
        size = batch_size(key) if callable(batch_size) else batch_size
        out += [indices[s : s + size] for s in range(0, len(indices), size)]
    return out


@pytest.mark.parametrize("trial", range(20))
def test_window_batches_is_the_naive_cut(trial):
    rng = random.Random(trial)
    keys = [rng.choice([None, (3, 5, 7), (3, 9, 9), (1, 5, 7)]) for _ in range(rng.randint(0, 40))]
    size = rng.randint(1, 6)
    got = window_batches(keys, size)
    assert got == naive(keys, size)
    assert sorted(i for b in got for i in b) == [i for i, k in enumerate(keys) if k is not None]
    per_key = {(3, 5, 7): 2, (3, 9, 9): 5, (1, 5, 7): 1}
    assert window_batches(keys, per_key.__getitem__) == naive(keys, per_key.__getitem__)


def test_seed_for():
    assert seed_for(None, 3) is None
    assert seed_for(7, 3) == 10 and seed_for(2**63 - 1, 2) == 1


@pytest.mark.parametrize("height,width", [(1, 1), (40, 40), (128, 128), (256, 256), (300, 200), (512, 512),
                                          (724, 724), (4000, 3000)])
def test_cpu_batch_size_holds_the_pixel_budget(height, width):
    size = cpu_batch_size(height, width)
    assert 1 <= size <= GPU_BATCH
    assert size == 1 or size * height * width <= CPU_BATCH_PIXELS  # within the budget
    assert size == GPU_BATCH or (size + 1) * height * width > CPU_BATCH_PIXELS  # and no room for one more
