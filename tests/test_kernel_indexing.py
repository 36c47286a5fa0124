"""The CUDA step kernels' index arithmetic, replayed on the CPU (``csrc/normalized_step_kernel.cu``).

No GPU is needed: every thread's indices are computed at once with integer tensors, following the
kernels line by line (``ImageWalk::locate``, the wraps, the NCHW vector walk, the NHWC per-pixel walk,
the grid-stride reduction), and the values they move are checked against the reference step on
both gradient layouts. A wrong stride, wrap or channel offset in the replayed formulas fails here;
that the ``.cu`` file says the same as this replay is for review (and the CUDA tests) to confirm.
"""
import zlib

import pytest
import torch

from fastdream._reference import normalized_step_ref, step_scale_ref

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
THREADS = 256


def wrap64(v: int, n: int) -> int:
    """cuda::wrap64: C's truncating remainder, then + n when negative."""
    r = abs(v) % n * (1 if v >= 0 else -1)
    return r + n if r < 0 else r


def parts_for(per_image: int) -> int:
    return max(1, min(1024, (per_image + 2047) // 2048))


def step_nchw_indices(C, H, W, dy, dx, vec):
    """step_kernel: (out, grad) flat indices of one image, grad NCHW, VEC values per thread."""
    wv = W // vec
    i = torch.arange(C * H * wv)
    row = i // wv
    x0 = (i - row * wv) * vec
    y, c = row % H, row // H
    ys = y + dy
    ys = torch.where(ys >= H, ys - H, ys)
    xs = x0 + dx
    xs = torch.where(xs >= W, xs - W, xs)
    outs, grads = [], []
    for k in range(vec):  # the vector load (xs % VEC == 0: no wrap inside) or VEC wrapped scalar loads
        xk = xs + k
        xk = torch.where(xk >= W, xk - W, xk)
        grads.append((c * H + ys) * W + xk)
        outs.append((c * H + y) * W + x0 + k)
    return torch.stack(outs, 1).flatten(), torch.stack(grads, 1).flatten()


def step_nhwc_indices(C, H, W, dy, dx):
    """step_nhwc_kernel: one thread per pixel i, its C channels; grad NHWC."""
    pixels = H * W
    i = torch.arange(pixels)
    y = i // W
    x = i - y * W
    ys = y + dy
    ys = torch.where(ys >= H, ys - H, ys)
    xs = x + dx
    xs = torch.where(xs >= W, xs - W, xs)
    c = torch.arange(C)
    grads = (ys * W + xs)[:, None] * C + c[None, :]
    outs = i[:, None] + c[None, :] * pixels
    return outs.flatten(), grads.flatten()


def replay_step(img, grad, shifts, step_size, layout):
    B, C, H, W = img.shape
    out = img.clone()
    if layout == "nhwc":
        flat_grad = grad.permute(0, 2, 3, 1).contiguous().reshape(B, -1).float()
    else:
        flat_grad = grad.contiguous().reshape(B, -1).float()
    scale = step_scale_ref(grad, step_size)
    vec = 4 if W % 4 == 0 else 1
    for b in range(B):
        dy, dx = wrap64(int(shifts[b, 0]), H), wrap64(int(shifts[b, 1]), W)
        if layout == "nhwc":
            o, g = step_nhwc_indices(C, H, W, dy, dx)
        else:
            o, g = step_nchw_indices(C, H, W, dy, dx, vec)
        assert torch.equal(o.sort().values, torch.arange(C * H * W)), "each output written exactly once"
        flat = out[b].reshape(-1)
        flat[o] = (flat[o] + flat_grad[b][g] * scale[b]).clamp(0.0, 1.0)
    return out


SHAPES = [(1, 1, 1, 1), (2, 3, 7, 13), (2, 3, 16, 24), (1, 5, 9, 4), (3, 3, 31, 17)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("kind", ["small", "extreme"])
def test_step_index_replay_matches_the_reference(shape, layout, kind):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, layout, kind)).encode()))
    img = torch.rand(shape, generator=gen) * 0.9 + 0.05
    grad = torch.randn(shape, generator=gen)
    if kind == "small":
        shifts = torch.randint(-40, 41, (shape[0], 2), generator=gen, dtype=torch.int32)
    else:
        choices = torch.tensor([INT32_MIN, INT32_MIN + 1, INT32_MAX, -1, 7], dtype=torch.int32)
        shifts = choices[torch.randint(0, len(choices), (shape[0], 2), generator=gen)]
    expected = normalized_step_ref(img.clone(), grad, shifts, 0.2, 0.0, 1.0)
    torch.testing.assert_close(replay_step(img, grad, shifts, 0.2, layout), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("per_image", [1, 3, 4, 2048, 2049, 12 * 1024, 3 * 517 * 311, 4 * 1024 * 1024 + 4])
def test_abs_sum_grid_stride_partitions_each_image(per_image):
    # abs_sum_kernel: block x of `parts`, thread t, VEC 4 when per_image % 4 == 0 (else 1), loads
    # i = (x * THREADS + t) * VEC + k for i < per_image, stepping parts * THREADS * VEC
    parts = parts_for(per_image)
    vec = 4 if per_image % 4 == 0 else 1
    stride = parts * THREADS * vec
    starts = torch.arange(parts * THREADS) * vec
    seen = torch.zeros(per_image, dtype=torch.int64)
    offset = 0
    while offset < per_image:
        i = starts + offset
        i = i[i < per_image]
        for k in range(vec):
            seen.index_add_(0, i + k, torch.ones_like(i))
        offset += stride
    assert bool((seen == 1).all())
