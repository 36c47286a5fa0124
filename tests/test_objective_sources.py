"""An objective is one file: this file adds two toy objectives (a per-layer one that minimises the
layer's energy, and a per-call one that reads the call's input) with nothing but a registered
``Source``, and dreams with them through the public API."""
import pytest
import torch
import torch.nn as nn

import fastdream
from fastdream.objectives import Source, register, unregister


def _energy(model, image):
    with torch.no_grad():
        return float((model(image.unsqueeze(0)) ** 2).mean())


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))


def quiet_terms(plan, context):
    """The toy: -0.5·sum(a²) at every layer, so the dream damps what the layer sees."""
    return [(name, weight, lambda a: -0.5 * (a.float() ** 2).sum()) for name, weight in plan.layers.items()]


@pytest.fixture
def toy():
    seen = []

    def terms(plan, context):
        seen.append((plan, context))
        return quiet_terms(plan, context)

    register(Source("quiet", terms, options=("objective",), priority=100, when=lambda plan: plan.objective == "l2"))
    try:
        yield seen
    finally:
        unregister("quiet")


OPTIONS = dict(layers="2", octaves=1, iterations=4, jitter=2, seed=3, step_size=0.02)


def test_a_toy_objective_in_one_file_is_what_the_dream_uses(toy):
    model, image = _model(), torch.rand(3, 24, 28, generator=torch.Generator().manual_seed(1))
    quiet = fastdream.Dreamer(model, **OPTIONS)
    assert len(toy) == 1 and toy[0][1] is None  # static: built once from the options, no call context
    out = quiet(image)
    unregister("quiet")
    loud = fastdream.Dreamer(model, **OPTIONS)(image)
    before = _energy(model, image)
    assert _energy(model, out) < before < _energy(model, loud)


def test_a_per_call_toy_objective_gets_the_call_context():
    contexts = []

    def terms(plan, context):
        contexts.append(context)
        first = context.first_octave()  # the call's input at the first octave size
        assert first.shape[-2:] == (24, 28)
        return quiet_terms(plan, context)

    register(Source("quiet-per-call", terms, static=False, priority=100, when=lambda plan: True))
    try:
        model = _model()
        dreamer = fastdream.Dreamer(model, **OPTIONS)
        image = torch.rand(3, 24, 28, generator=torch.Generator().manual_seed(2))
        out = dreamer(image)
        dreamer(image)
    finally:
        unregister("quiet-per-call")
    assert len(contexts) == 2 and contexts[0].device == torch.device("cpu")
    assert _energy(model, out) < _energy(model, image)


def test_a_source_must_read_declared_options():
    with pytest.raises(ValueError, match="'loudness'.*are not options"):
        Source("bad", quiet_terms, options=("loudness",))
    with pytest.raises(TypeError, match="register: source must be"):
        register(quiet_terms)
