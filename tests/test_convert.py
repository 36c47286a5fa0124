"""fastdream._convert: the one float <-> uint8 conversion of the dream path and of image/video files,
against plain numpy twins on random data (ties included)."""
import numpy as np
import pytest
import torch

from fastdream._convert import to_dtype_like, to_float01, to_uint8
from fastdream.image_io import save_image
from fastdream.video import VideoWriter


def _values(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 17, 23, generator=g, dtype=torch.float64) * 1.2 - 0.1  # some outside [0, 1]
    x[0, 0, :6] = torch.tensor([0.5, 1.5, 2.5, 253.5, 254.5, 127.5], dtype=torch.float64) / 255  # ties
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", [0, 1])
def test_to_uint8_is_clamp_scale_round_half_even(dtype, seed):
    x = _values(seed, dtype)
    work = np.float64 if dtype == torch.float64 else np.float32
    expected = np.rint(np.clip(x.to(torch.float64).numpy().astype(work), 0, 1) * work(255)).astype(np.uint8)
    before = x.clone()
    got = to_uint8(x.transpose(1, 2), "f").transpose(1, 2)  # non-contiguous in
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), expected)
    assert torch.equal(x, before)


def test_to_uint8_refuses_nan_and_other_dtypes():
    with pytest.raises(ValueError, match="f: image contains NaN"):
        to_uint8(torch.full((3, 2, 2), float("nan")), "f")
    with pytest.raises(TypeError, match="f: image must be uint8"):
        to_uint8(torch.ones(3, 2, 2, dtype=torch.int32), "f")
    u = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    out = to_uint8(u, "f")
    assert torch.equal(out, u) and out.data_ptr() != u.data_ptr()


def test_the_dream_path_and_files_quantise_alike(tmp_path):
    x = _values(3, torch.float32).clamp(0, 1)
    assert torch.equal(to_dtype_like(x, torch.uint8), to_uint8(x, "f"))
    u = torch.randint(0, 256, (3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(to_dtype_like(to_float01(u), torch.uint8), u)  # uint8 survives the round trip


def test_files_refuse_nan_frames_alike(tmp_path):
    nan = torch.rand(3, 8, 8)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        save_image(nan, tmp_path / "a.png")
    with pytest.raises(ValueError, match="NaN"):
        with VideoWriter(tmp_path / "v.gif", 5) as writer:
            writer.write(nan)
    assert not any(tmp_path.iterdir())  # nothing published
