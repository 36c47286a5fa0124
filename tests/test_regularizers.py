"""gaussian_smooth and laplacian_normalize against naive twins (per-channel 2-D convolutions,
explicit pyramids), on fresh random inputs, odd sizes, batches and non-contiguous layouts."""
import math

import pytest
import torch
import torch.nn.functional as F

from fastdream.regularizers import gaussian_kernel_1d, gaussian_smooth, laplacian_normalize

SHAPES = [(1, 3, 17, 23), (3, 3, 9, 5), (2, 4, 33, 31), (1, 1, 2, 7), (1, 3, 1, 6)]
TOL = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-12, 1e-12), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


def smooth_twin(grad, sigmas):
    """Mean over sigmas of a full 2-D Gaussian blur of each channel of each image, one by one."""
    sigmas = [sigmas] if isinstance(sigmas, (int, float)) else list(sigmas)
    b, c, h, w = grad.shape
    g = grad.double()
    out = torch.zeros_like(g)
    for s in sigmas:
        ry, rx = min(math.ceil(3 * s), h - 1), min(math.ceil(3 * s), w - 1)
        ky = torch.tensor([math.exp(-y * y / (2 * s * s)) for y in range(-ry, ry + 1)], dtype=torch.float64)
        kx = torch.tensor([math.exp(-x * x / (2 * s * s)) for x in range(-rx, rx + 1)], dtype=torch.float64)
        k2 = torch.outer(ky / ky.sum(), kx / kx.sum())[None, None]
        for i in range(b):
            for j in range(c):
                plane = F.pad(g[i, j][None, None], (rx, rx, ry, ry), mode="reflect")
                out[i, j] += F.conv2d(plane, k2)[0, 0]
    return out / len(sigmas)


def rand(shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigmas", [1.0, (0.5, 1.0, 2.0), [0.3, 4.0]])
def test_gaussian_smooth_matches_twin(shape, sigmas):
    grad = rand(shape, seed=hash((shape, str(sigmas))) % 1000)
    out = gaussian_smooth(grad, sigmas)
    assert out.shape == grad.shape and out.dtype == grad.dtype
    torch.testing.assert_close(out.double(), smooth_twin(grad, sigmas), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", list(TOL))
def test_gaussian_smooth_dtypes_and_layouts(dtype):
    base = rand((2, 3, 19, 14), dtype, seed=3)
    permuted = base.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    channels_last = base.contiguous(memory_format=torch.channels_last)
    sliced = rand((2, 3, 19, 28), dtype, seed=4)[..., ::2]
    rtol, atol = TOL[dtype]
    for grad in (base, permuted, channels_last, sliced):
        before = grad.clone()
        out = gaussian_smooth(grad, (0.5, 1.0, 2.0))
        assert out.dtype == dtype
        assert torch.equal(grad, before)
        torch.testing.assert_close(out.double(), smooth_twin(grad.double(), (0.5, 1.0, 2.0)), rtol=rtol, atol=atol)


def test_gaussian_kernel_sums_to_one_and_is_symmetric():
    k = gaussian_kernel_1d(1.7, 6)
    assert math.isclose(sum(k), 1.0) and k == k[::-1] and len(k) == 13


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (-1, ValueError), (float("nan"), ValueError), ([], ValueError),
                                        ("1", TypeError), (True, TypeError), ([1.0, None], TypeError)])
def test_gaussian_smooth_bad_sigmas(bad, error):
    with pytest.raises(error, match="sigmas"):
        gaussian_smooth(rand((1, 3, 8, 8)), bad)


def test_bad_grad():
    with pytest.raises(ValueError, match="grad"):
        gaussian_smooth(rand((3, 8, 8)), 1.0)
    with pytest.raises(TypeError, match="grad"):
        laplacian_normalize(torch.ones(1, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(TypeError, match="levels"):
        laplacian_normalize(rand((1, 3, 8, 8)), 2.0)
    with pytest.raises(ValueError, match="levels"):
        laplacian_normalize(rand((1, 3, 8, 8)), -1)


# --- Laplacian pyramid ---------------------------------------------------------------------------

K5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
K55 = torch.outer(K5, K5) / 256.0


def down_twin(x):
    """Strided 5×5 binomial blur of one plane [h, w] with zero padding 2, by explicit sums."""
    h, w = x.shape
    p = F.pad(x, (2, 2, 2, 2))
    out = torch.zeros((h + 1) // 2, (w + 1) // 2, dtype=x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (p[2 * i: 2 * i + 5, 2 * j: 2 * j + 5] * K55).sum()
    return out


def up_twin(low, size):
    """4 × the adjoint of down_twin: scatter each low pixel through the kernel."""
    h, w = size
    p = torch.zeros(h + 4 + 1, w + 4 + 1, dtype=low.dtype)
    for i in range(low.shape[0]):
        for j in range(low.shape[1]):
            p[2 * i: 2 * i + 5, 2 * j: 2 * j + 5] += 4 * low[i, j] * K55
    return p[2: 2 + h, 2: 2 + w]


def lap_twin(grad, levels):
    b, c, h, w = grad.shape
    out = torch.zeros_like(grad, dtype=torch.float64)
    for i in range(b):
        planes = [grad[i, j].double() for j in range(c)]
        bands = []  # per level: list of per-channel high bands
        for _ in range(levels):
            if min(planes[0].shape) < 2:
                break
            lows = [down_twin(p) for p in planes]
            bands.append([p - up_twin(lo, p.shape) for p, lo in zip(planes, lows)])
            planes = lows

        def unit(ps):
            rms = math.sqrt(sum(float((p * p).sum()) for p in ps) / sum(p.numel() for p in ps))
            return [p / rms if rms > 0 else p for p in ps]

        planes = unit(planes)
        for highs in reversed(bands):
            planes = [up_twin(p, hi.shape) + hn for p, hi, hn in zip(planes, highs, unit(highs))]
        for j in range(c):
            out[i, j] = planes[j]
    return out


@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (2, 3, 16, 12), (3, 2, 9, 5), (1, 3, 1, 1), (1, 3, 3, 40)])
@pytest.mark.parametrize("levels", [0, 1, 4])
def test_laplacian_normalize_matches_twin(shape, levels):
    grad = rand(shape, seed=levels + sum(shape)) * 5
    out = laplacian_normalize(grad, levels)
    assert out.shape == grad.shape and out.dtype == grad.dtype
    torch.testing.assert_close(out.double(), lap_twin(grad, levels), rtol=1e-5, atol=1e-5)


def test_laplacian_normalize_layouts_dtypes_and_batch_independence():
    a = rand((3, 3, 21, 18), seed=9)
    ref = laplacian_normalize(a)
    torch.testing.assert_close(laplacian_normalize(a.contiguous(memory_format=torch.channels_last)), ref)
    torch.testing.assert_close(laplacian_normalize(rand((3, 3, 21, 36), seed=9)[..., ::2]),
                               torch.from_numpy(lap_twin(rand((3, 3, 21, 36), seed=9)[..., ::2], 4).numpy()).float(),
                               rtol=1e-5, atol=1e-5)
    # scaling one image does not change any result (per-image normalisation)
    b = a.clone()
    b[1] *= 1000
    torch.testing.assert_close(laplacian_normalize(b), ref, rtol=1e-4, atol=1e-5)
    half = laplacian_normalize(a.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, rtol=1e-2, atol=1e-2)


def test_laplacian_normalize_is_scale_free():
    # a gradient times 2^-90 (~1e-27; its squares underflow float32) is normalised to the same bands,
    # bit for bit; a zero gradient stays zero, a subnormal one finite
    grad = rand((2, 3, 19, 26), seed=11)
    ref = laplacian_normalize(grad)
    assert torch.equal(laplacian_normalize(grad * 2.0**-90), ref)
    assert torch.equal(laplacian_normalize(torch.zeros(1, 3, 9, 9)), torch.zeros(1, 3, 9, 9))
    tiny = torch.zeros(1, 3, 9, 9)
    tiny[0, 1, 4, 4] = 1e-44
    assert torch.isfinite(laplacian_normalize(tiny)).all() and laplacian_normalize(tiny).abs().sum() > 0


def test_laplacian_merge_without_normalisation_reconstructs():
    """With a single band per level scaled by 1 (a constant-RMS input) the split/merge is exact:
    checked through the twin's own split and the library on levels=0 (plain RMS normalisation)."""
    grad = rand((2, 3, 10, 7), seed=5)
    rms = grad.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(laplacian_normalize(grad, 0), grad / rms)
