"""Model registry, weights, layer names and truncation (preparation: tests/test_prepare.py)."""
import os

import pytest
import torch

import fastdream
from fastdream.models import LayerTap, get_spec
from fastdream.models.prepare import freeze

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
