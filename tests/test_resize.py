"""ops.resize_add vs the twin (resize_add_ref) and F.interpolate: bit-exact on the CPU, 1e-5 on CUDA/CuPy."""
import pytest
import torch
import torch.nn.functional as F

from fastdream import resize
from fastdream._reference import resize_add_ref
from fastdream.ops import resize_add
from fastdream.resize import cupy_available

def needs_cupy(test):
    skip = pytest.mark.skipif(not (torch.cuda.is_available() and cupy_available()), reason="needs CUDA and CuPy")
    return pytest.mark.cuda(skip(test))

# (img H, W), (detail h, w), target (H', W'): up, down, mixed, odd/prime, 1×1 sources and targets, same size
CASES = [
    ((37, 41), (26, 29), (37, 41)),   # the octave case: detail up, img same size (a copy)
    ((64, 48), (23, 17), (31, 29)),   # img down, detail up, primes
    ((13, 7), (13, 7), (53, 97)),     # both up, large odd ratio
    ((97, 53), (5, 3), (11, 13)),     # strong down-scaling
    ((1, 1), (1, 1), (7, 5)),         # 1×1 sources
    ((19, 23), (3, 2), (1, 1)),       # 1×1 target
    ((1, 9), (4, 1), (6, 1)),         # single rows and columns
    ((29, 31), (29, 31), (29, 31)),   # nothing to resize
    ((30, 40), (21, 29), (30, 17)),   # one side unchanged, the other down
]


def rand(*shape, seed=0, device="cpu"):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 0.5).to(device)


def interp(t, size):
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)


def layouts(t):
    """The same values: contiguous, channels_last, and a strided slice of a larger tensor."""
    wide = torch.cat([t, t + 1], dim=-1)[..., : t.shape[-1]]
    return {"contiguous": t, "channels_last": t.contiguous(memory_format=torch.channels_last), "sliced": wide}


# -- CPU: the twin, bit-exact ---------------------------------------------------------------------


@pytest.mark.parametrize("img_hw, det_hw, size", CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_cpu_matches_twin_bit_exact(img_hw, det_hw, size, batch):
    img, detail = rand(batch, 3, *img_hw, seed=1), rand(batch, 3, *det_hw, seed=2)
    base, x = resize_add(img, detail, size)
    ref_base, ref_x = resize_add_ref(img, detail, size)
    assert base.shape == x.shape == (batch, 3, *size)
    assert base.is_contiguous() and x.is_contiguous()
    assert torch.equal(base, ref_base) and torch.equal(x, ref_x)
    assert torch.equal(base, img.clone() if img_hw == size else interp(img, size))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_cpu_non_contiguous_inputs(layout):
    img, detail = rand(2, 3, 31, 29, seed=3), rand(2, 3, 17, 19, seed=4)
    img_v, det_v = layouts(img)[layout], layouts(detail)[layout]
    base, x = resize_add(img_v, det_v, (23, 37))
    ref_base, ref_x = resize_add_ref(img_v, det_v, (23, 37))
    assert torch.equal(base, ref_base) and torch.equal(x, ref_x) and x.is_contiguous()
    assert torch.allclose(x, resize_add_ref(img, detail, (23, 37))[1], atol=1e-6)  # same values, any layout


@pytest.mark.parametrize("size", [(41, 43), (20, 30)])
def test_cpu_detail_none_is_a_copy_of_base(size):
    img = rand(2, 3, 41, 43, seed=5)
    base, x = resize_add(img, None, size)
    assert torch.equal(base, img if size == (41, 43) else interp(img, size))
    assert torch.equal(x, base) and x.data_ptr() != base.data_ptr() and base.data_ptr() != img.data_ptr()


def test_cpu_inputs_unchanged():
    img, detail = rand(2, 4, 19, 21, seed=6), rand(2, 4, 9, 11, seed=7)
    before = img.clone(), detail.clone()
    base, x = resize_add(img, detail, (13, 17))
    ref_base, ref_x = resize_add_ref(img, detail, (13, 17))
    assert torch.equal(base, ref_base) and torch.equal(x, ref_x)
    assert torch.equal(img, before[0]) and torch.equal(detail, before[1])


def test_empty_batch():
    base, x = resize_add(torch.rand(0, 3, 5, 7), torch.rand(0, 3, 2, 2), (4, 4))
    assert base.shape == x.shape == (0, 3, 4, 4)


def test_a_failed_cupy_launch_falls_back_to_the_twin_once(monkeypatch):
    """The dispatch when the CuPy kernel compiled but its launch fails: this call and the later ones
    are the torch twin's, with one warning. Runs on the CPU: the device test and the launch stand in."""
    launches = []

    def launch(*args):
        launches.append(args)
        raise RuntimeError("cudaErrorLaunchOutOfResources (injected)")

    monkeypatch.setattr(resize, "_warned", set())
    monkeypatch.setattr(resize, "cupy_available", lambda: True)
    monkeypatch.setattr(resize, "_compiled", {None})  # "compiled" for the CPU device (index None)
    monkeypatch.setattr(resize, "cupy_usable", resize._cupy_usable)  # the real check, minus device.type
    monkeypatch.setattr(resize, "_launch_cupy", launch)
    img, detail = rand(2, 3, 9, 11, seed=10), rand(2, 3, 4, 5, seed=11)
    ref_base, ref_x = resize_add_ref(img, detail, (7, 13))
    with pytest.warns(RuntimeWarning, match="failed to launch on cpu .*injected.*Using the torch resize"):
        base, x = resize_add(img, detail, (7, 13))
    assert torch.equal(base, ref_base) and torch.equal(x, ref_x) and len(launches) == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        base, x = resize_add(img, detail, (7, 13))
    assert torch.equal(x, ref_x) and len(launches) == 1  # not tried again


@pytest.mark.cuda
def test_cuda_without_cupy_is_the_twin(monkeypatch):
    """The dispatch on a CUDA tensor with CuPy missing: the twin, with one warning (needs a GPU to run)."""
    monkeypatch.setattr(resize, "cupy_available", lambda: False)
    monkeypatch.setattr(resize, "_warned", set())
    img, detail = rand(2, 3, 9, 11, seed=8, device="cuda"), rand(2, 3, 4, 5, seed=9, device="cuda")
    with pytest.warns(RuntimeWarning, match="CuPy is not installed"):
        base, x = resize_add(img, detail, (7, 13))
    ref_base, ref_x = resize_add_ref(img, detail, (7, 13))
    assert torch.equal(base, ref_base) and torch.equal(x, ref_x)


# -- bad arguments --------------------------------------------------------------------------------

GOOD = dict(img=torch.rand(2, 3, 8, 8), detail=torch.rand(2, 3, 4, 4), size=(6, 6))
BAD = [
    ("img", [[1.0]], TypeError),
    ("img", torch.rand(2, 3, 8, 8).double(), TypeError),
    ("img", torch.rand(3, 8, 8), ValueError),
    ("img", torch.rand(2, 3, 0, 8), ValueError),
    ("detail", torch.rand(2, 3, 4, 4).half(), TypeError),
    ("detail", torch.rand(2, 4, 4, 4), ValueError),
    ("detail", torch.rand(1, 3, 4, 4), ValueError),
    ("detail", torch.rand(2, 3, 4), ValueError),
    ("detail", "zeros", TypeError),
    ("size", 6, TypeError),
    ("size", (6, 6, 6), ValueError),
    ("size", (6, 0), ValueError),
    ("size", (6.0, 6), TypeError),
    ("size", (True, 6), TypeError),
]


@pytest.mark.parametrize("name, value, error", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_name_the_argument(name, value, error):
    args = dict(GOOD, **{name: value})
    with pytest.raises(error, match=rf"ops.resize_add: {name}\b"):
        resize_add(**args)


# -- CUDA / CuPy: the fused kernel ----------------------------------------------------------------


@needs_cupy
@pytest.mark.parametrize("img_hw, det_hw, size", CASES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_cupy_kernel_matches_interpolate(img_hw, det_hw, size, batch, layout):
    img = rand(batch, 3, *img_hw, seed=10, device="cuda")
    detail = rand(batch, 3, *det_hw, seed=11, device="cuda")
    img_v, det_v = layouts(img)[layout], layouts(detail)[layout]
    base, x = resize_add(img_v, det_v, size)
    want_base = img if img_hw == size else interp(img, size)
    want_x = want_base + (detail if det_hw == size else interp(detail, size))
    torch.testing.assert_close(base, want_base, rtol=0, atol=1e-5)
    torch.testing.assert_close(x, want_x, rtol=0, atol=1e-5)
    if img_hw == size:
        assert torch.equal(base, img), "a same-size source is copied, not interpolated"


@needs_cupy
def test_cupy_detail_none_and_large_batch():
    img = rand(8, 3, 67, 71, seed=12, device="cuda")
    base, x = resize_add(img, None, (48, 50))
    torch.testing.assert_close(base, interp(img, (48, 50)), rtol=0, atol=1e-5)
    assert torch.equal(x, base) and x.data_ptr() != base.data_ptr()


@needs_cupy
def test_cupy_runs_on_the_current_stream():
    img, detail = rand(2, 3, 40, 44, seed=13, device="cuda"), rand(2, 3, 29, 31, seed=14, device="cuda")
    want = resize_add_ref(img, detail, (56, 61))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            base, x = resize_add(img, detail, (56, 61))
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(base, want[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(x, want[1], rtol=0, atol=1e-5)
