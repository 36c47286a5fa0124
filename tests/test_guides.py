"""Guide, channel and class objectives against naive twins (explicit loops over images and positions)."""
import pytest
import torch

from fastdream.objectives import (
    channel_objective, class_indices, class_objective, guided_objective, imagenet_categories, select_channels,
    weighted_sum,
)


def rand(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def grad_of(objective, a):
    a = a.detach().clone().requires_grad_(True)
    loss = objective(a)
    (g,) = torch.autograd.grad(loss, a)
    return loss.detach(), g


def guided_twin(a, guide):
    """The seed's objective_guide per image: each position's best dot product with a guide vector."""
    total = torch.zeros((), dtype=torch.float64)
    grads = torch.zeros(a.shape, dtype=torch.float64)
    for b in range(a.shape[0]):
        x = a[b].double().flatten(1)  # [C, N]
        y = guide[b if guide.shape[0] > 1 else 0].double().flatten(1)  # [C, N']
        for i in range(x.shape[1]):
            dots = [float(x[:, i] @ y[:, j]) for j in range(y.shape[1])]
            best = max(range(len(dots)), key=dots.__getitem__)
            total += dots[best]
            grads[b].view(a.shape[1], -1)[:, i] = y[:, best]
    return total, grads


@pytest.mark.parametrize("a_shape, g_shape", [((1, 5, 3, 4), (1, 5, 2, 5)), ((3, 4, 5, 3), (1, 4, 4, 4)), ((2, 6, 7, 1), (2, 6, 3, 3))])
def test_guided_matches_twin(a_shape, g_shape):
    a, guide = rand(a_shape, 1), rand(g_shape, 2)
    loss, g = grad_of(guided_objective(guide), a)
    want_loss, want_g = guided_twin(a, guide)
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g.double(), want_g, rtol=1e-6, atol=1e-6)


def test_guided_blocks_bf16_and_non_contiguous(monkeypatch):
    import fastdream.objectives.guide as guide_module

    monkeypatch.setattr(guide_module, "_MATCH_BLOCK", 7)  # many small blocks
    a = rand((2, 8, 5, 9), 3).permute(0, 1, 3, 2)
    guide = rand((1, 8, 6, 4), 4).transpose(2, 3)
    loss, g = grad_of(guided_objective(guide), a)
    want_loss, want_g = guided_twin(a, guide)
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g.double(), want_g)
    loss16 = guided_objective(guide.bfloat16())(a.bfloat16())
    assert loss16.dtype == torch.float32


def test_guided_bad_arguments():
    with pytest.raises(ValueError, match="guide_acts"):
        guided_objective(rand((4, 3, 3), 0))
    with pytest.raises(TypeError, match="guide_acts"):
        guided_objective(torch.ones(1, 2, 3, 3, dtype=torch.int64))
    objective = guided_objective(rand((2, 4, 3, 3), 0))
    with pytest.raises(ValueError, match="channels"):
        objective(rand((2, 5, 3, 3), 1))
    with pytest.raises(ValueError, match="batch"):
        objective(rand((3, 4, 3, 3), 1))


def select_twin(acts, mode, count):
    rows = []
    for b in range(acts.shape[0]):
        means = [float(acts[b, c].double().mean()) for c in range(acts.shape[1])]
        if mode == "strongest":
            key = lambda c: -means[c]
        elif mode == "weakest":
            key = lambda c: means[c]
        else:
            centre = sum(means) / len(means)
            key = lambda c: abs(means[c] - centre)
        rows.append(sorted(range(len(means)), key=key)[:count])
    return torch.tensor(rows)


@pytest.mark.parametrize("mode", ["strongest", "weakest", "average"])
@pytest.mark.parametrize("shape, count", [((1, 7, 3, 5), 3), ((4, 10, 5, 5), 1), ((2, 6, 1, 9), 6)])
def test_select_channels_matches_twin(mode, shape, count):
    acts = rand(shape, hash((mode, shape)) % 997)
    got = select_channels(acts, mode, count)
    assert got.dtype == torch.int64 and got.shape == (shape[0], count)
    assert torch.equal(got, select_twin(acts, mode, count))
    assert torch.equal(select_channels(acts.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), mode, count), got)


def test_select_channels_bad_arguments():
    acts = rand((1, 4, 3, 3), 0)
    with pytest.raises(ValueError, match="mode"):
        select_channels(acts, "loudest", 2)
    with pytest.raises(ValueError, match="count"):
        select_channels(acts, "strongest", 5)
    with pytest.raises(TypeError, match="count"):
        select_channels(acts, "strongest", 2.0)
    with pytest.raises(ValueError, match="acts"):
        select_channels(acts[0], "strongest", 2)


@pytest.mark.parametrize("base", ["l2", "mean"])
def test_channel_objective_matches_twin(base):
    a = rand((3, 9, 4, 5), 7).transpose(2, 3)
    index = torch.tensor([[1, 8], [0, 3], [5, 5]])
    loss, g = grad_of(channel_objective(index, base), a)
    x = a.detach().double().requires_grad_(True)
    want = sum(
        (0.5 * (x[b, c] ** 2).sum() for b in range(3) for c in index[b].tolist())
        if base == "l2" else
        (torch.stack([x[b, c] for c in index[b].tolist()]).mean() for b in range(3))
    )
    (want_g,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(loss.double(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g.double(), want_g, rtol=1e-6, atol=1e-6)
    shared, _ = grad_of(channel_objective(index[:1], base), a)  # one row for the whole batch
    rows = channel_objective(index[:1].expand(3, -1), base)(a)
    torch.testing.assert_close(shared, rows)


def test_channel_objective_bad_arguments():
    with pytest.raises(TypeError, match="index"):
        channel_objective(torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match="index"):
        channel_objective(torch.tensor([[-1]]))
    with pytest.raises(ValueError, match="base"):
        channel_objective(torch.tensor([[1]]), base="max")
    with pytest.raises(ValueError, match="channels"):
        channel_objective(torch.tensor([[9]]))(rand((1, 4, 2, 2), 0))


def test_categories_and_class_indices():
    names = imagenet_categories()
    assert len(names) == 1000 and names[281] == "tabby"
    from torchvision.models import GoogLeNet_Weights

    assert imagenet_categories(GoogLeNet_Weights.IMAGENET1K_V1) == names
    assert imagenet_categories({"categories": ["a", "b"]}) == ["a", "b"]
    assert class_indices(["tabby cat", 281, "Tiger_Shark", "GOLDEN retriever"], names) == [281, 281, 3, 207]
    assert class_indices(7, names) == [7]
    with pytest.raises(ValueError, match="tabby"):
        class_indices("tabyy", names)
    with pytest.raises(ValueError, match="tiger cat"):
        class_indices("cat", names)
    with pytest.raises(ValueError, match="ambiguous"):
        class_indices("big dog", ["big", "dog"])
    with pytest.raises(ValueError, match="1000"):
        class_indices([1000], names)
    with pytest.raises(TypeError, match="classes"):
        class_indices([True], names)
    with pytest.raises(TypeError, match="weights_meta"):
        imagenet_categories(3)


def test_class_objective_matches_twin_and_composes():
    logits = rand((3, 1000), 5)
    objective = class_objective([281, 3, 281])
    loss, g = grad_of(objective, logits)
    want = sum(float(logits[b, c]) for b in range(3) for c in (281, 3, 281))
    assert abs(float(loss) - want) < 1e-4
    assert g[:, 281].eq(2).all() and g[:, 3].eq(1).all() and g.sum() == 9
    torch.testing.assert_close(class_objective([5])(logits.view(3, 1000, 1, 1)), logits[:, 5].sum())
    with pytest.raises(ValueError, match="logits"):
        class_objective([5])(rand((1, 4), 0))
    with pytest.raises(TypeError, match="indices"):
        class_objective("5")

    a = rand((3, 4, 2, 2), 6)
    total = weighted_sum([("fc", 0.5, objective), ("block", 2.0, channel_objective(torch.tensor([[1]])))])
    torch.testing.assert_close(total({"fc": logits, "block": a}), 0.5 * objective(logits) + 2.0 * 0.5 * (a[:, 1] ** 2).sum())
    with pytest.raises(TypeError, match="term"):
        weighted_sum([("fc", objective)])


def test_compose_picks_the_per_layer_source_and_says_whether_it_is_static():
    from fastdream.objectives import Context, ObjectivePlan, compose

    acts = {"a": rand((2, 4, 3, 3), 7), "fc": rand((2, 10), 8)}
    plain = compose(ObjectivePlan({"a": 1.0}, classes={3: 0.5}, logits_layer="fc"))
    assert plain.static and [t[0] for t in plain.terms] == ["a", "fc"]
    torch.testing.assert_close(plain(acts), 0.5 * (acts["a"] ** 2).sum() + 0.5 * acts["fc"][:, 3].sum())

    calls = []

    def features(x):
        calls.append(x.shape)
        return {"a": rand((1, 4, 3, 3), 9)}

    context = Context(features, torch.device("cpu"), lambda: torch.rand(1, 3, 8, 8), {})
    guided = compose(ObjectivePlan({"a": 1.0}, guide=torch.rand(3, 8, 8)), context)
    again = compose(ObjectivePlan({"a": 1.0}, guide=torch.rand(3, 8, 8)), context)
    assert not guided.static and not again.static and len(calls) == 1  # the guide's features: once (memo)
    ranked = compose(ObjectivePlan({"a": 1.0}, channel_mode="strongest", channel_count=2), context)
    assert not ranked.static and len(calls) == 2
    with pytest.raises(ValueError, match="context"):
        compose(ObjectivePlan({"a": 1.0}, channel_mode="weakest"))
