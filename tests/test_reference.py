"""The reference twins against hand computation (they are the oracle of every other test)."""
import torch

from fastdream._reference import jitter_ref, normalized_step_ref, resize_add_ref, resize_ref, step_scale_ref


def test_jitter_ref_matches_index_formula():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 5, 7, generator=g)
    shifts = torch.tensor([[2, -3], [-11, 15]], dtype=torch.int32)
    out = jitter_ref(src, shifts)
    for b in range(2):
        dy, dx = shifts[b].tolist()
        for y in range(5):
            for x in range(7):
                assert torch.equal(out[b, :, y, x], src[b, :, (y - dy) % 5, (x - dx) % 7])


def test_normalized_step_ref_by_hand():
    img = torch.tensor([[[[0.5, 0.2], [0.9, 0.1]]]])  # [1, 1, 2, 2]
    grad = torch.tensor([[[[1.0, -2.0], [3.0, -4.0]]]])
    shifts = torch.tensor([[0, 1]], dtype=torch.int32)
    # mean|g| = 2.5 → scale 0.1 / 2.5 = 0.04; unrolled g (roll by -1 along x) = [[-2, 1], [-4, 3]]
    expected = torch.tensor([[[[0.5 - 0.08, 0.2 + 0.04], [0.9 - 0.16, 0.1 + 0.12]]]]).clamp(0.15, 0.8)
    normalized_step_ref(img, grad, shifts, 0.1, 0.15, 0.8)
    torch.testing.assert_close(img, expected)


def test_normalized_step_ref_per_image_and_per_channel_bounds():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(2, 3, 4, 4, generator=g)
    grad = torch.randn(2, 3, 4, 4, generator=g)
    grad[1] *= 1000  # image 1's scale must not affect image 0
    before = img.clone()
    normalized_step_ref(img, grad, torch.zeros(2, 2, dtype=torch.int32), 0.05, [0.0, 0.1, 0.2], [1.0, 0.9, 0.8])
    step0 = 0.05 / grad[0].abs().mean() * grad[0]
    torch.testing.assert_close(img[0], (before[0] + step0).clamp(torch.tensor([0.0, 0.1, 0.2]).view(3, 1, 1),
                                                                 torch.tensor([1.0, 0.9, 0.8]).view(3, 1, 1)))


def test_step_scale_ref_by_hand():
    grad = torch.tensor([[1.0, -3.0], [0.0, -0.0], [1e-30, -3e-30], [float("nan"), 1.0], [1e-45, 0.0]])
    scale = step_scale_ref(grad, 0.5)
    assert scale.dtype == torch.float32
    assert scale[0] == 0.25 and scale[2] == torch.tensor(0.25e30)  # scale-free: 0.5 / 2e-30, no epsilon
    assert scale[1] == 0 and scale[3] == 0  # all-zero (and NaN) gradients: no step
    assert scale[4] == torch.finfo(torch.float32).max  # 0.5 / 7e-46 saturates instead of inf


def test_resize_ref_same_size_is_a_copy_and_resize_add():
    x = torch.rand(1, 3, 9, 11)
    y = resize_ref(x, (9, 11))
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()
    base, s = resize_add_ref(x, torch.ones(1, 3, 4, 5), (9, 11))
    torch.testing.assert_close(s, x + 1.0)
    assert torch.equal(base, x)
