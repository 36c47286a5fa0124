"""The CUDA step's scratch buffers (``fastdream._scratch``): kept per (device, stream), grown, never
allocated per step; a captured step gets its own."""
import pytest
import torch

from fastdream import _scratch, backends, ops


def _buffers():
    made = []

    def allocate(numel, device):
        made.append(numel)
        return torch.full((numel,), float("nan"), dtype=torch.float64, device=device)

    return _scratch.ScratchBuffers(allocate), made


def test_a_buffer_is_kept_per_key_and_grown_to_a_power_of_two():
    buffers, made = _buffers()
    cpu = torch.device("cpu")
    with buffers.lock:
        a = buffers.get((0, 7), 100, cpu)
        assert a.numel() == 128 and made == [128]
        assert buffers.get((0, 7), 128, cpu) is a and buffers.get((0, 7), 1, cpu) is a  # reused
        b = buffers.get((0, 8), 3, cpu)  # another stream: its own
        assert b is not a and b.numel() == 4
        c = buffers.get((0, 7), 129, cpu)  # grown
        assert c.numel() == 256 and buffers.get((0, 7), 200, cpu) is c
        fresh = [buffers.get(None, 5, cpu) for _ in range(2)]  # a step being captured: never kept
        assert all(t.numel() == 5 for t in fresh) and fresh[0] is not fresh[1]
    assert len(buffers) == 2 and made == [128, 4, 256, 5, 5]


@pytest.mark.cuda
def test_cuda_steps_allocate_nothing_after_the_first():
    if backends.select_backend("cuda") != "cuda":
        pytest.skip("fastdream._C was built without CUDA kernels")
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, 67, 45, generator=gen).cuda()
    grad = torch.randn(3, 3, 67, 45, generator=gen).cuda()
    shifts = torch.randint(-9, 9, (3, 2), generator=gen, dtype=torch.int32).cuda()
    ops.normalized_step_(img, grad, shifts, 0.01, 0.0, 1.0)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    for _ in range(3):
        ops.normalized_step_(img, grad, shifts, 0.01, 0.0, 1.0)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before
    assert len(_scratch.STEP) >= 1
