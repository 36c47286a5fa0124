"""The step is scale-free, like the seed's ``step_size * g / mean|g|``, on every backend and path.

A model whose gradients are tiny (a randomly initialised GoogLeNet: mean|g| ~ 2.5e-16) must dream
as the same model scaled up; only an all-zero gradient is guarded (the image does not move).
"""
import copy
import warnings

import pytest
import torch
import torch.nn as nn

import fastdream

LAYER = "4"


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))


def _scaled(model: nn.Module, factor: float) -> nn.Module:
    """``model`` with the dreamed layer's output times ``factor`` (its weight and bias scaled)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.get_submodule(LAYER).weight.mul_(factor)
        model.get_submodule(LAYER).bias.mul_(factor)
    return model


def _image() -> torch.Tensor:
    return torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=["cpu-extension", "reference"])
def backend(request):
    if request.param == "reference":
        request.getfixturevalue("no_extension")
    elif not fastdream.backend_info()["extension"]:  # a source tree run in place, never built
        pytest.skip("fastdream._C is not built here (test_ops checks that a build that ran loads it)")
    assert fastdream.backend_info()["devices"]["cpu"] == request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the reference's once-per-process notice
        yield request.param


# tiles: window-by-window gradients (32-px tiles on a 48x64 image), the other path of an iteration
PATHS = {"whole": {}, "tiled": {"tile_size": 32, "tile_margin": 0}}


@pytest.mark.parametrize("path", PATHS)
def test_a_layer_scaled_by_a_power_of_two_near_1e_10_dreams_the_same_picture(backend, path):
    # 2^-33 ~ 1.2e-10 scales every float32 value of the model exactly, so the gradient is exactly
    # 2^-66 times the original (~1e-22): the picture must be bit for bit the same (an epsilon of
    # 1e-8 next to mean|g| left it unchanged)
    options = dict(octaves=2, iterations=2, seed=4, jitter=8, min_size=24, **PATHS[path])
    x = _image()
    model = _net()
    expected = fastdream.Dreamer(model, LAYER, **options)(x)
    assert float((expected - x).abs().mean()) > 0.01  # it dreamed
    assert torch.equal(fastdream.Dreamer(_scaled(model, 2.0**-33), LAYER, **options)(x), expected)


def test_a_layer_scaled_by_1e_10_dreams_as_much(backend):
    # 1e-10 is not a power of two: the model's float32 rounding differs by ulps and the pixel dynamics
    # are chaotic (docs/architecture.md), so the two pictures are compared by how far they moved
    options = dict(octaves=2, iterations=2, seed=4, jitter=8, min_size=24)
    x = _image()
    model = _net()
    change = [float((fastdream.Dreamer(m, LAYER, **options)(x) - x).abs().mean()) for m in (model, _scaled(model, 1e-10))]
    assert change[0] > 0.01 and change[1] == pytest.approx(change[0], rel=0.02)


def test_an_all_zero_gradient_leaves_the_picture(backend):
    # a dreamed layer with zero weights: constant activations, a gradient of exact zeros
    model = _scaled(_net(), 0.0)
    with torch.no_grad():
        model.get_submodule(LAYER).bias.fill_(0.5)
    x = _image()
    out = fastdream.Dreamer(model, LAYER, octaves=2, iterations=2, seed=4, min_size=24)(x)
    assert not torch.isnan(out).any() and torch.equal(out, x)
