"""zoom_transform against a naive per-pixel twin (inverse map, reflection, bilinear), plus exact cases."""
import math

import pytest
import torch

from fastdream.transforms import zoom_transform


def reflect(v, size):
    """grid_sample's reflection (align_corners=False): about -0.5 and size - 0.5, then clipped."""
    lo, span = -0.5, float(size)
    if span <= 0:
        return 0.0
    v = abs(v - lo) % (2 * span)
    v = v if v <= span else 2 * span - v
    return min(max(v + lo, 0.0), size - 1.0)


def zoom_twin(img, zoom, rotate, translate):
    b, c, h, w = img.shape
    cos, sin = math.cos(math.radians(rotate)), math.sin(math.radians(rotate))
    out = torch.zeros_like(img, dtype=torch.float64)
    src = img.double()
    for y in range(h):
        for x in range(w):
            px, py = x + 0.5 - w / 2 - translate[0], y + 0.5 - h / 2 - translate[1]
            qx, qy = (cos * px - sin * py) / zoom, (sin * px + cos * py) / zoom  # Rᵀ (p - t) / z
            sx, sy = reflect(qx + w / 2 - 0.5, w), reflect(qy + h / 2 - 0.5, h)
            x0, y0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - x0, sy - y0
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            out[:, :, y, x] = ((1 - fy) * ((1 - fx) * src[:, :, y0, x0] + fx * src[:, :, y0, x1])
                               + fy * ((1 - fx) * src[:, :, y1, x0] + fx * src[:, :, y1, x1]))
    return out


def rand(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(1, 3, 9, 13), (2, 3, 12, 7), (3, 1, 5, 5)])
@pytest.mark.parametrize("params", [(1.05, 0.0, (0.0, 0.0)), (1.0, 1.5, (0.0, 0.0)), (0.8, -30.0, (2.5, -1.0)),
                                    (1.3, 200.0, (0.0, 3.0)), (1.0, 0.0, (1.25, 0.0))])
def test_matches_twin(shape, params):
    img = rand(shape, sum(shape))
    out = zoom_transform(img, *params)
    assert out.shape == img.shape and out.dtype == img.dtype
    torch.testing.assert_close(out.double(), zoom_twin(img, *params), rtol=0, atol=2e-5)


def test_identity_is_an_exact_copy():
    img = rand((2, 3, 7, 11), 1)[..., ::1]
    out = zoom_transform(img)
    assert torch.equal(out, img) and out.data_ptr() != img.data_ptr()
    assert torch.equal(zoom_transform(img, 1.0, 360.0, (0, 0)), img)


def test_integer_translation_and_rotation_are_pixel_moves():
    img = rand((1, 3, 8, 8), 2)
    moved = zoom_transform(img, translate=(2, 1))
    torch.testing.assert_close(moved[..., 1:, 2:], img[..., :-1, :-2], rtol=0, atol=1e-5)
    torch.testing.assert_close(zoom_transform(img, rotate=90), torch.rot90(img, 1, (2, 3)), rtol=0, atol=1e-5)


def test_layouts_and_dtypes():
    img = rand((2, 9, 13, 3), 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(zoom_transform(img, 1.1, 3.0, (1, 2)).double(), zoom_twin(img, 1.1, 3.0, (1, 2)), rtol=0, atol=2e-5)
    single = zoom_transform(img[0], 1.1, 3.0, (1, 2))
    assert single.shape == img[0].shape
    half = zoom_transform(img.half(), 1.1, 3.0)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), zoom_twin(img, 1.1, 3.0, (0, 0)), rtol=0, atol=2e-3)


@pytest.mark.parametrize("kwargs, error, name", [
    ({"zoom": 0.0}, ValueError, "zoom"), ({"zoom": -1}, ValueError, "zoom"), ({"zoom": "2"}, TypeError, "zoom"),
    ({"rotate": float("inf")}, ValueError, "rotate"), ({"translate": (1,)}, TypeError, "translate"),
    ({"translate": (1, float("nan"))}, ValueError, "translate"),
])
def test_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        zoom_transform(rand((1, 3, 4, 4), 0), **kwargs)
    with pytest.raises(TypeError, match="img"):
        zoom_transform(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
