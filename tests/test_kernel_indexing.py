"""The CUDA kernels' index arithmetic, replayed on the CPU (``csrc/normalized_step_kernel.cu``,
``csrc/jitter_kernel.cu``).

No GPU is needed: every thread's indices are computed at once with integer tensors, following the
kernels line by line (``ImageWalk::locate``, the wraps, the NCHW vector walk, the NHWC per-pixel walk,
the grid-stride reduction), and the values they move are checked against the reference step on
both gradient layouts. A wrong stride, wrap or channel offset in the replayed formulas fails here;
that the ``.cu`` file says the same as this replay is for review (and the CUDA tests) to confirm.
"""
import zlib

import pytest
import torch

from fastdream._reference import jitter_ref, normalized_step_ref, step_scale_ref

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
THREADS = 256


def wrap64(v: int, n: int) -> int:
    """cuda::wrap64: C's truncating remainder, then + n when negative."""
    r = abs(v) % n * (1 if v >= 0 else -1)
    return r + n if r < 0 else r


def parts_for(per_image: int) -> int:
    return max(1, min(1024, (per_image + 2047) // 2048))


def walk(C, H, W, vec):
    """cuda::ImageWalk::locate for every vector i of one image: (c, y, x0)."""
    wv = W // vec
    i = torch.arange(C * H * wv)
    row = i // wv
    return row // H, row % H, (i - row * wv) * vec


def vector_indices(c, y, x0, ys, xs, H, W, vec):
    """(written, read) flat indices of the VEC values of each thread: row y of plane c from column x0,
    read from row ys from column xs on (one vector load where xs % VEC == 0, which never wraps as
    W % VEC == 0; else VEC scalar loads, wrapping at W)."""
    outs, ins = [], []
    for k in range(vec):
        xk = xs + k
        xk = torch.where(xk >= W, xk - W, xk)
        ins.append((c * H + ys) * W + xk)
        outs.append((c * H + y) * W + x0 + k)
    return torch.stack(outs, 1).flatten(), torch.stack(ins, 1).flatten()


def jitter_indices(C, H, W, dy, dx, vec):
    """jitter_kernel: (out, src) flat indices of one image, VEC elements per thread."""
    c, y, x0 = walk(C, H, W, vec)
    ys = y - dy
    ys = torch.where(ys < 0, ys + H, ys)
    xs = x0 - dx
    xs = torch.where(xs < 0, xs + W, xs)
    return vector_indices(c, y, x0, ys, xs, H, W, vec)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 13), (2, 3, 16, 24), (1, 2, 5, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_jitter_index_replay_is_the_roll(shape, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, dtype)).encode()))
    src = torch.randn(shape, generator=gen).to(dtype)
    choices = torch.tensor([INT32_MIN, INT32_MAX, -1, 0, 5, -13], dtype=torch.int32)
    shifts = choices[torch.randint(0, len(choices), (shape[0], 2), generator=gen)]
    B, C, H, W = shape
    vec = 16 // src.element_size()
    vec = vec if W % vec == 0 else 1  # dispatch_vec (aligned pointers assumed)
    out = torch.full_like(src, float("nan"))
    for b in range(B):
        o, i = jitter_indices(C, H, W, wrap64(int(shifts[b, 0]), H), wrap64(int(shifts[b, 1]), W), vec)
        assert torch.equal(o.sort().values, torch.arange(C * H * W)), "each output written exactly once"
        out[b].view(-1)[o] = src[b].reshape(-1)[i]
    assert torch.equal(out, jitter_ref(src, shifts))


def step_nchw_indices(C, H, W, dy, dx, vec):
    """step_kernel: (out, grad) flat indices of one image, grad NCHW, VEC values per thread."""
    c, y, x0 = walk(C, H, W, vec)
    ys = y + dy
    ys = torch.where(ys >= H, ys - H, ys)
    xs = x0 + dx
    xs = torch.where(xs >= W, xs - W, xs)
    return vector_indices(c, y, x0, ys, xs, H, W, vec)


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


def images_per_group(batch, grad_bytes_per_image, l2):
    fit = (l2 // 2) // grad_bytes_per_image
    return batch if fit < 1 or fit >= batch else fit


@pytest.mark.parametrize("batch", [1, 2, 7, 8, 33])
@pytest.mark.parametrize("image_mib", [0.5, 12, 25, 31, 200])
def test_groups_of_images_partition_the_batch(batch, image_mib):
    # launch(): pairs of passes over groups that keep their gradients in half of a 60 MiB L2
    per_image = int(image_mib * 2**20) // 4
    group = images_per_group(batch, per_image * 4, 60 * 2**20)
    covered, b0 = [], 0
    while b0 < batch:
        size = group if group < batch - b0 else batch - b0
        assert size * per_image * 4 <= 30 * 2**20 or size == batch  # fits, or a single pair as before
        covered += range(b0, b0 + size)  # images b0 .. b0 + size - 1, offsets b0 * per_image / 2 * b0 / b0 * parts
        b0 += group
    assert covered == list(range(batch))
