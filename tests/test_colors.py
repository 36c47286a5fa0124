"""keep_colors against the explicit BT.601 full-range RGB -> YCbCr -> RGB round trip."""
import pytest
import torch

from fastdream.colors import keep_colors


def ycbcr(x):
    r, g, b = x.double().unbind(-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 0.5 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def keep_colors_twin(original, dreamed):
    y, _, _ = ycbcr(dreamed)
    _, cb, cr = ycbcr(original)
    r = y + 1.402 * (cr - 0.5)
    g = y - 0.344136 * (cb - 0.5) - 0.714136 * (cr - 0.5)
    b = y + 1.772 * (cb - 0.5)
    return torch.stack([r, g, b], dim=-3).clamp(0, 1)


def rand(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (4, 3, 16, 5), (3, 1, 1)])
def test_matches_twin(shape):
    original, dreamed = rand(shape, 1), rand(shape, 2)
    before = (original.clone(), dreamed.clone())
    out = keep_colors(original, dreamed)
    assert out.shape == dreamed.shape and out.dtype == dreamed.dtype
    torch.testing.assert_close(out.double(), keep_colors_twin(original, dreamed), rtol=0, atol=2e-6)
    assert torch.equal(original, before[0]) and torch.equal(dreamed, before[1])
    assert out.min() >= 0 and out.max() <= 1


def test_luma_from_dream_chroma_from_original_where_unclamped():
    original = 0.4 + 0.2 * rand((2, 3, 11, 13), 3)  # mid-tones: no clamping
    dreamed = 0.45 + 0.1 * rand((2, 3, 11, 13), 4)
    out = keep_colors(original, dreamed)
    y_out, cb_out, cr_out = ycbcr(out)
    y_d, _, _ = ycbcr(dreamed)
    _, cb_o, cr_o = ycbcr(original)
    for a, b in ((y_out, y_d), (cb_out, cb_o), (cr_out, cr_o)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_non_contiguous_and_dtypes():
    original = rand((2, 9, 13, 3), 5).permute(0, 3, 1, 2)
    dreamed = rand((2, 3, 9, 26), 6)[..., ::2]
    torch.testing.assert_close(keep_colors(original, dreamed).double(), keep_colors_twin(original, dreamed), rtol=0, atol=2e-6)
    half = keep_colors(original.half(), dreamed.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), keep_colors_twin(original, dreamed), rtol=0, atol=4e-3)
    assert keep_colors(original.double(), dreamed.double()).dtype == torch.float64


def test_bad_arguments():
    x = rand((1, 3, 4, 4), 0)
    with pytest.raises(ValueError, match="same shape"):
        keep_colors(x, rand((1, 3, 4, 5), 0))
    with pytest.raises(ValueError, match="original"):
        keep_colors(rand((1, 4, 4, 4), 0), rand((1, 4, 4, 4), 0))
    with pytest.raises(TypeError, match="dreamed"):
        keep_colors(x, (x * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="original"):
        keep_colors(x.numpy(), x)
