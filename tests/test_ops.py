"""Tests of the fused kernels (``fastdream.ops``) against their reference twins (``fastdream._reference``).

Every case runs on CPU (the C++ kernels when the extension is built) and on CUDA (skipped without a
device). ``jitter`` is pure data movement and must be bit-exact (``torch.equal``). ``normalized_step_``
is compared with ``rtol=1e-5, atol=1e-6``: the kernels and torch both sum |grad| in double but in
another order, so the per-image factor may differ by a float32 ulp in rare cases; every other
operation (multiply, add, clip) follows torch's float32 order exactly, so on values of order 1 the
difference stays far below 1e-6.
"""
from __future__ import annotations

import os
import warnings
import zlib

import pytest
import torch

from fastdream import _extension, backends, ops
from fastdream._reference import jitter_ref, normalized_step_ref

# 1x1, odd, prime, W % 4 == 0 (vector paths), more than 3 channels, batch 1 and many, big enough for threads
SHAPES = [(1, 1, 1, 1), (1, 3, 7, 13), (4, 3, 31, 17), (2, 3, 97, 89), (3, 1, 16, 64), (8, 3, 32, 32), (2, 5, 8, 12)]
SHIFT_KINDS = ["small", "huge", "extreme"]
FLOATS = [torch.float32, torch.bfloat16, torch.float16]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def generator(*seed_parts) -> torch.Generator:
    """A CPU generator seeded from the test's parameters (stable across runs and processes)."""
    return torch.Generator().manual_seed(zlib.crc32(repr(seed_parts).encode()))


def make_shifts(batch: int, kind: str, gen: torch.Generator, device) -> torch.Tensor:
    if kind == "small":
        s = torch.randint(-20, 21, (batch, 2), generator=gen)
    elif kind == "huge":
        s = torch.randint(-(10**9), 10**9, (batch, 2), generator=gen)
    else:  # the int32 extremes and their neighbours
        choices = torch.tensor([INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, -1, 0])
        s = choices[torch.randint(0, len(choices), (batch, 2), generator=gen)]
    return s.to(torch.int32).to(device)


def rand_image(shape, gen, device, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 0.9 + 0.05).to(device=device, dtype=dtype)


def rand_grad(shape, gen, device, dtype=torch.float32, scale=1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype)


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t`` whose data starts one element past an aligned address."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


# ---------------------------------------------------------------------------------------- jitter


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", SHIFT_KINDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_jitter_is_bit_exact(device, shape, kind, dtype):
    gen = generator("jitter", shape, kind, dtype)
    src = rand_image(shape, gen, device, dtype)
    shifts = make_shifts(shape[0], kind, gen, device)
    before, shifts_before = src.clone(), shifts.clone()
    out = ops.jitter(src, shifts)
    assert out.dtype == dtype and out.shape == src.shape and out.is_contiguous()
    assert torch.equal(out, jitter_ref(src, shifts))
    assert torch.equal(src, before) and torch.equal(shifts, shifts_before)


def test_jitter_writes_into_out(device):
    gen = generator("out")
    src = rand_image((3, 3, 20, 24), gen, device)
    shifts = make_shifts(3, "small", gen, device)
    out = torch.full_like(src, float("nan"))
    result = ops.jitter(src, shifts, out=out)
    assert result is out
    assert torch.equal(out, jitter_ref(src, shifts))


@pytest.mark.parametrize("view", ["channels_last", "permuted", "sliced", "misaligned"])
def test_jitter_accepts_any_layout_of_src(device, view):
    gen = generator("layout", view)
    base = rand_image((2, 3, 24, 40), gen, device)
    if view == "channels_last":
        src = base.contiguous(memory_format=torch.channels_last)
    elif view == "permuted":
        src = base.transpose(2, 3).contiguous().transpose(2, 3)
    elif view == "sliced":
        src = rand_image((2, 3, 24, 80), gen, device)[..., ::2]
    else:
        src = misaligned(base)
    shifts = make_shifts(2, "small", gen, device)
    assert torch.equal(ops.jitter(src, shifts), jitter_ref(src.contiguous(), shifts))


# ------------------------------------------------------------------------------ normalized_step_


def assert_step_matches(img, grad, shifts, step_size, lo, hi):
    expected = normalized_step_ref(img.clone(), grad, shifts, step_size, lo, hi)
    grad_before = grad.clone()
    result = ops.normalized_step_(img, grad, shifts, step_size, lo, hi)
    assert result is img
    torch.testing.assert_close(img, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(grad, grad_before)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", SHIFT_KINDS)
@pytest.mark.parametrize("grad_dtype", FLOATS)
def test_step_matches_reference(device, shape, kind, grad_dtype):
    gen = generator("step", shape, kind, grad_dtype)
    img = rand_image(shape, gen, device)
    # fp16 gradients of 1e-5 are mostly subnormal: exercises the exact conversion
    grad = rand_grad(shape, gen, device, grad_dtype, scale=1e-5 if grad_dtype == torch.float16 else 1.0)
    shifts = make_shifts(shape[0], kind, gen, device)
    assert_step_matches(img, grad, shifts, 0.2, 0.0, 1.0)  # a big step: many values clip


@pytest.mark.parametrize("grad_dtype", FLOATS)
@pytest.mark.parametrize("layout", ["channels_last", "permuted", "sliced", "misaligned"])
@pytest.mark.parametrize("shape", [(2, 3, 31, 17), (3, 3, 16, 24), (1, 1, 1, 1)])
def test_step_gradient_layouts(device, grad_dtype, layout, shape):
    gen = generator("grad-layout", grad_dtype, layout, shape)
    img = rand_image(shape, gen, device)
    base = rand_grad(shape, gen, device, grad_dtype)
    if layout == "channels_last":  # read in place by the kernel
        grad = base.contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":  # neither NCHW nor NHWC: copied by the wrapper
        grad = base.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    elif layout == "sliced":
        grad = rand_grad(shape[:3] + (2 * shape[3],), gen, device, grad_dtype)[..., ::2]
    else:
        grad = misaligned(base)
    assert_step_matches(img, grad, make_shifts(shape[0], "huge", gen, device), 0.05, 0.0, 1.0)


@pytest.mark.parametrize(
    "lo, hi",
    [
        ([0.1, 0.2, 0.3], [0.8, 0.9, 0.95]),
        (0.25, [0.5, 0.75, 1.0]),
        ([-0.5], 2.0),
        (float("-inf"), float("inf")),
        (0.4, 0.4),
        (torch.tensor([0.0, 0.1, 0.2]), torch.tensor(0.9)),
    ],
)
def test_step_bounds(device, lo, hi):
    gen = generator("bounds", str(lo), str(hi))
    shape = (2, 3, 19, 20)
    img, grad = rand_image(shape, gen, device), rand_grad(shape, gen, device)
    assert_step_matches(img, grad, make_shifts(2, "small", gen, device), 0.3, lo, hi)


def test_step_images_are_independent(device):
    gen = generator("independent")
    img = rand_image((3, 3, 12, 12), gen, device)
    grad = rand_grad((3, 3, 12, 12), gen, device)
    grad[1] *= 1e4  # one image's gradient is far larger: the others must not notice
    grad[2] *= 1e-9
    assert_step_matches(img, grad, make_shifts(3, "small", gen, device), 0.01, 0.0, 1.0)


@pytest.mark.parametrize("grad_dtype", FLOATS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_step_is_scale_free(device, grad_dtype, layout):
    # the seed's step_size * g / mean|g|: a gradient scaled by a power of two (exact in every dtype,
    # down to 2^-24 for float16's normals) steps bit for bit the same; no epsilon swallows a small one
    gen = generator("scale-free", grad_dtype, layout)
    shape = (3, 3, 17, 24)
    img, shifts = rand_image(shape, gen, device), make_shifts(3, "huge", gen, device)
    grad = rand_grad(shape, gen, device)
    if grad_dtype == torch.float16:  # |g| >= 1, so that g * 2^-12 stays a normal float16
        grad = grad.sign() * (grad.abs() + 1.0)
    grad = grad.to(grad_dtype)
    factor = 2.0 ** (-12 if grad_dtype == torch.float16 else -90)
    tiny = grad * factor
    if layout == "channels_last":
        grad, tiny = (t.contiguous(memory_format=torch.channels_last) for t in (grad, tiny))
    assert torch.equal(tiny.float() / factor, grad.float())  # the scaled gradient is exact
    expected = ops.normalized_step_(img.clone(), grad, shifts, 0.05, 0.0, 1.0)
    assert float((expected - img).abs().mean()) > 0.01  # it stepped
    assert torch.equal(ops.normalized_step_(img.clone(), tiny, shifts, 0.05, 0.0, 1.0), expected)
    assert_step_matches(img.clone(), grad * 1e-20 if grad_dtype == torch.float32 else tiny, shifts, 0.05, 0.0, 1.0)


def test_step_of_an_all_zero_gradient_leaves_the_image(device):
    gen = generator("zero")
    shape = (3, 3, 9, 14)
    img, grad = rand_image(shape, gen, device), rand_grad(shape, gen, device)
    grad[1] = 0.0
    grad[2] = -0.0
    shifts = make_shifts(3, "small", gen, device)
    out = ops.normalized_step_(img.clone(), grad, shifts, 0.1, 0.0, 1.0)
    assert torch.equal(out[1:], img[1:]) and not torch.equal(out[0], img[0])
    assert_step_matches(img, grad, shifts, 0.1, 0.0, 1.0)


def test_step_of_a_subnormal_gradient_is_finite(device):
    # mean|g| ~ 1e-44: step_size / mean overflows float32; the factor saturates (no inf * 0 = NaN)
    gen = generator("subnormal")
    shape = (2, 3, 8, 8)
    img = rand_image(shape, gen, device)
    grad = torch.zeros(shape)
    grad.view(-1)[torch.randperm(grad.numel(), generator=gen)[:20]] = 1e-44
    grad = grad.to(device)
    shifts = make_shifts(2, "small", gen, device)
    out = ops.normalized_step_(img.clone(), grad, shifts, 0.1, float("-inf"), float("inf"))
    assert torch.isfinite(out).all() and not torch.equal(out, img)
    assert_step_matches(img, grad, shifts, 0.1, float("-inf"), float("inf"))


def test_step_is_deterministic_and_thread_independent():
    gen = generator("threads")
    shape = (2, 3, 97, 89)
    img, grad = rand_image(shape, gen, "cpu"), rand_grad(shape, gen, "cpu")
    shifts = make_shifts(2, "huge", gen, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(ops.normalized_step_(img.clone(), grad, shifts, 0.1, 0.0, 1.0))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


# ----------------------------------------------------------------------------------------- empty


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 3, 0, 8), (2, 3, 8, 0), (2, 0, 8, 8)])
def test_empty_tensors_return_early(device, shape):
    shifts = torch.zeros((shape[0], 2), dtype=torch.int32, device=device)
    src = torch.rand(shape, device=device)
    out = ops.jitter(src, shifts)
    assert out.shape == src.shape
    img = torch.rand(shape, device=device)
    assert ops.normalized_step_(img, torch.rand(shape, device=device), shifts, 0.1, 0.0, 1.0) is img


# ------------------------------------------------------------------------------------ bad input


def _bad_cases():
    x = torch.rand(2, 3, 8, 8)
    s = torch.zeros(2, 2, dtype=torch.int32)
    g = torch.randn(2, 3, 8, 8)
    wide = torch.rand(1, 65, 4, 4)
    s1 = torch.zeros(1, 2, dtype=torch.int32)
    j, st = ops.jitter, ops.normalized_step_
    return [
        ("src-type", lambda: j([[1.0]], s), TypeError, "ops.jitter: src must be a torch.Tensor"),
        ("src-dtype", lambda: j(x.double(), s), TypeError, "src must be a float32, bfloat16 or float16"),
        ("src-int", lambda: j(x.to(torch.int64), s), TypeError, "src"),
        ("src-dims", lambda: j(x[0], s), ValueError, "src must be a 4-D"),
        ("shifts-dtype", lambda: j(x, s.long()), TypeError,
         r"ops.jitter: shifts must be an int32 tensor of shape \[B, 2\] = \[2, 2\] on cpu, got int64 \[2, 2\] on cpu"),
        ("shifts-shape", lambda: j(x, s[:1]), ValueError, r"shifts must be .* got int32 \[1, 2\]"),
        ("shifts-3col", lambda: j(x, torch.zeros(2, 3, dtype=torch.int32)), ValueError, "shifts"),
        ("shifts-list", lambda: j(x, [[0, 0], [0, 0]]), TypeError, "shifts must be an int32 tensor"),
        ("shifts-device", lambda: j(x, s.to("meta")), ValueError, "shifts .* on meta"),
        ("out-type", lambda: j(x, s, out=5), TypeError, "out must be a torch.Tensor"),
        ("out-dtype", lambda: j(x, s, out=torch.empty_like(x, dtype=torch.float16)), TypeError, "out must be"),
        ("out-shape", lambda: j(x, s, out=torch.empty(2, 3, 8, 9)), ValueError, "out must be"),
        ("out-noncontig", lambda: j(x, s, out=torch.empty(2, 3, 8, 16)[..., ::2]), ValueError, "out must be"),
        ("out-aliases-src", lambda: j(x, s, out=x), ValueError, "out must not overlap src"),
        ("img-type", lambda: st(x.numpy(), g, s, 0.1, 0.0, 1.0), TypeError, "img must be a torch.Tensor"),
        ("img-dtype", lambda: st(x.half(), g, s, 0.1, 0.0, 1.0), TypeError, "img must be a float32"),
        ("img-noncontig", lambda: st(x.transpose(2, 3), g, s, 0.1, 0.0, 1.0), ValueError,
         "img must be contiguous"),
        ("grad-dtype", lambda: st(x, g.double(), s, 0.1, 0.0, 1.0), TypeError, "grad must be"),
        ("grad-shape", lambda: st(x, g[:, :2], s, 0.1, 0.0, 1.0), ValueError, "grad must have the shape"),
        ("grad-is-img", lambda: st(x, x, s, 0.1, 0.0, 1.0), ValueError, "grad and shifts must not overlap img"),
        ("step-shifts", lambda: st(x, g, s.long(), 0.1, 0.0, 1.0), TypeError,
         r"ops.normalized_step_: shifts must be an int32 tensor of shape \[B, 2\] = \[2, 2\]"),
        ("step_size-nan", lambda: st(x, g, s, float("nan"), 0.0, 1.0), ValueError, "step_size must be finite"),
        ("step_size-tensor", lambda: st(x, g, s, torch.tensor(0.1), 0.0, 1.0), TypeError, "step_size"),
        ("step_size-bool", lambda: st(x, g, s, True, 0.0, 1.0), TypeError, "step_size"),
        ("lo-above-hi", lambda: st(x, g, s, 0.1, [0.0, 0.9, 0.0], 0.5), ValueError, "lo must be <= hi"),
        ("lo-length", lambda: st(x, g, s, 0.1, [0.0, 0.1], 1.0), ValueError, "lo must be .* got 2 values"),
        ("lo-nan", lambda: st(x, g, s, 0.1, float("nan"), 1.0), ValueError, "lo must hold non-NaN"),
        ("hi-type", lambda: st(x, g, s, 0.1, 0.0, "1"), TypeError, "hi must be a float"),
        ("hi-bools", lambda: st(x, g, s, 0.1, 0.0, [True, 1.0, 1.0]), TypeError, "hi must be"),
        ("bounds-wide", lambda: st(wide, torch.rand_like(wide), s1, 0.1, [0.0] * 65, 1.0), ValueError,
         "at most 64"),
    ]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()])
def test_bad_arguments_are_refused_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_arguments_leave_inputs_untouched():
    x = torch.rand(2, 3, 8, 8)
    before = x.clone()
    with pytest.raises(ValueError):
        ops.normalized_step_(x, torch.randn_like(x), torch.zeros(2, 2, dtype=torch.int32), 0.1, 0.9, 0.1)
    assert torch.equal(x, before)


# ------------------------------------------------------------------------------------- backends


def test_extension_is_loaded_when_it_was_built():
    """A build that silently failed must not pass: only FASTDREAM_BUILD_EXT=0 excuses a missing _C."""
    if os.environ.get("FASTDREAM_BUILD_EXT", "").strip() == "0":
        pytest.skip("FASTDREAM_BUILD_EXT=0: pure-Python install")
    info = backends.backend_info()
    if info["build"] is None:  # setup.py records every build it runs, with or without the extension
        pytest.skip("a source tree run in place, never built (no fastdream/_build.json): nothing to load")
    assert info["extension"], f"fastdream._C did not load: {info['extension_error']}"
    assert info["devices"]["cpu"] == "cpu-extension"
    if os.environ.get("FASTDREAM_BUILD_CUDA", "").strip() == "1":
        assert info["cuda_compiled"], "FASTDREAM_BUILD_CUDA=1 but fastdream._C has no CUDA kernels"


def test_a_stale_build_is_refused(monkeypatch):
    # an in-place build not redone after a pull would call kernels whose arguments or arithmetic changed
    C = _extension.load()
    if C is None:
        pytest.skip("fastdream._C is not built")
    monkeypatch.setattr(C, "API_VERSION", _extension.API_VERSION - 1)
    for name, value in (("_loaded", False), ("_module", None), ("_error", None)):
        monkeypatch.setattr(_extension, name, value)
    assert _extension.load() is None
    assert "stale build" in _extension.import_error() and f"API {_extension.API_VERSION}" in _extension.import_error()
    assert backends.select_backend("cpu") == "reference"


def test_backend_info_and_select_backend():
    info = backends.backend_info()
    for key in ("extension", "cuda_compiled", "cuda_available", "cupy", "cuda_version", "devices"):
        assert key in info
    assert info["cuda_available"] == torch.cuda.is_available()
    names = {"cuda", "cpu-extension", "reference"}
    assert backends.select_backend(torch.device("cpu")) in names - {"cuda"}
    assert backends.select_backend("cuda") in names - {"cpu-extension"}
    assert backends.select_backend(torch.device("meta")) == "reference"
    assert info["devices"]["cpu"] == backends.select_backend("cpu")
    if info["cuda_compiled"]:
        assert info["cuda_version"] and info["cuda_archs"]


def test_fallback_gives_the_same_results_and_warns_once(device):
    gen = generator("fallback")
    shape = (2, 3, 31, 20)
    src, grad = rand_image(shape, gen, device), rand_grad(shape, gen, device)
    shifts = make_shifts(2, "huge", gen, device)
    fast_jitter = ops.jitter(src, shifts)
    fast_step = ops.normalized_step_(src.clone(), grad, shifts, 0.1, 0.0, 1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_extension, "_loaded", True)
        mp.setattr(_extension, "_module", None)
        mp.setattr(_extension, "_error", "ImportError: pretend the build failed")
        mp.setattr(ops, "_warned", set())
        assert backends.select_backend(src.device) == "reference"
        assert backends.backend_info()["extension"] is False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            slow_jitter = ops.jitter(src, shifts)
            slow_step = ops.normalized_step_(src.clone(), grad, shifts, 0.1, 0.0, 1.0)
            ops.normalized_step_(src.clone(), grad, shifts, 0.1, 0.0, 1.0)
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "fastdream._C" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert "pretend the build failed" in message and "pip install" in message
    assert torch.equal(slow_jitter, fast_jitter)
    torch.testing.assert_close(slow_step, fast_step, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- CUDA only


@pytest.mark.cuda
def test_cuda_ops_run_on_the_current_stream():
    gen = generator("stream")
    shape = (4, 3, 64, 48)
    src, grad = rand_image(shape, gen, "cuda"), rand_grad(shape, gen, "cuda", torch.bfloat16)
    shifts = make_shifts(4, "huge", gen, "cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = ops.jitter(src, shifts)
        img = src.clone()
        ops.normalized_step_(img, grad, shifts, 0.1, 0.0, 1.0)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(out, jitter_ref(src, shifts))
    torch.testing.assert_close(img, normalized_step_ref(src.clone(), grad, shifts, 0.1, 0.0, 1.0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_cuda_graph_replays_with_new_shifts():
    """Both ops read the shifts on the device and never sync: capture once, replay with new shifts."""
    if backends.select_backend("cuda") != "cuda":
        pytest.skip("fastdream._C was built without CUDA kernels")
    gen = generator("graph")
    shape = (2, 3, 40, 36)
    x = rand_image(shape, gen, "cuda")
    grad = rand_grad(shape, gen, "cuda")
    shifts = torch.zeros(2, 2, dtype=torch.int32, device="cuda")
    out = torch.empty_like(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture
        ops.jitter(x, shifts, out=out)
        ops.normalized_step_(x.clone(), grad, shifts, 0.1, 0.0, 1.0)
    torch.cuda.current_stream().wait_stream(side)
    img = x.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.jitter(x, shifts, out=out)
        ops.normalized_step_(img, grad, shifts, 0.1, 0.0, 1.0)
    for _ in range(3):
        new = make_shifts(2, "huge", gen, "cuda")
        shifts.copy_(new)
        start = x.clone()
        img.copy_(start)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, jitter_ref(x, new))
        torch.testing.assert_close(img, normalized_step_ref(start, grad, new, 0.1, 0.0, 1.0), rtol=1e-5, atol=1e-6)
