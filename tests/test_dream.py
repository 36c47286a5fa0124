"""fastdream.dream / Dreamer: semantics, round trips, determinism, objectives, user modules, bad input."""

import pytest
import torch
import torch.nn as nn

import fastdream
from fastdream._reference import dream_reference
from fastdream.models import LayerTap, get_spec
from fastdream.models.prepare import freeze
from fastdream.objectives import ObjectivePlan, compose
from fastdream.octaves import octave_sizes, shift_table

FAST = dict(octaves=2, iterations=2)


@pytest.fixture(scope="module")
def dreamer():
    return fastdream.Dreamer(**FAST)


@pytest.fixture(scope="module")
def photo():
    """Chelsea the cat, downscaled to 75×113 (uint8 [3, H, W])."""
    img = fastdream.sample_image().float()[None]
    small = torch.nn.functional.interpolate(img, size=(75, 113), mode="bilinear", antialias=True)
    return small[0].round().clamp(0, 255).to(torch.uint8)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def energy(model_name, layer, image):
    """0.5·sum(a²) of ``layer`` for a float image batch in [0, 1] (unjittered, full size)."""
    spec = get_spec(model_name)
    model = freeze(spec.build("default" if model_name == "efficientnet_lite0" else None))
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        a = LayerTap(model, [spec.aliases.get(layer, layer)])((image - mean) / std)
    return float(sum(0.5 * (v.double() ** 2).sum() for v in a.values()))


# -- shapes, dtypes, devices -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batched", [False, True])
def test_float_round_trip(dreamer, dtype, batched):
    x = _rand(2, 3, 37, 41).to(dtype) if batched else _rand(3, 37, 41).to(dtype)
    before = x.clone()
    y = dreamer(x, seed=1)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.equal(x, before), "the input must not be modified"
    assert float(y.float().min()) >= 0.0 and float(y.float().max()) <= 1.0
    assert float((y.float() - x.float()).abs().mean()) > 1e-3, "the dream must change the image"


def test_uint8_round_trip_and_zero_iterations_is_identity(photo):
    out = fastdream.Dreamer(octaves=3, iterations=0)(photo, seed=0)
    assert out.dtype == torch.uint8 and torch.equal(out, photo)
    out = fastdream.Dreamer(**FAST)(photo, seed=0)
    assert out.dtype == torch.uint8 and out.shape == photo.shape and not torch.equal(out, photo)


def test_grey_image_is_dreamed_as_grey(dreamer):
    x = _rand(1, 40, 36)
    y = dreamer(x, seed=0)
    assert y.shape == (1, 40, 36) and y.dtype == torch.float32
    assert float((y - x).abs().mean()) > 1e-3


def test_non_contiguous_input(dreamer):
    x = _rand(40, 36, 3).permute(2, 0, 1)  # a HWC buffer seen as CHW
    y = dreamer(x, seed=3)
    torch.testing.assert_close(y, dreamer(x.contiguous(), seed=3))


def test_empty_batch(dreamer):
    x = torch.rand(0, 3, 40, 40)
    assert dreamer(x).shape == (0, 3, 40, 40)


# -- determinism and the reference ---------------------------------------------------------------


def test_seed_makes_runs_identical(dreamer):
    x = _rand(2, 3, 48, 40)
    a, b, c = dreamer(x, seed=7), dreamer(x, seed=7), dreamer(x, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(fastdream.Dreamer(seed=7, **FAST)(x), a)  # a seed bound in the Dreamer


def test_no_seed_gives_fresh_randomness(dreamer):
    x = _rand(3, 48, 40)
    assert not torch.equal(dreamer(x), dreamer(x))


def test_images_of_a_batch_do_not_influence_each_other(dreamer):
    a, b = _rand(3, 44, 52, seed=1), _rand(3, 44, 52, seed=2)
    c = (b * 0.01).clone()  # a very different second image, with a 100× smaller gradient
    out1 = dreamer(torch.stack([a, b]), seed=5)
    out2 = dreamer(torch.stack([a, c]), seed=5)
    torch.testing.assert_close(out1[0], out2[0], rtol=1e-5, atol=1e-5)


def _reference_dream(x, seed, octaves, octave_scale, iterations, step_size, jitter, min_size):
    """The seed algorithm in eager fp32 torch with the plain model (BN unfolded, NCHW)."""
    spec = get_spec("efficientnet_lite0")
    model = freeze(spec.build("default"))
    tap = LayerTap(model, [spec.default_layer])
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    sizes = octave_sizes(x.shape[-2], x.shape[-1], octaves, octave_scale, min_size)
    gen = torch.Generator().manual_seed(seed)
    tables = [shift_table(iterations, x.shape[0], jitter, gen) for _ in sizes]
    objective = compose(ObjectivePlan({spec.default_layer: 1.0}))
    return dream_reference(x, lambda v: tap((v - mean) / std), objective, sizes, tables, step_size=step_size)


@pytest.mark.parametrize("shape", [(1, 3, 61, 47), (3, 3, 40, 33)])
def test_one_step_matches_the_reference_algorithm(shape):
    """One iteration: only float rounding separates the fast path (BN folded, channels_last, fused
    ops) from the seed algorithm in eager torch."""
    options = dict(octaves=1, octave_scale=1.3, iterations=1, step_size=0.02, jitter=5, min_size=16)
    x = _rand(*shape, seed=4)
    out = fastdream.Dreamer(precision="fp32", **options)(x, seed=11)
    ref = _reference_dream(x, 11, **options)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_dream_matches_the_reference_algorithm(photo, seed):
    """Several octaves and iterations on a real photo. The ascent is chaotic at the pixel level (a
    1e-7 change of the input moves the reference itself by ~0.003 after 3 steps, ReLU6 masks flip,
    and after 9 steps the details differ), so the whole dream is compared by its statistics: how
    much it changed the image and how much it raised the layer's energy. One step is compared
    exactly above."""
    options = dict(octaves=3, octave_scale=1.3, iterations=3, step_size=0.02, jitter=5, min_size=16)
    x = photo.float().div(255)[None]
    out = fastdream.Dreamer(precision="fp32", **options)(x, seed=seed)
    ref = _reference_dream(x, seed, **options)
    change_ref, change_out = float((ref - x).abs().mean()), float((out - x).abs().mean())
    assert change_ref > 0.02 and abs(change_out / change_ref - 1) < 0.1
    gain_ref = energy("efficientnet_lite0", "_blocks.9", ref) / energy("efficientnet_lite0", "_blocks.9", x)
    gain_out = energy("efficientnet_lite0", "_blocks.9", out) / energy("efficientnet_lite0", "_blocks.9", x)
    assert gain_ref > 1.5 and abs(gain_out / gain_ref - 1) < 0.1


def test_dream_raises_the_layer_energy_on_a_real_photo(photo):
    x = photo.float().div(255)[None]
    out = fastdream.dream(photo, octaves=3, iterations=5, seed=0).float().div(255)[None]
    before = energy("efficientnet_lite0", "_blocks.9", x)
    after = energy("efficientnet_lite0", "_blocks.9", out)
    assert after > 1.25 * before


@pytest.mark.slow
def test_realistic_default_dream_on_the_sample_photo():
    """The out-of-the-box run the README shows: defaults on the full 451×300 photo."""
    photo = fastdream.sample_image()
    out = fastdream.dream(photo, seed=0)
    assert out.shape == photo.shape and out.dtype == torch.uint8
    x, y = photo.float().div(255)[None], out.float().div(255)[None]
    assert energy("efficientnet_lite0", "_blocks.9", y) > 2 * energy("efficientnet_lite0", "_blocks.9", x)
    change = float((y - x).abs().mean())
    assert 0.03 < change < 0.3  # a visible dream that still keeps the photo


# -- objectives ---------------------------------------------------------------------------------


def test_objectives_and_layer_weights(photo):
    x = photo.float().div(255)
    multi = fastdream.dream(x, layers={"_blocks.6": 1.0, "_blocks.9": 0.5}, seed=0, **FAST)
    single = fastdream.dream(x, layers="_blocks.9", seed=0, **FAST)
    assert not torch.allclose(multi, single)
    zero_weight = fastdream.dream(x, layers={"_blocks.6": 0.0, "_blocks.9": 1.0}, seed=0, **FAST)
    torch.testing.assert_close(zero_weight, single, rtol=1e-5, atol=1e-5)
    mean = fastdream.dream(x, objective="mean", seed=0, **FAST)
    chans = fastdream.dream(x, channels=[3, 17], seed=0, **FAST)
    assert not torch.allclose(mean, single) and not torch.allclose(chans, single)
    custom = fastdream.dream(x, objective=lambda a: 0.5 * (a.float() ** 2).sum(), seed=0, **FAST)
    torch.testing.assert_close(custom, single, rtol=1e-5, atol=1e-5)


def test_channels_objective_only_grows_chosen_channels():
    loss = compose(ObjectivePlan({"l": 1.0}, channels=[1]))
    a = torch.randn(2, 4, 3, 3, requires_grad=True)
    (g,) = torch.autograd.grad(loss({"l": a}), a)
    assert torch.equal(g[:, 1], a[:, 1].detach()) and g[:, [0, 2, 3]].abs().sum() == 0


def test_channel_index_out_of_range():
    with pytest.raises(ValueError, match="channels: the layer has 112 channels, got index 500"):
        fastdream.dream(_rand(3, 40, 40), channels=[500], **FAST)


# -- user modules -------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 2)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.head(self.features(x).mean((2, 3)))


def test_user_module_and_layer_name():
    torch.manual_seed(0)
    model = Tiny().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _rand(2, 3, 40, 44)
    out = fastdream.dream(x, model=model, layers="features.1", jitter=0, min_size=16, **FAST)
    assert out.shape == x.shape and not torch.equal(out, x)
    # The module receives the image in [0, 1] exactly as given (no normalisation): the prepared
    # graph (its forward ran once, traced) computes what the module's own forward computes ...
    prepared = fastdream.Dreamer(model, "features.1", precision="fp32")._engine.prepare(torch.device("cpu"))
    v = torch.nn.functional.interpolate(x, size=(29, 31), mode="bilinear")
    torch.testing.assert_close(prepared.features(v)["features.1"], LayerTap(model, ["features.1"])(v)["features.1"])
    assert torch.equal(model.seen[-1], v)
    # ... and is left as it was: weights, training mode, no hooks, no gradients.
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_user_module_normalize_and_truncation():
    model = Tiny()
    ran = []
    model.head.register_forward_hook(lambda *a: ran.append("head"))
    x = _rand(3, 40, 44)
    fastdream.dream(x, model=model, layers="features.0", normalize=(0.5, 0.25), jitter=0, octaves=1, iterations=1)
    torch.testing.assert_close(model.seen[0][0], (x - 0.5) / 0.25)
    assert ran == []  # the head comes after the dreamed layer: never run


def test_user_module_requires_layers_and_no_weights():
    with pytest.raises(ValueError, match="layers is required"):
        fastdream.Dreamer(Tiny())
    with pytest.raises(ValueError, match="weights applies to built-in"):
        fastdream.Dreamer(Tiny(), "features.0", weights=None)
    with pytest.raises(ValueError, match=r"no layer 'features.9'.*features.0"):
        fastdream.Dreamer(Tiny(), "features.9")


def test_list_layers_of_a_module():
    assert fastdream.list_layers(Tiny()) == ["features", "features.0", "features.1", "features.2", "head"]


# -- torchvision models (random weights: no downloads here) ----------------------------------------


@pytest.mark.parametrize("name,size", [
    ("googlenet", 64), ("vgg16", 48), ("vgg19", 40), ("inception_v3", 80), ("resnet50", 64), ("alexnet", 70),
])
def test_torchvision_models_dream(name, size):
    x = _rand(3, size, size + 5)
    d = fastdream.Dreamer(name, weights=None, octaves=2, iterations=1, min_size=16)
    y = d(x, seed=0)
    # Random weights can give tiny gradients (GoogLeNet's init): only ask that the image moved.
    assert y.shape == x.shape and not torch.equal(y, x)


def test_vgg_alias_and_multiple_layers():
    d = fastdream.Dreamer("vgg16", {"relu3_3": 1.0, "conv4_3": 1.0}, weights=None, octaves=1, iterations=1)
    assert set(d.layers) == {"features.15", "features.21"}
    assert d(_rand(3, 40, 40), seed=0).shape == (3, 40, 40)


# -- sizes -----------------------------------------------------------------------------------------


def test_small_image_gets_fewer_octaves_not_a_crash():
    y = fastdream.dream(_rand(3, 40, 300), octaves=6, iterations=1)
    assert y.shape == (3, 40, 300)
    with pytest.raises(ValueError, match=r"image is 20×300; model 'inception_v3' needs at least 75 px"):
        fastdream.dream(_rand(3, 20, 300), model="inception_v3", weights=None)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image,exc,match", [
    ([[0.5]], TypeError, "image must be a torch.Tensor"),
    (torch.rand(3, 8, 8).int(), TypeError, "image must be uint8 or float"),
    (torch.rand(8, 8), ValueError, r"image must have shape \[3, H, W\]"),
    (torch.rand(1, 1, 3, 8, 8), ValueError, "image must have shape"),
    (torch.rand(40, 40, 3), ValueError, "channels last"),
    (torch.rand(3, 0, 8), ValueError, "positive height and width"),
    (torch.full((3, 40, 40), float("nan")), ValueError, "NaN or infinite"),
    (torch.full((3, 40, 40), float("inf")), ValueError, "NaN or infinite"),
    (torch.rand(3, 40, 40) * 2, ValueError, r"values must lie in \[0, 1\]"),
])
def test_bad_images(dreamer, image, exc, match):
    with pytest.raises(exc, match=match):
        dreamer(image)
    with pytest.raises(exc, match=match):
        fastdream.dream(image)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(octaves=0), ValueError, "octaves must be >= 1"),
    (dict(octaves=2.5), TypeError, "octaves must be an int"),
    (dict(octaves=True), TypeError, "octaves must be an int"),
    (dict(octave_scale=1.0), ValueError, "octave_scale must be > 1"),
    (dict(octave_scale=0.5), ValueError, "octave_scale must be > 1"),
    (dict(octave_scale=float("nan")), ValueError, "octave_scale must be finite"),
    (dict(iterations=-1), ValueError, "iterations must be >= 0"),
    (dict(jitter=-2), ValueError, "jitter must be >= 0"),
    (dict(step_size=float("nan")), ValueError, "step_size must be finite"),
    (dict(step_size=0), ValueError, "step_size must be > 0"),
    (dict(step_size="big"), TypeError, "step_size must be a real"),
    (dict(precision="fp8"), ValueError, "precision must be one of"),
    (dict(precision=16), TypeError, "precision must be one of"),
    (dict(model="nope"), ValueError, "model: unknown model 'nope'; valid names"),
    (dict(layers="nope"), ValueError, "no layer 'nope'"),
    (dict(layers=[]), ValueError, "layers must name at least one layer"),
    (dict(layers=3), TypeError, "layers must be a layer name"),
    (dict(layers={"_blocks.9": float("inf")}), ValueError, "must be finite"),
    (dict(objective="max"), ValueError, "objective must be one of"),
    (dict(objective=3), TypeError, "objective must be one of"),
    (dict(channels=[]), ValueError, "channels must list at least one"),
    (dict(channels=[-1]), ValueError, r"channels\[i\] must be >= 0"),
    (dict(channels="1"), TypeError, "channels must be None"),
    (dict(normalize=(0.5,)), TypeError, "normalize must be None or a"),
    (dict(normalize=(0.5, 0.0)), ValueError, "std must be > 0"),
    (dict(min_size=0), ValueError, "min_size must be >= 1"),
    (dict(device="gpu"), ValueError, "device"),
    (dict(device=3.0), TypeError, "device must be"),
    (dict(seed=-1), ValueError, "seed must be in"),
    (dict(seed=1.5), TypeError, "seed must be None or an int"),
    (dict(progress="yes"), TypeError, "progress must be a bool"),
    (dict(weights=5), TypeError, "weights must be"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastdream.dream(torch.rand(3, 40, 40), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        fastdream.Dreamer(device="cuda")


def test_progress_bar(capsys, dreamer):
    dreamer(_rand(3, 40, 40), progress=True)
    assert "dream" in capsys.readouterr().err


def test_repr(dreamer):
    assert "efficientnet_lite0" in repr(dreamer) and "_blocks.9" in repr(dreamer)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_looks_like_fp32(photo, precision):
    """Autocast runs the model in bf16/fp16 (slow on a CPU without native support, but correct):
    the image and the step stay float32 and the dream has the same statistics as in fp32."""
    x = photo.float().div(255)[None]
    options = dict(octaves=2, iterations=4, seed=0)
    ref = fastdream.dream(x, precision="fp32", **options)
    low = fastdream.dream(x, precision=precision, **options)
    assert low.dtype == torch.float32
    change_ref, change_low = float((ref - x).abs().mean()), float((low - x).abs().mean())
    assert abs(change_low / change_ref - 1) < 0.1
    gain_ref = energy("efficientnet_lite0", "_blocks.9", ref) / energy("efficientnet_lite0", "_blocks.9", x)
    gain_low = energy("efficientnet_lite0", "_blocks.9", low) / energy("efficientnet_lite0", "_blocks.9", x)
    assert abs(gain_low / gain_ref - 1) < 0.1


def test_auto_precision_is_fp32_on_the_cpu():
    # bf16 autocast measured no faster on CPUs, even with native AVX512-BF16 (docs/architecture.md)
    from fastdream.engine import resolve_precision

    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert resolve_precision("fp16", torch.device("cpu")) is torch.float16
