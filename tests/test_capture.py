"""The capture fallback chain of prepare_for_dreaming: fx (extra forward arguments at their
defaults) → a graph per input shape (forwards that branch on shapes) → the module's own forward on
prepared submodules (forwards that branch on tensor values), each with the unprepared module's taps
and input gradient, the one-time notice, and the user's module left as it was."""
import warnings

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fastdream
from conftest import eager_reference, randomise_batchnorm
from fastdream.models import LayerTap
from fastdream.models.prepare import ShapeGraphs, prepare_for_dreaming


class Block(nn.Module):
    """conv → BN → ReLU (in place, as users write it), with a residual add where shapes allow."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.residual = cin == cout and stride == 1

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        return y + x if self.residual else y


class KwargsDictNet(nn.Module):
    """Keyword arguments and a dict output, a loop over blocks that can stop early: fx traces it
    with the extra arguments at their defaults."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(3, 8), Block(8, 8), Block(8, 16, 2), Block(16, 16)])

    def forward(self, x, upto=None, *, features=True, names=("b0", "b1", "b2", "b3")):
        out = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            out[names[i]] = x
            if upto is not None and i == upto:
                break
        return out if features else x


class ShapeBranchNet(nn.Module):
    """Branches on its input's shape (odd sizes padded, stages skipped below a size): fx fails on
    ``Block``'s shape test and on these, a graph per input shape follows them."""

    def __init__(self):
        super().__init__()
        self.stem = Block(3, 8)
        self.stages = nn.ModuleList([Block(8, 8), Block(8, 16, 2), Block(16, 16), Block(16, 32, 2)])
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1))
        x = self.stem(x)
        for stage in self.stages:
            if min(x.shape[-2:]) < 6:
                break
            x = stage(x)
        return self.head(x) if x.shape[1] == 32 else x


class ValueBranchNet(nn.Module):
    """Branches on tensor values: no graph computes it; its blocks are prepared one by one (and it
    iterates one of its children: they keep their structure)."""

    def __init__(self):
        super().__init__()
        self.stem = Block(3, 8)
        self.body = nn.Sequential(Block(8, 8), Block(8, 16, 2))
        self.tail = Block(16, 16)

    def forward(self, x):
        x = self.stem(x)
        if x.mean() > 0.5:  # the line the notice names
            x = x * 0.5
        for block in self.body:
            x = block(x)
        return self.tail(x)


def _randomised(model: nn.Module, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return randomise_batchnorm(model, seed).eval()


def _taps_and_grad(model, layers, x):
    v = x.clone().requires_grad_(True)
    out = LayerTap(model, layers)(v)
    loss = sum(0.5 * (a * a).sum() + a.sum() for a in out.values())
    (g,) = torch.autograd.grad(loss, v)
    return {k: a.detach() for k, a in out.items()}, g


def _assert_like_unprepared(prepared, model, layers, shapes):
    """float64: the prepared module's taps and input gradient are the unprepared module's."""
    ref = eager_reference(model)
    for shape in shapes:
        x = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(shape)))
        acts, g = _taps_and_grad(prepared, layers, x)
        ref_acts, ref_g = _taps_and_grad(ref, layers, x)
        torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-12)
        for k in layers:
            torch.testing.assert_close(acts[k], ref_acts[k], rtol=1e-10, atol=1e-12)


def _graph_of(module: nn.Module):
    """The fx graph a structured copy runs as its forward (None: its own code)."""
    return getattr(module.forward, "__self__", None) if "forward" in module.__dict__ else None


def _called(graph: fx.GraphModule, kind: type) -> list:
    """The modules of type ``kind`` that ``graph``'s nodes call."""
    called = (graph.get_submodule(n.target) for n in graph.graph.nodes if n.op == "call_module")
    return [m for m in called if isinstance(m, kind)]


def _snapshot(model: nn.Module):
    return {
        "state": {k: (v, v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
    }


def _assert_unmodified(model: nn.Module, before) -> None:
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before["state"])
    for k, (tensor, values) in before["state"].items():
        assert after[k] is tensor and torch.equal(tensor, values), k
    assert [m.training for m in model.modules()] == before["training"]
    assert [p.requires_grad for p in model.parameters()] == before["requires_grad"]
    assert [getattr(m, "inplace", None) for m in model.modules()] == before["inplace"]
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def _prepared_quietly(model, layers):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice: these modules get a graph
        return prepare_for_dreaming(model, layers)


@pytest.mark.parametrize("layers", [["blocks.2"], ["blocks.1.bn", "blocks.3"], ["blocks.0.conv"]])
def test_keyword_arguments_and_dict_output_trace_with_fx(layers):
    model = _randomised(KwargsDictNet()).double()
    model.blocks[1].train()  # a mixed training flag: it must come back
    before = _snapshot(model)
    prepared = _prepared_quietly(model, layers)
    assert isinstance(prepared, fx.GraphModule)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in prepared.modules()) <= 1  # folded
    # Truncated: the blocks after the deepest tap are gone.
    deepest = max(int(t.split(".")[1]) for t in layers)
    assert not any(n.startswith(f"blocks.{deepest + 1}") for n, _ in prepared.named_modules())
    _assert_like_unprepared(prepared, model, layers, [(1, 3, 17, 20), (3, 3, 12, 9)])
    _assert_unmodified(model, before)


@pytest.mark.parametrize("layers", [["stages.1"], ["stem.bn", "stages.2.conv"], ["stem", "stages.0", "head"]])
def test_shape_branches_get_a_graph_per_shape(layers):
    model = _randomised(ShapeBranchNet()).double()
    model.stages[0].conv.weight.requires_grad_(False)
    before = _snapshot(model)
    prepared = _prepared_quietly(model, layers)
    assert isinstance(prepared, ShapeGraphs)
    # Odd and even widths (padded or not), batches of 1 and 2; "head" runs at 24 px, not below.
    shapes = [(1, 3, 25, 24), (2, 3, 24, 31)] if "head" in layers else [(1, 3, 15, 16), (2, 3, 13, 21)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_like_unprepared(prepared, model, layers, shapes)
    assert len(prepared.graphs) == len(shapes) and prepared.eager is None
    for graph in prepared.graphs.values():  # each shape's graph is prepared: BN folded
        assert sum(isinstance(m, nn.BatchNorm2d) for m in graph.modules()) <= len(layers)
    _assert_unmodified(model, before)


def test_shape_graphs_share_their_tapped_modules_and_parameters():
    model = _randomised(ShapeBranchNet())
    prepared = prepare_for_dreaming(model, ["stages.1"])
    for shape in [(1, 3, 16, 16), (1, 3, 16, 17), (1, 3, 20, 16)]:
        LayerTap(prepared, ["stages.1"])(torch.rand(*shape))
    taps = {id(g.get_submodule("stages.1")) for g in prepared.graphs.values()}
    assert taps == {id(prepared.get_submodule("stages.1"))}
    assert list(prepared.parameters()) == list(model.parameters())
    # The folded convolutions (stem, stages.0) are made once, not once per shape.
    convs = {frozenset(map(id, _called(g, nn.Conv2d))) for g in prepared.graphs.values()}
    assert len(convs) == 1 and len(next(iter(convs))) == 2


def test_shape_graphs_keep_the_most_recent_shapes(monkeypatch):
    """Past ``MAX_SHAPES`` the least recently used shape's graph goes; a shape seen again is traced
    again and computes what it computed (a tiled dream's windows come in dozens of shapes)."""
    monkeypatch.setattr(ShapeGraphs, "MAX_SHAPES", 2)
    model = _randomised(ShapeBranchNet())
    prepared = prepare_for_dreaming(model, ["stages.1"])
    tap = LayerTap(prepared, ["stages.1"])
    inputs = {w: torch.rand(1, 3, 16, w, generator=torch.Generator().manual_seed(w)) for w in (16, 17, 18)}
    first = {w: tap(x)["stages.1"] for w, x in inputs.items()}
    assert [key[0][-1] for key in prepared.graphs] == [17, 18]
    tap(inputs[17])  # used: the most recent now
    again = tap(inputs[16])["stages.1"]
    assert [key[0][-1] for key in prepared.graphs] == [17, 16]
    assert torch.equal(again, first[16])


def test_value_branches_run_the_modules_forward_on_prepared_blocks():
    model = _randomised(ValueBranchNet()).double()
    before = _snapshot(model)
    layers = ["body.1", "stem.bn"]
    prepared = prepare_for_dreaming(model, layers)
    with pytest.warns(RuntimeWarning, match=r"ValueBranchNet runs its own forward eagerly.*tensor values \(test_capture\.py:\d+\)"):
        _assert_like_unprepared(prepared, model, layers, [(1, 3, 16, 18)])
    assert prepared.eager is not None and not prepared.graphs
    eager = prepared.eager
    assert type(eager) is ValueBranchNet and eager is not model
    # Each block runs its fx graph, BatchNorm folded but where tapped; its children stay reachable.
    graphs = {name: _graph_of(eager.get_submodule(name)) for name in ("stem", "body", "body.1", "tail")}
    assert all(isinstance(g, fx.GraphModule) for g in graphs.values())
    assert [len(_called(g, nn.BatchNorm2d)) for g in graphs.values()] == [1, 0, 0, 0]
    assert isinstance(eager.body[0].conv, nn.Conv2d)
    assert eager.get_submodule("body.1") is prepared.get_submodule("body.1")  # the hooked taps
    _assert_unmodified(model, before)


def test_eager_fallback_stops_after_the_deepest_tap():
    model = _randomised(ValueBranchNet())
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            if isinstance(x, torch.Tensor):  # a call, not its tracing
                calls.append(x.shape)
            return x

    model.tail = Counting()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_for_dreaming(model, ["body.0"])
        LayerTap(prepared, ["body.0"])(torch.rand(1, 3, 12, 12))
    assert prepared.eager is not None and calls == []


class ViewAfterValueBranch(nn.Module):
    """A branch on values (no graph), then ``view``, which the channels_last layout does not allow."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 9 * 11, 5)
        self.layouts = []

    def forward(self, x):
        if isinstance(x, torch.Tensor):
            self.layouts.append(x.is_contiguous(memory_format=torch.channels_last))
        if x.mean() > -1e9:
            x = self.conv(x)
        return self.fc(x.view(x.shape[0], -1))


@pytest.mark.parametrize("layer, layouts", [("conv", [True, True]), ("fc", [False, False])])
def test_eager_fallback_gives_channels_last_unless_the_forward_needs_the_default(layer, layouts):
    model = ViewAfterValueBranch()
    x = torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_for_dreaming(model, [layer])
        LayerTap(prepared, [layer])(x)  # the first call traces (no graph: values), then runs: tries channels_last
        assert True in model.layouts
        model.layouts.clear()
        ours = [LayerTap(prepared, [layer])(x)[layer] for _ in range(2)]
    expected = LayerTap(model, [layer])(x)[layer]
    assert prepared.eager is not None
    assert model.layouts[:-1] == layouts  # the last: the unprepared reference's own call
    for out in ours:
        torch.testing.assert_close(out, expected)


def test_notice_is_said_once_with_its_reason():
    class Once(ValueBranchNet):
        pass

    model = _randomised(Once())
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two Dreamers, two calls each: one notice
            dreamer = fastdream.Dreamer(model, "body.1", octaves=2, iterations=2, min_size=8)
            out = dreamer(image, seed=0)
            dreamer(image, seed=1)
    notices = [w for w in caught if "Once" in str(w.message)]
    assert len(notices) == 1, [str(w.message) for w in caught]
    assert "branches on tensor values" in str(notices[0].message)
    assert notices[0].category is RuntimeWarning
    assert out.shape == image.shape and not torch.equal(out, image)


def test_a_module_with_hooks_is_noticed_and_runs_as_it_is():
    class Hooked(KwargsDictNet):
        pass

    model = Hooked()
    handle = model.blocks[0].register_forward_hook(lambda m, i, o: None)
    try:
        with pytest.warns(RuntimeWarning, match="Hooked runs as it is.*it has hooks"):
            assert prepare_for_dreaming(model, ["blocks.1"]) is model
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            assert prepare_for_dreaming(model, ["blocks.1"]) is model
    finally:
        handle.remove()


def test_a_dream_with_each_kind_of_module_matches_its_unprepared_self():
    """One step, float64 module: fastdream's dream of the prepared module is the reference loop's."""
    from fastdream._reference import dream_reference
    from fastdream.objectives import layer_terms, weighted_sum
    from fastdream.octaves import shift_table

    for cls, layer in [(KwargsDictNet, "blocks.2"), (ShapeBranchNet, "stages.2"), (ValueBranchNet, "body.1")]:
        model = _randomised(cls()).double()
        image = torch.rand(1, 3, 20, 23, generator=torch.Generator().manual_seed(2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dreamer = fastdream.Dreamer(model, layer, octaves=1, iterations=1, jitter=3, min_size=8)
            got = dreamer(image, seed=5)
        tap = LayerTap(eager_reference(model), [layer])
        objective = weighted_sum(layer_terms("l2", {layer: 1.0}))
        tables = [shift_table(1, 1, 3, torch.Generator().manual_seed(5))]
        want = dream_reference(image, lambda v: tap(v.double()), objective, [(20, 23)], tables, dreamer.step_size)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=cls.__name__)
