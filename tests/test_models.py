"""Model registry, weights, layer names, truncation and BatchNorm folding."""
import copy
import os

import pytest
import torch
import torch.nn as nn

import fastdream
from fastdream.models import LayerTap, get_spec
from fastdream.models.prepare import fold_batchnorm, freeze

DATA = os.path.join(os.path.dirname(fastdream.__file__), "data")


def _photo(path, size=224):
    img = fastdream.load_image(path).float().div(255)[None]
    img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(fastdream.models.registry.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(fastdream.models.registry.IMAGENET_STD).view(1, 3, 1, 1)
    return (img - mean) / std


@pytest.fixture(scope="module")
def lite0():
    return freeze(get_spec("efficientnet_lite0").build("default"))


def test_list_models_and_default():
    names = fastdream.list_models()
    assert names[0] == fastdream.DEFAULT_MODEL == "efficientnet_lite0"
    assert {"googlenet", "vgg16", "vgg19", "inception_v3", "resnet50", "alexnet"} <= set(names)


@pytest.mark.parametrize("name", fastdream.list_models())
def test_default_layer_is_listed(name):
    layers = fastdream.list_layers(name)
    assert fastdream.default_layer(name) in layers


def test_classic_layer_names():
    assert "inception4c" in fastdream.list_layers("googlenet")
    vgg = fastdream.list_layers("vgg16")
    assert vgg[:3] == ["conv1_1", "relu1_1", "conv1_2"] and "relu4_3" in vgg and "features.22" in vgg
    assert get_spec("vgg16").aliases["conv4_3"] == "features.21"  # VGG-16's 10th conv
    assert get_spec("vgg19").aliases["relu5_4"] == "features.35"


def test_unknown_model_and_layer_list_valid_names():
    with pytest.raises(ValueError, match="valid names: efficientnet_lite0, googlenet"):
        fastdream.list_layers("googlenett")
    with pytest.raises(ValueError, match=r"no layer 'nope'.*inception4c"):
        fastdream.Dreamer("googlenet", "nope", weights=None)
    with pytest.raises(TypeError, match="model must be"):
        fastdream.Dreamer(3)


@pytest.mark.parametrize("path,allowed", [
    (os.path.join(DATA, "chelsea.png"), {281, 282, 285}),  # tabby, tiger cat, Egyptian cat
    (os.path.join(DATA, "coffee.png"), {967, 968, 504}),  # espresso, cup, coffee mug
])
def test_offline_default_model_classifies_real_photos(lite0, path, allowed):
    with torch.no_grad():
        top = int(lite0(_photo(path)).argmax())
    assert top in allowed


def test_batchnorm_folding_keeps_outputs(lite0):
    folded = copy.deepcopy(lite0)
    assert fold_batchnorm(folded) == 49  # stem, head, 16 depthwise + 16 project + 15 expand
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 67, 45, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), lite0(x), rtol=1e-4, atol=1e-4)


def test_batchnorm_folding_spares_a_dreamed_conv(lite0):
    folded = copy.deepcopy(lite0)
    fold_batchnorm(folded, keep=["_blocks.3._depthwise_conv"])
    assert isinstance(folded._blocks[3]._bn1, nn.BatchNorm2d)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        a = LayerTap(folded, ["_blocks.3._depthwise_conv"])(x)
        b = LayerTap(lite0, ["_blocks.3._depthwise_conv"])(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["googlenet", "resnet50", "inception_v3"])
def test_batchnorm_folding_torchvision(name):
    model = freeze(get_spec(name).build(None))
    with torch.no_grad():  # non-trivial running statistics, so folding has something to get wrong
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    layer = get_spec(name).default_layer
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) > 0
    x = torch.rand(1, 3, 80, 96)
    with torch.no_grad():
        ref = LayerTap(model, [layer])(x)[layer]
        out = LayerTap(folded, [layer])(x)[layer]
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


def test_layer_tap_stops_after_deepest_layer(lite0):
    ran = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, m in lite0._blocks.named_children()]
    try:
        out = LayerTap(lite0, ["_blocks.4", "_blocks.2"])(torch.rand(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert set(out) == {"_blocks.4", "_blocks.2"}
    assert ran == ["0", "1", "2", "3", "4"]  # nothing after block 4 ran
    assert out["_blocks.4"].shape == (1, 40, 8, 8)
    assert not lite0._forward_hooks and not any(m._forward_hooks for m in lite0.modules())


def test_weights_from_local_file(tmp_path, lite0):
    path = tmp_path / "lite0.pth"
    torch.save(lite0.state_dict(), path)
    model = get_spec("efficientnet_lite0").build(str(path))
    for (k, a), b in zip(model.state_dict().items(), lite0.state_dict().values()):
        assert torch.equal(a, b), k
    torch.save({"state_dict": {"bad": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit model"):
        get_spec("efficientnet_lite0").build(str(tmp_path / "bad.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable"):
        get_spec("googlenet").build(str(tmp_path / "junk.pth"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        get_spec("vgg16").build(str(tmp_path / "missing.pth"))
    with pytest.raises(TypeError, match="weights must be"):
        get_spec("vgg16").build(3)


def test_torchvision_local_weights_file(tmp_path):
    # A state dict laid out like torchvision's pretrained GoogLeNet (no aux heads) loads from a path.
    import torchvision

    pretrained_like = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    torch.save(pretrained_like.state_dict(), tmp_path / "googlenet.pth")
    model = get_spec("googlenet").build(str(tmp_path / "googlenet.pth"))
    assert model.transform_input and model.aux1 is None


def test_offline_torchvision_weights_give_clear_error(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(fastdream.WeightsUnavailableError, match=r"checkpoints.*weights='path/to/file.pth'"):
        get_spec("alexnet").build("default")


@pytest.mark.parametrize("name,layers", [
    ("efficientnet_lite0", ["_blocks.9"]),
    ("efficientnet_lite0", ["_blocks.3._bn1", "_conv_stem"]),  # pre-activation outputs kept
    ("vgg16", ["features.21", "features.23"]),                   # conv4_3 (before its ReLU), pool4
    ("resnet50", ["layer2.1.bn2", "layer3"]),
    ("alexnet", ["features.3"]),
])
def test_inplace_activations_change_nothing(name, layers):
    from fastdream.models.prepare import enable_inplace_activations

    spec = get_spec(name)
    plain = freeze(spec.build("default" if name == "efficientnet_lite0" else None))
    fast = copy.deepcopy(plain)
    assert enable_inplace_activations(fast, keep=layers) > 0
    x = torch.rand(1, 3, 67, 71, generator=torch.Generator().manual_seed(0))
    grads, acts = [], []
    for model in (plain, fast):
        v = x.clone().requires_grad_(True)
        out = LayerTap(model, layers)(v)
        loss = sum(0.5 * (a * a).sum() for a in out.values())
        grads.append(torch.autograd.grad(loss, v)[0])
        acts.append({k: a.detach() for k, a in out.items()})
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
    for k in layers:
        torch.testing.assert_close(acts[1][k], acts[0][k], rtol=0, atol=0)
