"""CUDA-graph iterations (``fastdream.graphs``): the cache, the capture/replay control flow (on the CPU
with a stand-in graph that replays a recorded callable), the Dreamer's wiring, and on CUDA the real
graphs against eager iterations.

The CUDA cases compare graph and eager dreams with cuDNN in deterministic mode: the same kernels run
in both, so they agree to float32 rounding (a dream is chaotic: any other difference would grow).
"""
from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
import torch.nn as nn

import fastdream
from fastdream import backends, engine as engine_module
from fastdream.graphs import WARMUP, FallbackNotice, GraphCache, GraphStepper
from fastdream.step import StepConfig, Stepper, Tiling



# -- the cache -----------------------------------------------------------------------------------


def test_cache_is_lru_bounded_and_counts_captures():
    cache = GraphCache(capacity=2)
    assert cache.get("a") is None and len(cache) == 0
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and "c" in cache and cache.captures == 3
    cache.mark_failed("a", "boom")
    assert "a" not in cache and cache.failed == {"a": "boom"}
    with pytest.raises(ValueError, match="capacity"):
        GraphCache(capacity=0)


def test_fallback_notice_warns_once():
    notice = FallbackNotice()
    with pytest.warns(RuntimeWarning, match="first reason"):
        notice.warn("first reason")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notice.warn("second reason")


# -- the control flow, on the CPU with a stand-in graph -----------------------------------------


class _FakeGraph:
    def __init__(self, fn):
        self.fn = fn
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.fn()


class FakeGraphStepper(GraphStepper):
    """GraphStepper on CPU tensors: the 'graph' re-runs the captured iteration on the static tensors."""

    fail = False

    def graphable(self, x, tiling):
        return tiling is None

    def _device(self, device):
        return contextlib.nullcontext()

    def _side_stream(self, device):
        return contextlib.nullcontext()

    def _capture(self, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return _FakeGraph(fn)


def _toy(seed=0):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
        conv.bias.zero_()
    conv.requires_grad_(False)

    def features(x):
        return {"a": torch.relu(conv(x))}

    def objective(acts):
        return 0.5 * (acts["a"] ** 2).sum()

    return conv, features, objective


def _inputs(batch, h, w, iterations, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, h, w, generator=gen) * 0.8 + 0.1
    shifts = torch.randint(-5, 6, (iterations, batch, 2), generator=gen).to(torch.int32)
    return x, shifts


def _steppers(cache=None, notice=None, transforms=()):
    conv, features, objective = _toy()
    config = StepConfig(0.02)
    eager = Stepper(features, objective, config, transforms)
    graph = FakeGraphStepper(features, objective, config, transforms,
                             cache=cache if cache is not None else GraphCache(),
                             notice=notice, model=conv)
    return eager, graph


@pytest.mark.parametrize("batch", [1, 3])
def test_replays_equal_eager_and_the_graph_is_reused(batch):
    cache = GraphCache()
    eager, graph = _steppers(cache, transforms=[lambda g: g * 2.0])
    for call in range(2):
        for h, w in [(12, 10), (17, 23)]:
            x, shifts = _inputs(batch, h, w, WARMUP + 4, seed=call)
            steps = []
            expected = eager.run(x.clone(), shifts)
            got = graph.run(x.clone(), shifts, on_step=lambda: steps.append(1))
            assert torch.equal(got, expected)
            assert len(steps) == WARMUP + 4
        assert cache.captures == 2, "one capture per octave shape, reused by the second call"
    entry = next(iter(cache._entries.values()))
    assert entry.graph.replays == 4 + (WARMUP + 4)  # first call after the warm-up, then every iteration


def test_short_octaves_tiling_and_zero_iterations_run_eagerly():
    cache = GraphCache()
    eager, graph = _steppers(cache)
    x, shifts = _inputs(2, 9, 11, WARMUP)
    assert torch.equal(graph.run(x.clone(), shifts), eager.run(x.clone(), shifts))
    assert torch.equal(graph.run(x.clone(), shifts[:0]), x)
    x, shifts = _inputs(1, 40, 40, WARMUP + 2)
    tiling = Tiling(32, 0, [(0, 0)] * (WARMUP + 2))
    assert torch.equal(graph.run(x.clone(), shifts, tiling=tiling), eager.run(x.clone(), shifts, tiling=tiling))
    assert cache.captures == 0 and not cache.failed


def test_capture_failure_falls_back_once_with_the_eager_result():
    cache, notice = GraphCache(), FallbackNotice()
    eager, graph = _steppers(cache, notice)
    graph.fail = True
    x, shifts = _inputs(2, 13, 15, WARMUP + 3)
    steps = []
    with pytest.warns(RuntimeWarning, match="operation not permitted"):
        got = graph.run(x.clone(), shifts, on_step=lambda: steps.append(1))
    assert torch.equal(got, eager.run(x.clone(), shifts)) and len(steps) == WARMUP + 3
    assert len(cache.failed) == 1 and cache.captures == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failed key runs eagerly now; another key does not warn again
        assert torch.equal(graph.run(x.clone(), shifts), eager.run(x.clone(), shifts))
        x2, shifts2 = _inputs(1, 8, 8, WARMUP + 1)
        assert torch.equal(graph.run(x2.clone(), shifts2), eager.run(x2.clone(), shifts2))
    assert len(cache.failed) == 2


def _capture_out_of_memory(fn):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected in the capture)")


def _capture_end_fails_after_out_of_memory(fn):
    try:
        _capture_out_of_memory(fn)
    finally:  # what ending the capture may raise over it
        raise RuntimeError("operation failed due to a previous error during capture")


@pytest.mark.parametrize("out_of_memory", [_capture_out_of_memory, _capture_end_fails_after_out_of_memory])
def test_out_of_memory_in_a_capture_is_raised_and_the_key_stays_graphable(out_of_memory):
    # the engine's out-of-memory retry dreams the call again in tiles; the shape is not at fault
    cache, notice = GraphCache(), FallbackNotice()
    eager, graph = _steppers(cache, notice)
    real_capture = graph._capture

    graph._capture = out_of_memory
    x, shifts = _inputs(2, 13, 15, WARMUP + 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "capture failed" notice
        with pytest.raises(torch.cuda.OutOfMemoryError, match="injected"):
            graph.run(x.clone(), shifts)
    assert not cache.failed and cache.captures == 0 and not notice.warned
    graph._capture = real_capture  # memory free again: the same key captures
    assert torch.equal(graph.run(x.clone(), shifts), eager.run(x.clone(), shifts))
    assert cache.captures == 1 and not cache.failed


def test_capture_is_thread_local(monkeypatch):
    # a stand-in for torch.cuda.graph where no GPU exists: the mode and the shared pool are passed
    seen = []

    @contextlib.contextmanager
    def fake_graph(graph, pool=None, capture_error_mode="global", **kwargs):
        seen.append((graph, pool, capture_error_mode))
        yield

    monkeypatch.setattr(torch.cuda, "graph", fake_graph)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: "graph")
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    _, features, objective = _toy()
    stepper = GraphStepper(features, objective, StepConfig(0.01), cache=GraphCache())
    ran = []
    assert stepper._capture(lambda: ran.append(1)) == "graph"
    assert seen == [("graph", "pool", "thread_local")] and ran == [1]


def test_key_follows_objective_config_and_weights():
    conv, features, objective = _toy()
    x = torch.zeros(2, 3, 8, 8)
    cache = GraphCache()
    base = GraphStepper(features, objective, StepConfig(0.01), cache=cache, model=conv)
    same = GraphStepper(features, objective, StepConfig(0.01), cache=cache, model=conv)
    assert base.key(x) == same.key(x)
    assert base.key(x) != base.key(torch.zeros(2, 3, 8, 9))
    other_objective = GraphStepper(features, lambda a: objective(a), StepConfig(0.01), cache=cache,
                                   model=conv)
    assert other_objective.key(x) != base.key(x)
    assert GraphStepper(features, objective, StepConfig(0.02), cache=cache,
                        model=conv).key(x) != base.key(x)
    assert GraphStepper(features, objective, StepConfig(0.01), cache=cache, model=conv,
                        signature=(1.0, None)).key(x) != base.key(x)
    conv.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)  # moved: a new address
    assert GraphStepper(features, objective, StepConfig(0.01), cache=cache,
                        model=conv).key(x) != base.key(x)


def test_cpu_graphable_is_false():
    _, features, objective = _toy()
    stepper = GraphStepper(features, objective, StepConfig(0.01), cache=GraphCache())
    assert not stepper.graphable(torch.zeros(1, 3, 4, 4), None)


# -- the Dreamer's wiring --------------------------------------------------------------------------


def test_cuda_graphs_option_is_checked():
    with pytest.raises(TypeError, match="cuda_graphs must be a bool"):
        fastdream.Dreamer(cuda_graphs=1)
    assert fastdream.Dreamer(cuda_graphs=False).cuda_graphs is False


def test_cpu_path_never_builds_a_graph_stepper(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("GraphStepper built on the CPU path")

    monkeypatch.setattr(engine_module, "GraphStepper", forbidden)
    x = torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(0))
    out = fastdream.Dreamer(octaves=2, iterations=WARMUP + 1, cuda_graphs=True)(x, seed=0)
    assert out.shape == x.shape


# -- CUDA -----------------------------------------------------------------------------------------


@pytest.fixture
def deterministic(monkeypatch):
    if backends.select_backend("cuda") != "cuda":
        pytest.skip("fastdream._C was built without CUDA kernels")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _captures(d: fastdream.Dreamer) -> int:
    return sum(p.graphs.captures for p in d._engine.prepared.values())


CUDA_OPTIONS = dict(octaves=2, iterations=WARMUP + 3)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("precision", ["fp32", "auto"])
@pytest.mark.cuda
def test_cuda_graph_dream_equals_eager(deterministic, batch, precision):
    x = torch.rand(batch, 3, 72, 90, generator=torch.Generator().manual_seed(batch)).cuda()
    graphs = fastdream.Dreamer(precision=precision, **CUDA_OPTIONS)
    eager = fastdream.Dreamer(precision=precision, cuda_graphs=False, **CUDA_OPTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        first = graphs(x, seed=5)
    expected = eager(x, seed=5)
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-5)
    assert _captures(graphs) == 2 and _captures(eager) == 0  # two octave shapes
    again = graphs(x, seed=5)  # every iteration a replay now
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-5)
    assert _captures(graphs) == 2, "the second call must reuse the cached graphs"
    other = graphs(x, seed=6)
    torch.testing.assert_close(other, eager(x, seed=6), rtol=0, atol=1e-5)


@pytest.mark.cuda
def test_cuda_capture_failure_warns_once_and_gives_the_eager_result(deterministic, monkeypatch):
    def broken(self, fn):
        raise RuntimeError("capture refused")

    monkeypatch.setattr(GraphStepper, "_capture", broken)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).cuda()
    graphs = fastdream.Dreamer(**CUDA_OPTIONS)
    expected = fastdream.Dreamer(cuda_graphs=False, **CUDA_OPTIONS)(x, seed=1)
    with pytest.warns(RuntimeWarning, match="capture refused") as record:
        got = graphs(x, seed=1)
    assert sum("capture refused" in str(w.message) for w in record) == 1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        torch.testing.assert_close(graphs(x, seed=1), expected, rtol=0, atol=1e-5)
    assert _captures(graphs) == 0


@pytest.mark.cuda
def test_cuda_tiled_octaves_run_eagerly(deterministic):
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0)).cuda()
    options = dict(CUDA_OPTIONS, tile_size=64, tile_margin=32)
    graphs = fastdream.Dreamer(**options)
    got = graphs(x, seed=2)
    assert _captures(graphs) == 0
    torch.testing.assert_close(got, fastdream.Dreamer(cuda_graphs=False, **options)(x, seed=2), rtol=0, atol=1e-5)


@pytest.mark.cuda
def test_cuda_graph_stepper_with_smoothing_and_progress(deterministic):
    x = torch.rand(3, 3, 80, 64, generator=torch.Generator().manual_seed(3)).cuda()
    options = dict(CUDA_OPTIONS, smoothing=1.0)
    graphs = fastdream.Dreamer(**options)
    got = graphs(x, seed=4)
    assert _captures(graphs) == 2
    torch.testing.assert_close(got, fastdream.Dreamer(cuda_graphs=False, **options)(x, seed=4), rtol=0, atol=1e-5)


@pytest.mark.cuda
def test_cuda_capture_and_another_threads_cuda_work_coexist(deterministic):
    # the iteration's forward pauses inside the capture until another thread has allocated new CUDA
    # memory (cudaMalloc) and synchronised (.item()), as the server's encode thread and dream_many's
    # read-ahead do; in "global" capture mode either call would fail the capture
    import threading

    conv, _, objective = _toy()
    conv = conv.cuda()
    inside, done, errors = threading.Event(), threading.Event(), []

    def other_thread():
        try:
            inside.wait(30)
            for k in range(4):
                big = torch.full((2**20 + 4099 * k,), 0.5, device="cuda")  # new sizes: fresh blocks (no RNG)
                assert float(big.sum()) == 0.5 * big.numel()
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            done.set()

    def features(x):
        if torch.cuda.is_current_stream_capturing() and not inside.is_set():
            inside.set()
            assert done.wait(30), "the other thread did not finish"
        return {"a": torch.relu(conv(x))}

    cache = GraphCache()
    graph = GraphStepper(features, objective, StepConfig(0.02), cache=cache, model=conv)
    eager = Stepper(lambda x: {"a": torch.relu(conv(x))}, objective, StepConfig(0.02))
    x, shifts = _inputs(2, 24, 20, WARMUP + 3)
    x, shifts = x.cuda(), shifts.cuda()
    worker = threading.Thread(target=other_thread)
    worker.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "capture failed"
        got = graph.run(x.clone(), shifts)
    worker.join(30)
    assert inside.is_set() and not errors and cache.captures == 1 and not cache.failed
    torch.testing.assert_close(got, eager.run(x.clone(), shifts), rtol=0, atol=1e-6)


@pytest.mark.cuda
def test_cuda_out_of_memory_in_a_capture_retries_in_tiles(deterministic, monkeypatch):
    real, calls = GraphStepper._capture, []

    def capture(self, fn):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected in the capture)")
        return real(self, fn)

    monkeypatch.setattr(GraphStepper, "_capture", capture)
    monkeypatch.setattr(engine_module, "tile_for_budget", lambda *args, **kwargs: 64)  # "what is free"
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0)).cuda()
    d = fastdream.Dreamer(**CUDA_OPTIONS)
    with pytest.warns(RuntimeWarning, match="out of memory on cuda") as record:
        out = d(x, seed=1)
    assert not any("capture failed" in str(w.message) for w in record)
    assert out.shape == x.shape and d.last_tiling is not None and d.last_tiling.tile == 64
    assert not any(p.graphs.failed for p in d._engine.prepared.values())
