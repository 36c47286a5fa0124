"""Scale: tiled gradients within a memory budget, threads, dream_many, stream."""
import threading

import pytest
import torch

import fastdream
import fastdream.engine as engine_module
from fastdream.models import LayerTap, get_spec
from fastdream.models.prepare import freeze
from fastdream.tiles import tile_for_budget, tile_regions, tiled_gradient

FAST = dict(octaves=1, iterations=2)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def photo():
    img = fastdream.sample_image().float()[None] / 255
    return torch.nn.functional.interpolate(img, size=(256, 384), mode="bilinear", antialias=True).clamp(0, 1)


def energy(image):
    spec = get_spec("efficientnet_lite0")
    model = freeze(spec.build("default"))
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        a = LayerTap(model, ["_blocks.9"])((image - mean) / std)["_blocks.9"]
    return float(0.5 * (a.double() ** 2).sum())


# -- the tile grid --------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,tile,offset", [(10, 7, 4, (0, 0)), (10, 7, 4, (3, 1)), (5, 5, 8, (2, 2)), (9, 13, 3, (7, 11))])
def test_tile_regions_cover_once(h, w, tile, offset):
    count = torch.zeros(h, w, dtype=torch.int32)
    for y0, y1, x0, x1 in tile_regions(h, w, tile, offset):
        assert 0 < y1 - y0 <= tile and 0 < x1 - x0 <= tile
        count[y0:y1, x0:x1] += 1
    assert torch.equal(count, torch.ones_like(count))


def test_tile_regions_by_hand():
    assert tile_regions(10, 7, 4, (3, 1)) == [
        (0, 3, 0, 1), (0, 3, 1, 5), (0, 3, 5, 7),
        (3, 7, 0, 1), (3, 7, 1, 5), (3, 7, 5, 7),
        (7, 10, 0, 1), (7, 10, 1, 5), (7, 10, 5, 7),
    ]


def test_tiled_gradient_assembles_the_full_gradient():
    """A pointwise "model": every window's gradient is exact, so tiles must reassemble it exactly."""
    x = _rand(2, 3, 37, 53)

    def grad(v):
        return 2 * v + torch.sin(v)

    torch.testing.assert_close(tiled_gradient(grad, x, 8, 0, (5, 3)), grad(x), rtol=0, atol=0)
    torch.testing.assert_close(tiled_gradient(grad, x, 64, 4), grad(x), rtol=0, atol=0)


def test_tiled_gradient_margin_gives_context(photo):
    d = fastdream.Dreamer(precision="fp32")
    prepared = d._engine.prepare(torch.device("cpu"))

    def grad(v):
        v = v.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(d._engine.objective(prepared.features(v)), v)
        return g

    full = grad(photo)
    err = {m: float((tiled_gradient(grad, photo, 96, m, (32, 64)) - full).abs().mean() / full.abs().mean())
           for m in (0, 64)}
    assert err[64] < 0.15 and err[64] < 0.25 * err[0]
    # Off the feature grid, the same windows see another phase of the strided network: why tiles,
    # margins and offsets are kept to multiples of ALIGN.
    unaligned = float((tiled_gradient(grad, photo, 96, 64, (17, 41)) - full).abs().mean() / full.abs().mean())
    assert unaligned > 3 * err[64]


def test_tile_for_budget_by_hand():
    # fixed: 7 buffers × 1×3×1000×1000 × 4 B = 84e6; per pixel 1.5 × 1000 B; left 100e6 - 84e6 = 16e6
    # → sqrt(16e6 / 1500) = 103.3 → 103 - 2·10 = 83 → 64, the multiple of 32 below
    assert tile_for_budget(100_000_000, 1000.0, 1, 1000, 1000, 10, 16) == 64
    assert tile_for_budget(10**12, 1000.0, 1, 1000, 1000, 10, 16) is None  # fits whole
    with pytest.raises(ValueError, match="max_memory: .* is too small"):
        tile_for_budget(90_000_000, 1000.0, 1, 1000, 1000, 10, 64)


# -- tiled dreams -----------------------------------------------------------------------------------


def test_tiled_and_untiled_agree_statistically(photo):
    options = dict(octaves=2, iterations=5, precision="fp32")
    whole = fastdream.Dreamer(**options)(photo, seed=0)
    tiled = fastdream.Dreamer(tile_size=96, **options)(photo, seed=0)
    change_whole, change_tiled = float((whole - photo).abs().mean()), float((tiled - photo).abs().mean())
    assert abs(change_tiled / change_whole - 1) < 0.1
    gain_whole, gain_tiled = energy(whole) / energy(photo), energy(tiled) / energy(photo)
    assert gain_whole > 1.3 and abs(gain_tiled / gain_whole - 1) < 0.1


def _ripple(out, image, tile):
    """Peak-to-peak of the change map folded by the tile period, over its mean (rows and columns)."""
    change = (out - image).abs().mean(dim=(0, 1))
    cols = torch.stack([change[:, k::tile].mean() for k in range(tile)])
    rows = torch.stack([change[k::tile, :].mean() for k in range(tile)])
    return max(float((p.max() - p.min()) / p.mean()) for p in (cols, rows))


def test_no_seams_at_tile_borders(photo, monkeypatch):
    """No jitter (the worst case for seams), 64-px tiles with the default 64-px margin: the change
    map has no more periodic structure at the tile period than an untiled dream. The control, no
    margin and a grid fixed in place, leaves a clear pattern: the measure can see seams."""
    options = dict(octaves=1, iterations=8, precision="fp32", step_size=0.02, jitter=0)
    untiled = fastdream.Dreamer(**options)(photo, seed=0)
    tiled = fastdream.Dreamer(tile_size=64, **options)(photo, seed=0)
    monkeypatch.setattr(engine_module, "grid_offsets", lambda iterations, tile, generator: [(0, 0)] * iterations)
    control = fastdream.Dreamer(tile_size=64, tile_margin=0, **options)(photo, seed=0)
    for period in (32, 64):
        assert _ripple(tiled, photo, period) < 1.3 * _ripple(untiled, photo, period)
    assert _ripple(control, photo, 64) > 2 * _ripple(untiled, photo, 64)


def test_windows_respect_the_tile_size():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1))
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    fastdream.dream(_rand(3, 150, 210), model=model, layers="2", tile_size=40, tile_margin=8, **FAST)
    # tile 40 → 32, margin 8 → 32 (multiples of ALIGN): windows of at most 96 px a side
    assert max(max(s) for s in seen) <= 32 + 2 * 32
    assert len(seen) >= 2 * 20  # 2 iterations × at least 5×7 windows


def test_max_memory_picks_tiles_and_auto_runs(photo):
    # 48 MiB: below the untiled need and above the smallest tile's, for the 377–900 bytes of saved
    # activations per pixel measured across torch versions
    d = fastdream.Dreamer(max_memory=48 * 2**20, **FAST)
    engine = d._engine
    tilings = engine.tilings(engine.prepare(torch.device("cpu")), 1, [(256, 384)], torch.Generator().manual_seed(0))
    assert tilings[0] is not None and 32 <= tilings[0].tile < 256 and tilings[0].tile % 32 == 0
    assert d(photo, seed=0).shape == photo.shape
    assert fastdream.Dreamer(max_memory="auto", **FAST)(photo, seed=0).shape == photo.shape


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(max_memory=0), ValueError, "max_memory must be >= 1"),
    (dict(max_memory="lots"), TypeError, "max_memory must be an int"),
    (dict(tile_size=8), ValueError, "tile_size must be >= 32"),
    (dict(tile_margin=-1), ValueError, "tile_margin must be >= 0"),
])
def test_bad_scale_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastdream.Dreamer(**kwargs)


def test_budget_too_small_is_a_clear_error(photo):
    with pytest.raises(ValueError, match="max_memory: .* is too small"):
        fastdream.Dreamer(max_memory=1000, **FAST)(photo)


# -- threads --------------------------------------------------------------------------------------


def test_one_dreamer_from_eight_threads():
    d = fastdream.Dreamer(octaves=2, iterations=2)
    images = [_rand(3, 40 + 4 * i, 44, seed=i) for i in range(8)]
    serial = [d(img, seed=i) for i, img in enumerate(images)]
    results, failures = [None] * 8, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = d(images[i], seed=i)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    for got, want in zip(results, serial):
        assert torch.equal(got, want)


# -- dream_many ----------------------------------------------------------------------------------


def test_dream_many_groups_by_size_and_keeps_order():
    d = fastdream.Dreamer(**FAST)
    sizes = [(40, 48), (48, 40), (40, 48), (40, 48), (48, 40), (56, 56), (40, 48)]
    images = [_rand(3, h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    outs = list(d.dream_many(images, batch_size=2, seed=3))
    assert [tuple(o.shape[-2:]) for o in outs] == sizes
    # The same batches, by hand: window of 8 holds all 7; groups in first-seen order, chunks of 2.
    groups = [[0, 2], [3, 6], [1, 4], [5]]
    for k, chunk in enumerate(groups):
        want = d(torch.stack([images[i] for i in chunk]), seed=3 + k)
        for j, i in enumerate(chunk):
            assert torch.equal(outs[i], want[j]), (k, i)


def test_dream_many_prefetch_off_is_the_same_and_input_untouched():
    d = fastdream.Dreamer(**FAST)
    images = [_rand(3, 40, 40, seed=i) for i in range(5)]
    before = [img.clone() for img in images]
    a = list(d.dream_many(iter(images), batch_size=2, seed=0, prefetch=True))
    b = list(d.dream_many(images, batch_size=2, seed=0, prefetch=False))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(images, before))


def test_prefetch_reads_with_one_torch_thread_and_only_for_a_gpu():
    """The reader thread computes with one torch thread (a second parallel pool slows the
    dreaming thread's); the caller's thread count stays; by default it reads ahead only for a GPU."""
    import threading

    d = fastdream.Dreamer(**FAST)
    seen = []

    def decode():
        for i in range(3):
            image = _rand(3, 40, 40, seed=i)
            image.add(1).sum()  # a parallel op of this thread first (its lazy OpenMP init)
            seen.append((threading.current_thread().name, torch.get_num_threads()))
            yield image

    threads = torch.get_num_threads()
    list(d.dream_many(decode(), seed=0, prefetch=True))
    assert seen == [("fastdream-prefetch", 1)] * 3 and torch.get_num_threads() == threads
    seen.clear()
    list(d.dream_many(decode(), seed=0))  # a CPU Dreamer: read on the caller's thread
    assert seen == [(threading.current_thread().name, threads)] * 3
    with pytest.raises(TypeError, match="prefetch must be a bool, got str"):
        list(d.dream_many(decode(), prefetch="yes"))


def test_dream_many_reports_bad_items_in_place():
    d = fastdream.Dreamer(**FAST)

    def decode():
        yield _rand(3, 40, 40)
        yield _rand(3, 8, 8)  # too small for the model
        yield "not an image"
        yield _rand(3, 40, 40, seed=1)

    outs = list(d.dream_many(decode(), batch_size=4, errors="return"))
    assert isinstance(outs[0], torch.Tensor) and isinstance(outs[3], torch.Tensor)
    assert isinstance(outs[1], ValueError) and "needs at least" in str(outs[1])
    assert isinstance(outs[2], TypeError)
    with pytest.raises(ValueError, match="needs at least"):
        list(d.dream_many([_rand(3, 8, 8)]))


def test_dream_many_hands_over_a_reader_error():
    d = fastdream.Dreamer(**FAST)

    def decode():
        yield _rand(3, 40, 40)
        raise OSError("cannot read broken.png")

    for prefetch in (True, False):  # read on a worker thread or in place: the same
        outs = list(d.dream_many(decode(), errors="return", prefetch=prefetch))
        assert isinstance(outs[0], torch.Tensor) and isinstance(outs[1], OSError)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(errors="ignore"), ValueError, "errors must be"),
    (dict(seed=-3), ValueError, "seed must be in"),
])
def test_dream_many_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        list(fastdream.Dreamer(**FAST).dream_many([_rand(3, 40, 40)], **kwargs))


# -- stream --------------------------------------------------------------------------------------


def test_stream_blends_the_previous_dreamed_frame():
    d = fastdream.Dreamer(**FAST)
    frames = [(_rand(3, 40, 44, seed=i) * 255).to(torch.uint8) for i in range(3)]
    outs = list(d.stream(frames, blend=0.25, seed=9))
    assert all(o.dtype == torch.uint8 and o.shape == (3, 40, 44) for o in outs)
    assert torch.equal(outs[0], d(frames[0], seed=9))
    mixed = torch.lerp(frames[1].float() / 255, outs[0].float() / 255, 0.25)
    want = d(mixed, seed=10).mul(255).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(outs[1], want)
    plain = list(d.stream(frames, seed=9))
    assert torch.equal(plain[1], d(frames[1], seed=10))


def test_stream_rejects_mixed_sizes_and_bad_blend():
    d = fastdream.Dreamer(**FAST)
    with pytest.raises(ValueError, match="frames must all have one shape"):
        list(d.stream([_rand(3, 40, 40), _rand(3, 44, 40)]))
    with pytest.raises(ValueError, match=r"blend must be in \[0, 1\)"):
        list(d.stream([_rand(3, 40, 40)], blend=1.0))


def test_dream_many_default_batch_on_the_cpu_holds_a_pixel_budget(monkeypatch):
    """On the CPU the default batch holds ``CPU_BATCH_PIXELS`` (here 2 images of 40×40, then 1)."""
    import fastdream.batching as batching

    monkeypatch.setattr(batching, "CPU_BATCH_PIXELS", 2 * 40 * 40 + 39)
    d = fastdream.Dreamer(**FAST)
    images = [_rand(3, 40, 40, seed=i) for i in range(3)] + [_rand(3, 48, 48, seed=3)]
    outs = list(d.dream_many(images, seed=4))
    for k, chunk in enumerate([[0, 1], [2], [3]]):
        want = d(torch.stack([images[i] for i in chunk]), seed=4 + k)
        for j, i in enumerate(chunk):
            assert torch.equal(outs[i], want[j]), (k, i)


# -- out of memory: the call again, in tiles ------------------------------------------------------


def _oom_once(monkeypatch):
    """``Engine.octaves`` runs out of memory the first time it is called untiled."""
    real, calls = engine_module.Engine.octaves, []

    def octaves(self, prepared, img, sizes, tables, tilings, progress):
        calls.append([t is not None for t in tilings])
        if not any(calls[-1]) and len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, prepared, img, sizes, tables, tilings, progress)

    monkeypatch.setattr(engine_module.Engine, "octaves", octaves)
    return calls


def test_out_of_memory_retries_tiled_within_what_is_free(photo, monkeypatch):
    budget = 48 * 2**20  # what the device "has free": the image needs tiles within it
    expected = fastdream.Dreamer(max_memory=budget, **FAST)(photo, seed=3)
    monkeypatch.setattr(engine_module, "available_memory", lambda device: budget)
    calls = _oom_once(monkeypatch)
    d = fastdream.Dreamer(**FAST)
    with pytest.warns(RuntimeWarning, match=r"out of memory on cpu; dreaming this call again in tiles of \d+ px"):
        out = d(photo, seed=3)
    assert calls == [[False], [True]]
    assert torch.equal(out, expected)  # the same call as one given that budget
    assert d.last_tiling is not None and d.last_tiling.tile % 32 == 0


def test_out_of_memory_with_a_budget_or_room_is_raised(photo, monkeypatch):
    _oom_once(monkeypatch)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="injected"):  # the caller chose the budget
        fastdream.Dreamer(max_memory=2**40, **FAST)(photo, seed=0)
    monkeypatch.setattr(engine_module, "available_memory", lambda device: 2**40)
    _oom_once(monkeypatch)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="says it should fit untiled; set max_memory="):
        fastdream.Dreamer(**FAST)(photo, seed=0)


def test_last_tiling_says_how_the_last_call_ran(photo):
    d = fastdream.Dreamer(tile_size=96, tile_margin=32, **FAST)
    assert d.last_tiling is None
    d(photo, seed=0)
    assert (d.last_tiling.tile, d.last_tiling.margin) == (96, 32)
    d(photo[..., :64, :64], seed=0)  # fits one tile
    assert d.last_tiling is None
