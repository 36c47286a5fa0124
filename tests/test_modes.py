"""The Dreamer where callers put it: under no_grad / inference_mode, with modules of any float
dtype, pickled into a process pool, and without the compiled extension."""
import copy
import multiprocessing
import warnings

import pytest
import torch
import torch.nn as nn

import fastdream

FAST = dict(octaves=2, iterations=2, precision="fp32")


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _module(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))


@pytest.fixture(scope="module")
def dreamer():
    return fastdream.Dreamer(**FAST)


@pytest.mark.parametrize("mode", ["no_grad", "set_grad_enabled", "inference_mode"])
def test_grad_modes_give_the_same_dream_and_are_left_as_they_were(dreamer, mode):
    x = _rand(3, 40, 48)
    expected = dreamer(x, seed=1)
    contexts = {"no_grad": torch.no_grad, "set_grad_enabled": lambda: torch.set_grad_enabled(False),
                "inference_mode": torch.inference_mode}
    with contexts[mode]():
        inside = x.clone()  # an inference tensor under inference_mode
        out = dreamer(inside, seed=1)
        also = fastdream.dream(inside, seed=1, **FAST)
        built_here = fastdream.Dreamer(**FAST)(inside, seed=1)  # its model built under the mode
        assert not torch.is_grad_enabled()
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")
    for result in (out, also, built_here):
        assert torch.equal(result, expected)
        assert not result.is_inference() and not result.requires_grad
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_modules_of_any_float_dtype_are_dreamed_in_float32(dtype):
    x = _rand(3, 40, 48, seed=2)
    module = _module()
    expected = fastdream.dream(x, model=module, layers="2", seed=3, **FAST)
    cast = copy.deepcopy(module).to(dtype)
    out = fastdream.dream(x, model=cast, layers="2", seed=3, **FAST)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert float((out - x).abs().mean()) > 0.5 * float((expected - x).abs().mean())  # it dreamed
    torch.testing.assert_close(out, expected, rtol=0, atol=0.05)  # within the module's own rounding
    assert next(cast.parameters()).dtype == dtype  # the module is left as it was


def _dream_in_child(job):
    dreamer, image = job
    return dreamer(image, seed=3)


def test_a_dreamer_pickles_into_a_spawned_process():
    x = _rand(3, 40, 48, seed=4)
    guide = (_rand(3, 32, 32, seed=5) * 255).to(torch.uint8)
    builtin = fastdream.Dreamer(guide=guide, **FAST)
    user = fastdream.Dreamer(_module(), "2", **FAST)
    builtin(x, seed=0)  # caches on the device: not pickled
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        outs = pool.map(_dream_in_child, [(builtin, x), (user, x)])
    assert torch.equal(outs[0], builtin(x, seed=3)) and torch.equal(outs[1], user(x, seed=3))
    import pickle

    assert len(pickle.dumps(builtin)) < 100_000  # options and the guide, not the model's weights
    assert repr(pickle.loads(pickle.dumps(user))) == repr(user)


def test_dream_warns_once_when_it_falls_back_to_the_reference_kernels(no_extension):
    x = _rand(3, 40, 48, seed=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = fastdream.dream(x, seed=1, **FAST)
        fastdream.dream(x, seed=1, **FAST)
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "fastdream._C" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "pretend the build failed" in str(ours[0].message)
    assert first.shape == x.shape and not torch.equal(first, x)
