import torch

from fastdream.octaves import octave_sizes, shift_table


def test_octave_sizes_hand_checked():
    # 300 / 1.4**k: 300, 214.29, 153.06, 109.33 ; 451 / 1.4**k: 451, 322.14, 230.10, 164.36
    assert octave_sizes(300, 451, 4, 1.4, 32) == [(109, 164), (153, 230), (214, 322), (300, 451)]


def test_octave_sizes_single_octave_is_full_size():
    assert octave_sizes(17, 23, 1, 2.0, 32) == [(17, 23)]


def test_octave_sizes_drop_small_octaves_instead_of_crashing():
    # 64 / 2**k = 64, 32, 16, 8: only those with a short side >= 32 stay, the full size always.
    assert octave_sizes(64, 100, 4, 2.0, 32) == [(32, 50), (64, 100)]
    assert octave_sizes(20, 20, 6, 1.5, 32) == [(20, 20)]


def test_shift_table_range_dtype_and_seed():
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    a, b = shift_table(50, 4, 7, g1), shift_table(50, 4, 7, g2)
    assert a.dtype == torch.int32 and a.shape == (50, 4, 2)
    assert torch.equal(a, b)
    assert int(a.min()) == -7 and int(a.max()) == 7  # both ends reached in 400 draws
    assert shift_table(3, 2, 0, g1).abs().sum() == 0
