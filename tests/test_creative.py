"""The creative options of Dreamer: guide, channel modes, classes, regularisers, colours, noise."""
import pytest
import torch

import fastdream
from fastdream.colors import _luma
from fastdream.models import LayerTap, get_spec
from fastdream.models.prepare import freeze

FAST = dict(octaves=2, iterations=3)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def photo():
    img = fastdream.sample_image().float()[None] / 255
    return torch.nn.functional.interpolate(img, size=(96, 144), mode="bilinear", antialias=True)[0].clamp(0, 1)


@pytest.fixture(scope="module")
def coffee():
    img = fastdream.sample_image("coffee").float()[None] / 255
    return torch.nn.functional.interpolate(img, size=(80, 120), mode="bilinear", antialias=True)[0].clamp(0, 1)


@pytest.fixture(scope="module")
def taps():
    spec = get_spec("efficientnet_lite0")
    model = freeze(spec.build("default"))
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)

    def acts(image, layers):
        with torch.no_grad():
            return LayerTap(model, layers)((image[None] - mean) / std)

    return acts


def test_guided_dream_grows_the_guides_features(photo, coffee, taps):
    from fastdream.objectives import guided_objective

    out = fastdream.dream(photo, guide=coffee, seed=0, **FAST)
    plain = fastdream.dream(photo, seed=0, **FAST)
    score = guided_objective(taps(coffee, ["_blocks.9"])["_blocks.9"])
    before, after = (float(score(taps(x, ["_blocks.9"])["_blocks.9"])) for x in (photo, out))
    after_plain = float(score(taps(plain, ["_blocks.9"])["_blocks.9"]))
    assert after > before and after - before > (after_plain - before) * 0.8
    assert not torch.allclose(out, plain)


def test_guide_features_are_computed_once(photo, coffee):
    d = fastdream.Dreamer(guide=coffee, **FAST)
    d(photo, seed=0)
    prepared = d._engine.prepared
    first = prepared[next(iter(prepared))].memo["guide"]["_blocks.9"]
    d(photo, seed=1)
    assert prepared[next(iter(prepared))].memo["guide"]["_blocks.9"] is first


def test_channel_mode_strongest_grows_those_channels(photo, taps):
    from fastdream.objectives import select_channels

    d = fastdream.Dreamer(channel_mode="strongest", channel_count=4, **FAST)
    out = d(photo, seed=0)
    first = torch.nn.functional.interpolate(photo[None], size=(69, 103), mode="bilinear")[0]
    chosen = select_channels(taps(first, ["_blocks.9"])["_blocks.9"], "strongest", 4)[0]
    before, after = taps(photo, ["_blocks.9"])["_blocks.9"][0], taps(out, ["_blocks.9"])["_blocks.9"][0]
    gain = (after.pow(2).flatten(1).sum(1) / before.pow(2).flatten(1).sum(1).clamp_min(1e-6))
    others = torch.ones(gain.numel(), dtype=torch.bool)
    others[chosen] = False
    assert float(gain[chosen].mean()) > 1.5 * float(gain[others].median())


def test_classes_raise_their_logits():
    x = _rand(3, 96, 96, seed=3)
    spec = get_spec("efficientnet_lite0")
    model = freeze(spec.build("default"))
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    # 20 iterations: at 10 the gain of one class can still sit in the pack (torch-version dependent)
    out = fastdream.dream(x, classes=["tabby cat", 285], seed=0, octaves=2, iterations=20)
    with torch.no_grad():
        before, after = (model((v[None] - mean) / std)[0] for v in (x, out))
    gain = after - before
    rank = (-gain).argsort().argsort()  # 0 = the logit that grew most
    assert int(rank[281]) < 50 and int(rank[285]) < 50  # both among the top 5 % of 1000 classes
    assert float(gain[281]) > 2.0 and float(gain[285]) > 2.0
    d = fastdream.Dreamer(classes={"tabby": 1.0}, layers="_blocks.6", **FAST)
    assert d.classes == {281: 1.0} and d._engine.tapped == ["_blocks.6", "_fc"]


def test_unknown_class_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown class name 'tabbby'; close matches: 'tabby' \(281\)"):
        fastdream.Dreamer(classes=["tabbby"])
    with pytest.raises(ValueError, match="classes needs a built-in model"):
        fastdream.Dreamer(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), "0", classes=[1])


def _high_freq(change):
    lap = change[..., 1:-1, 1:-1] * 4 - change[..., :-2, 1:-1] - change[..., 2:, 1:-1] - change[..., 1:-1, :-2] - change[..., 1:-1, 2:]
    return float(lap.abs().mean() / change.abs().mean())


def test_smoothing_and_laplacian_normalisation(photo):
    plain = fastdream.dream(photo, seed=0, **FAST)
    smooth = fastdream.dream(photo, smoothing=2.0, seed=0, **FAST)
    lap = fastdream.dream(photo, lap_normalize=3, seed=0, **FAST)
    assert _high_freq(smooth - photo) < 0.7 * _high_freq(plain - photo)
    assert not torch.allclose(lap, plain) and float((lap - photo).abs().mean()) > 0.01
    both = fastdream.dream(photo, smoothing=[1.0, 3.0], lap_normalize=2, seed=0, **FAST)
    assert both.shape == photo.shape


def test_keep_colors_keeps_chroma(photo):
    out = fastdream.dream(photo, keep_colors=True, seed=0, **FAST)
    plain = fastdream.dream(photo, seed=0, **FAST)
    # The result is the input plus a grey (equal in R, G, B) change, wherever nothing was clipped.
    change = out - photo
    inside = ((out > 0.001) & (out < 0.999)).all(dim=0)
    spread = (change.max(dim=0).values - change.min(dim=0).values)[inside]
    assert float(spread.max()) < 1e-4
    assert float((_luma(out[None]) - _luma(photo[None])).abs().mean()) > 0.01
    assert float((plain - photo).std(dim=0).mean()) > 0.005  # a plain dream does change the colours


def test_dream_from_noise():
    out = fastdream.dream(None, size=(64, 80), seed=4, **FAST)
    assert out.shape == (3, 64, 80) and out.dtype == torch.float32
    assert torch.equal(out, fastdream.dream(None, size=(64, 80), seed=4, **FAST))
    grey = fastdream.Dreamer(init="grey", **FAST)(None, size=(64, 64), seed=0)
    assert grey.shape == (3, 64, 64) and float(grey.std()) > 0.001
    with pytest.raises(ValueError, match=r"size=\(height, width\) is required"):
        fastdream.dream(None)
    with pytest.raises(ValueError, match="size is only for image=None"):
        fastdream.dream(_rand(3, 40, 40), size=(40, 40))
    with pytest.raises(ValueError, match="size must be >= 32"):
        fastdream.dream(None, size=(8, 64))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(channel_mode="loudest"), ValueError, "channel_mode must be None or one of"),
    (dict(channel_mode="strongest", channels=[1]), ValueError, "channels and channel_mode exclude each other"),
    (dict(channel_count=0), ValueError, "channel_count must be >= 1"),
    (dict(guide=torch.rand(2, 3, 8, 8)), ValueError, "guide must be one image"),
    (dict(guide="cat.png"), TypeError, "guide must be a torch.Tensor"),
    (dict(smoothing=-1.0), ValueError, "smoothing must be > 0"),
    (dict(smoothing="big"), TypeError, "smoothing must be None, a sigma"),
    (dict(lap_normalize=0), ValueError, "lap_normalize must be >= 1"),
    (dict(keep_colors="yes"), TypeError, "keep_colors must be a bool"),
    (dict(init="zeros"), ValueError, "init must be 'noise' or 'grey'"),
    (dict(classes=[1.5]), TypeError, "classes: each class must be a name"),
    (dict(classes=[]), ValueError, "classes must name at least one class"),
])
def test_bad_creative_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastdream.Dreamer(**kwargs)
