"""The Python API at its edges: models that give NaN or lose the image, tensors without data, budgets
too small for the image, misspelt options; and ``dream()``'s cache (hits, threads, no leak)."""
import gc
import threading
import weakref

import pytest
import torch
import torch.nn as nn

import fastdream
from fastdream import dream_cache
from fastdream.dreamer import DREAMERS
from fastdream import NonFiniteError
from fastdream.options import OptionError, Options

FAST = dict(octaves=2, iterations=2, jitter=2, precision="fp32", seed=0, min_size=16)


def _image(seed=0, size=(24, 28)):
    return torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))


def _module(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x - 10.0)  # activations are far below 10: NaN


class SqrtOfZero(nn.Module):
    def forward(self, x):
        return x + (x * 0).sqrt()  # finite forward; the backward of sqrt at 0 is inf, times 0: NaN


class Detaches(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.head(self.conv(x.detach()))


# ------------------------------------------------------------------------------------- NaN / inf


def test_a_model_that_outputs_nan_names_the_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Log(), nn.Conv2d(4, 4, 1))
    with pytest.raises(NonFiniteError, match=r"octave 1 of 2.*the model's forward: module '1' outputs NaN"):
        fastdream.Dreamer(model, "2", **FAST)(_image())


def test_a_nan_gradient_is_told_apart_from_the_forward():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), SqrtOfZero(), nn.Conv2d(4, 4, 1))
    with pytest.raises(NonFiniteError, match="it came from the gradient"):
        fastdream.Dreamer(model, "2", **FAST)(_image())


def test_an_objective_that_gives_nan_is_named():
    nan_objective = lambda a: (a * float("nan")).sum()  # noqa: E731
    with pytest.raises(NonFiniteError, match="the objective"):
        fastdream.Dreamer(_module(), "2", objective=nan_objective, **FAST)(_image())


def test_a_finite_dream_is_not_slowed_by_a_read_per_step(monkeypatch):
    """The finiteness flags are read once per call, not per step or octave."""
    reads = []
    real = torch.Tensor.__bool__

    def counting(self):
        reads.append(self.shape)
        return real(self)

    dreamer = fastdream.Dreamer(_module(), "2", **dict(FAST, iterations=3, octaves=3, min_size=8))
    monkeypatch.setattr(torch.Tensor, "__bool__", counting)
    dreamer(_image())
    monkeypatch.undo()
    assert len(reads) == 1


# ------------------------------------------------------------------------------ bad tensors, models


def test_a_tensor_on_the_meta_device_is_refused_before_any_work():
    with pytest.raises(ValueError, match="image is on the meta device"):
        fastdream.Dreamer(_module(), "2", **FAST)(torch.empty(3, 24, 28, device="meta"))
    with pytest.raises(ValueError, match="meta device"):
        fastdream.dream(torch.empty(3, 24, 28, device="meta"), model=_module(), layers="2")


def test_a_model_that_detaches_its_input_names_the_layer():
    with pytest.raises(ValueError, match=r"module 'conv'.s output does not depend on the image.*'head'"):
        fastdream.Dreamer(Detaches(), "head", **FAST)(_image())
    frozen = Detaches().requires_grad_(False)  # then autograd says "does not require grad"
    with pytest.raises(ValueError, match="module 'conv'.s output does not depend on the image"):
        fastdream.Dreamer(frozen, "head", **FAST)(_image())


def test_a_budget_too_small_for_the_image_is_said_before_any_large_allocation(monkeypatch):
    allocated = []
    real_full = torch.full

    def watch(size, *args, **kwargs):
        allocated.append(size)
        assert torch.Size(size).numel() < 10**8, "a large allocation before the budget's check"
        return real_full(size, *args, **kwargs)

    monkeypatch.setattr(torch, "full", watch)
    dreamer = fastdream.Dreamer(_module(), "2", max_memory=2 * 2**30, init="grey", **FAST)
    with pytest.raises(OptionError, match=r"max_memory: 2G is too small for a 1×3×100000×100000 dream.*take 559G"):
        dreamer(None, size=(100000, 100000))
    assert allocated == []
    with pytest.raises(OptionError, match="max_memory: 1K is too small"):
        fastdream.Dreamer(_module(), "2", max_memory=1024, **FAST)(_image())


def test_a_misspelt_option_says_what_was_meant():
    with pytest.raises(TypeError, match=r"dream\(\) got an unknown option 'octave'; did you mean 'octaves'"):
        fastdream.dream(_image(), octave=3)
    with pytest.raises(TypeError, match=r"Dreamer\(\) got an unknown option 'step'; did you mean 'step_size'"):
        fastdream.Dreamer(step=0.1)
    with pytest.raises(TypeError, match="unknown option 'zzz'; the options are model, layers"):
        fastdream.Dreamer(zzz=1)


# ------------------------------------------------------------------------------------- the cache


BUILTIN = dict(FAST)  # the offline default model, its bundled weights


def test_dream_reuses_the_dreamer_of_the_same_options():
    fastdream.dream.cache_clear()
    image = _image(size=(40, 44))
    first = fastdream.dream(image, **BUILTIN)
    again = fastdream.dream(image, **BUILTIN)
    assert (DREAMERS.misses, DREAMERS.hits, len(DREAMERS)) == (1, 1, 1)
    assert torch.equal(first, again)
    torch.testing.assert_close(first, fastdream.Dreamer(**BUILTIN)(image), rtol=0, atol=0)
    fastdream.dream(image, **dict(BUILTIN, iterations=1))  # other options: another Dreamer
    assert (DREAMERS.misses, len(DREAMERS)) == (2, 2)
    fastdream.dream.cache_clear()


def test_dream_is_thread_safe_and_builds_once():
    fastdream.dream.cache_clear()
    images = [_image(seed=k, size=(40, 44)) for k in range(4)]
    results = [None] * 4

    def work(k):
        results[k] = fastdream.dream(images[k], **BUILTIN)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert DREAMERS.misses == 1 and DREAMERS.hits == 3
    dreamer = fastdream.Dreamer(**BUILTIN)
    for k in range(4):
        assert torch.equal(results[k], dreamer(images[k]))
    fastdream.dream.cache_clear()


def test_the_cache_is_bounded_least_recently_used_first_out():
    built = []
    cache = dream_cache.DreamerCache(lambda options: built.append(options.iterations) or object(), size=2)
    for n in (1, 2, 1, 3, 2):
        cache.get(Options(iterations=n))
    assert built == [1, 2, 3, 2] and len(cache) == 2  # 1 was used again, so 2 went first


def test_a_guide_changed_in_place_is_a_new_key():
    guide = _image(seed=5)
    before = dream_cache.options_key(Options(guide=guide))
    guide.mul_(0.5)
    assert dream_cache.options_key(Options(guide=guide)) != before


def test_the_cache_keeps_no_module_of_yours_alive():
    module = _module()
    image = _image()
    out = fastdream.dream(image, model=module, layers="2", **FAST)
    again = fastdream.dream(image, model=module, layers="2", **FAST)
    assert torch.equal(out, again) and len(dream_cache.PREPARED_GRAPHS) >= 1
    ref = weakref.ref(module)
    del module
    gc.collect()
    assert ref() is None  # neither DREAMERS nor the prepared graphs held it


class ShapeBranches(nn.Module):
    """fx cannot trace it (a branch on the input's width): prepared as a graph per input shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] % 2:
            x = x.flip(-1)
        return self.conv(x)


def test_the_cache_keeps_no_untraceable_module_of_yours_alive():
    module = ShapeBranches()
    fastdream.dream(_image(), model=module, layers="conv", **FAST)
    assert len(dream_cache.PREPARED_GRAPHS) >= 1
    ref = weakref.ref(module)
    del module
    gc.collect()
    assert ref() is None  # its graphs per shape hold it weakly


def test_dream_takes_an_inference_tensor_as_guide():
    with torch.inference_mode():
        guide = _image(9, (40, 44))
    image = _image(0, (40, 44))
    options = dict(FAST, octaves=1, min_size=32)  # the default (built-in, cached) model
    out = fastdream.dream(image, guide=guide, **options)
    assert torch.equal(out, fastdream.Dreamer(guide=guide.clone(), **options)(image))


def test_a_module_trained_in_place_is_prepared_again():
    module = _module()
    image = _image()
    before = fastdream.dream(image, model=module, layers="2", **FAST)
    with torch.no_grad():
        module[0].weight.mul_(-1.0)
    after = fastdream.dream(image, model=module, layers="2", **FAST)
    fresh = fastdream.Dreamer(module, "2", **FAST)(image)
    assert not torch.equal(before, after) and torch.equal(after, fresh)


# ------------------------------------------------------------------------ loss and prepared model


def test_loss_is_what_an_iteration_ascends():
    """One iteration without jitter or octaves is the normalised step along ``grad(loss(x), x)``."""
    d = fastdream.Dreamer(_module(), "2", octaves=1, iterations=1, jitter=0, step_size=0.02, seed=0)
    x = _image(3, (29, 31)).unsqueeze(0)
    x_in = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(d.loss(x_in), x_in)
    expected = (x + 0.02 * g / g.abs().mean()).clamp(0, 1)
    torch.testing.assert_close(d(x), expected, rtol=1e-5, atol=1e-6)
    assert d.prepared_model() is d.prepared_model("cpu") is d.prepared_model(torch.device("cpu"))
    ours = {p.data_ptr() for p in d.model.parameters()}  # no BatchNorm to fold: every tensor shared
    assert {p.data_ptr() for p in d.prepared_model().parameters()} == ours


@pytest.mark.parametrize("x, error, match", [
    (torch.rand(3, 20, 20), TypeError, r"x must be a float Tensor\[B, 3, H, W\], got a torch.float32 tensor of shape \(3, 20, 20\)"),
    (torch.zeros(1, 3, 20, 20, dtype=torch.uint8), TypeError, "got a torch.uint8 tensor"),
    ("x", TypeError, "got str"),
])
def test_loss_refuses_what_is_not_an_image_batch(x, error, match):
    with pytest.raises(error, match=match):
        fastdream.Dreamer(_module(), "2").loss(x)


def test_prepared_model_names_a_bad_device():
    with pytest.raises(TypeError, match="device must be None, a str"):
        fastdream.Dreamer(_module(), "2").prepared_model(3)


# ------------------------------------------------------------------------------ progress callable


def test_progress_callable_counts_steps_and_can_stop_a_dream():
    d = fastdream.Dreamer(_module(), "2", **FAST)
    image = _image(4)
    steps = []
    out = d(image, progress=steps.append)
    assert steps == [1] * (FAST["octaves"] * FAST["iterations"])
    assert torch.equal(out, d(image))  # a callable changes nothing of the dream

    class Stop(Exception):
        pass

    def stop_after_two(n, seen=[]):
        seen.append(n)
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        d(image, progress=stop_after_two)
    assert torch.equal(d(image), out)  # the Dreamer is as it was
    images = []
    list(d.dream_many([image, image, _image(5)], batch_size=2, progress=images.append))
    assert sum(images) == 3
    with pytest.raises(TypeError, match="progress must be a bool or a callable, got str"):
        d(image, progress="yes")


def test_two_dreamers_of_one_module_in_two_threads():
    """Dreamers of one module of yours share its prepared graph (and the hooks their calls put on
    it): calls from two threads run one at a time and each gets its own, sequential, answer."""
    module = _module()
    image = _image(6, (32, 36))
    dreamers = [fastdream.Dreamer(module, "2", **dict(FAST, step_size=step, iterations=6)) for step in (0.01, 0.03)]
    expected = [d(image) for d in dreamers]
    results = {}

    def run(k):
        results[k] = [dreamers[k % 2](image) for _ in range(4)]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, outs in results.items():
        assert all(torch.equal(out, expected[k % 2]) for out in outs), k
    assert len(results) == 4
