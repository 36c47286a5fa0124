"""Tests of fastdream.image_io: loading, atomic saving and the bundled sample photo."""

import io
import os
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from fastdream import image_io
from fastdream.image_io import (
    IMAGE_SUFFIXES,
    load_image,
    sample_image,
    sample_image_path,
    save_image,
)

COFFEE = sample_image_path("coffee")


@pytest.fixture
def photo():
    """A fresh 40×48 crop of a real photo (uint8 Tensor[3, 40, 48]); odd offsets, real texture."""
    return load_image(COFFEE)[:, 101:141, 203:251].clone()


def _files(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir())


# --- load_image ------------------------------------------------------------------------------


def test_load_matches_pillow_and_layout():
    image = load_image(COFFEE)
    expected = np.array(Image.open(COFFEE).convert("RGB"))
    assert image.dtype == torch.uint8
    assert image.shape == (3, 400, 600)
    assert image.is_contiguous()
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_load_accepts_str_and_pathlike():
    assert torch.equal(load_image(str(COFFEE)), load_image(COFFEE))


@pytest.mark.parametrize("bad", [None, 3, b"a.png", ["a.png"]])
def test_load_rejects_non_path(bad):
    with pytest.raises(TypeError, match="load_image: path must be"):
        load_image(bad)


def test_load_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(missing)


@pytest.mark.parametrize(
    "content", [b"", b"hello, this is text", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]
)
def test_load_not_an_image(tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.png.*not a readable image"):
        load_image(bad)


def test_load_truncated_file(tmp_path, photo):
    whole = tmp_path / "whole.png"
    save_image(photo, whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.png.*not a readable image"):
        load_image(cut)


def test_load_folder_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    "orientation, transform",
    [
        (1, lambda a: a),
        (3, lambda a: a[::-1, ::-1]),  # rotated 180°
        (6, lambda a: np.rot90(a, k=-1)),  # viewer rotates 90° clockwise
        (8, lambda a: np.rot90(a, k=1)),  # viewer rotates 90° counter-clockwise
        (2, lambda a: a[:, ::-1]),  # mirrored horizontally
    ],
)
def test_load_applies_exif_orientation(tmp_path, orientation, transform):
    # Large flat blocks so JPEG's loss does not blur which corner is which.
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:16, :24] = (255, 0, 0)
    stored[:16, 24:] = (0, 255, 0)
    stored[16:, :24] = (0, 0, 255)
    stored[16:, 24:] = (255, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=100, subsampling=0, exif=exif)
    image = load_image(path).permute(1, 2, 0).numpy().astype(int)
    expected = transform(stored).astype(int)
    assert image.shape == expected.shape
    assert np.abs(image - expected).mean() < 10  # a wrong orientation gives ~130


def test_load_grey(tmp_path):
    grey = (np.arange(12 * 10, dtype=np.uint8) * 2).reshape(10, 12)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.shape == (3, 10, 12)
    for channel in image:
        assert torch.equal(channel, torch.from_numpy(grey))


def test_load_16bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 in 8 bits
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    image = load_image(tmp_path / "g16.png")
    assert image[:, 0].tolist() == [[0, 1, 128, 255]] * 3


def test_load_rgba_composited_over_white(tmp_path):
    rgba = np.array(
        [[[200, 100, 50, 255], [200, 100, 50, 0], [0, 0, 0, 128], [255, 0, 0, 51]]], np.uint8
    )
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    # opaque kept; transparent -> white; out = c*a + 255*(1-a), a = alpha/255.
    assert image[:, 0, 0].tolist() == [200, 100, 50]
    assert image[:, 0, 1].tolist() == [255, 255, 255]
    for got, want in zip(image[:, 0, 2].tolist(), [127, 127, 127]):
        assert abs(got - want) <= 1
    for got, want in zip(image[:, 0, 3].tolist(), [255, 204, 204]):
        assert abs(got - want) <= 1


def test_load_grey_alpha(tmp_path):
    la = np.array([[[10, 255], [10, 0]]], np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    image = load_image(tmp_path / "la.png")
    assert image[:, 0, 0].tolist() == [10, 10, 10]
    assert image[:, 0, 1].tolist() == [255, 255, 255]


def test_load_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2])
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png")[:, 0].T.tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    pal.save(tmp_path / "pt.png", transparency=1)
    assert Image.open(tmp_path / "pt.png").info.get("transparency") == 1
    assert load_image(tmp_path / "pt.png")[:, 0, 1].tolist() == [255, 255, 255]


def test_load_cmyk_jpeg(tmp_path, photo):
    rgb = Image.fromarray(photo.permute(1, 2, 0).numpy())
    rgb.convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    image = load_image(tmp_path / "c.jpg")
    assert image.shape == photo.shape
    assert (image.float() - photo.float()).abs().mean() < 8


# --- save_image ------------------------------------------------------------------------------


def test_png_round_trip_is_bit_exact(tmp_path, photo):
    out = save_image(photo, tmp_path / "x.png")
    assert out == tmp_path / "x.png"
    assert torch.equal(load_image(out), photo)
    assert _files(tmp_path) == ["x.png"]


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".tiff", ".PNG"])
def test_lossless_formats_round_trip(tmp_path, photo, suffix):
    assert torch.equal(load_image(save_image(photo, tmp_path / f"x{suffix}")), photo)


@pytest.mark.parametrize("suffix, tolerance", [(".jpg", 12), (".jpeg", 12), (".webp", 12)])
def test_lossy_formats_are_close(tmp_path, photo, suffix, tolerance):
    path = save_image(photo, tmp_path / f"x{suffix}")
    assert Image.open(path).format == {".webp": "WEBP"}.get(suffix, "JPEG")
    assert (load_image(path).float() - photo.float()).abs().mean() < tolerance


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_float_is_clamped_and_rounded(tmp_path, dtype):
    # value*255: 0 -> 0, 0.1 -> 25.5 (float32: 25.500000380) -> 26, 0.5 -> 127.5 -> 128 (tie: even),
    # 0.999 -> 254.745 -> 255 (truncation would give 254), 1 -> 255, -0.2 -> 0, 1.7 -> 255,
    # 0.2 -> 51.0 -> 51, 3/255 -> 3.
    values = [0.0, 0.1, 0.5, 0.999, 1.0, -0.2, 1.7, 0.2, 3 / 255]
    expected = [0, 26, 128, 255, 255, 0, 255, 51, 3]
    if dtype in (torch.float16, torch.bfloat16):
        # Values as the low-precision dtype stores them, rounded by hand: bf16(0.1) = 0.10009765625
        # -> 25.525 -> 26; bf16(0.999) = 1.0 -> 255; fp16(0.1) = 0.0999755859 -> 25.494 -> 25.
        expected[1] = 25 if dtype == torch.float16 else 26
    image = torch.tensor(values, dtype=dtype).repeat(3, 1, 1)  # [3, 1, 9]
    before = image.clone()
    save_image(image, tmp_path / "f.png")
    assert torch.equal(image, before)
    assert load_image(tmp_path / "f.png")[:, 0].tolist() == [expected] * 3


def test_grey_tensor_saved_as_grey(tmp_path, photo):
    grey = photo[:1]
    save_image(grey, tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "L"
    assert torch.equal(load_image(tmp_path / "g.png"), grey.expand(3, -1, -1))
    save_image(grey, tmp_path / "g.webp")  # WebP has no grey mode: written as RGB
    assert load_image(tmp_path / "g.webp").shape == photo.shape


def test_non_contiguous_and_requires_grad(tmp_path, photo):
    save_image(photo.float().div(255).requires_grad_(), tmp_path / "g.png")
    transposed = photo.permute(0, 2, 1).contiguous().permute(0, 2, 1)
    assert not transposed.is_contiguous()
    save_image(transposed, tmp_path / "t.png")
    assert torch.equal(load_image(tmp_path / "g.png"), photo)
    assert torch.equal(load_image(tmp_path / "t.png"), photo)


def test_input_tensor_unchanged(tmp_path, photo):
    floats = photo.float().div(255).sub(0.1).mul(1.3)  # values outside [0, 1] to be clamped
    before = floats.clone()
    save_image(floats, tmp_path / "a.png")
    assert torch.equal(floats, before)
    before_u8 = photo.clone()
    save_image(photo, tmp_path / "b.jpg")
    assert torch.equal(photo, before_u8)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.zeros((3, 4, 4), np.uint8), TypeError, "must be a torch.Tensor"),
        (torch.zeros(3, 4, 4, dtype=torch.int64), TypeError, "uint8 .* or a floating dtype"),
        (torch.zeros(4, 4, dtype=torch.uint8), ValueError, r"Tensor\[3, H, W\]"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), ValueError, r"got \[2, 4, 4\]"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), ValueError, r"pass image\[0\]"),
        (torch.zeros(3, 0, 4, dtype=torch.uint8), ValueError, "empty"),
        (torch.full((3, 2, 2), float("nan")), ValueError, "NaN"),
    ],
)
def test_save_rejects_bad_images(tmp_path, bad, error, match):
    with pytest.raises(error, match=match):
        save_image(bad, tmp_path / "x.png")
    assert _files(tmp_path) == []


@pytest.mark.parametrize("name", ["x.gif", "x", "x.png.txt", "x.jpg2"])
def test_unknown_suffix_lists_supported(tmp_path, photo, name):
    with pytest.raises(ValueError, match=r"\.bmp, \.jpeg, \.jpg, \.png, \.tif, \.tiff, \.webp"):
        save_image(photo, tmp_path / name)
    assert _files(tmp_path) == []


def test_missing_folder_is_not_created(tmp_path, photo):
    target = tmp_path / "typo" / "deeper" / "x.png"
    with pytest.raises(FileNotFoundError, match="typo"):
        save_image(photo, target)
    assert _files(tmp_path) == []


def test_folder_that_is_a_file(tmp_path, photo):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        save_image(photo, tmp_path / "file" / "x.png")


def test_target_is_a_folder(tmp_path, photo):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(IsADirectoryError):
        save_image(photo, tmp_path / "d.png", overwrite=True)


def test_refuses_existing_file_unless_overwrite(tmp_path, photo):
    target = tmp_path / "x.png"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_image(photo, target)
    assert target.read_bytes() == b"precious"
    assert _files(tmp_path) == ["x.png"]
    save_image(photo, target, overwrite=True)
    assert torch.equal(load_image(target), photo)
    assert _files(tmp_path) == ["x.png"]


def test_refuses_file_that_appears_during_write(tmp_path, photo, monkeypatch):
    """The no-clobber check holds even if another process creates the file mid-write."""
    target = tmp_path / "x.png"
    real_save = Image.Image.save

    def save_and_race(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        target.write_bytes(b"other process")

    monkeypatch.setattr(Image.Image, "save", save_and_race)
    with pytest.raises(FileExistsError):
        save_image(photo, target)
    assert target.read_bytes() == b"other process"
    assert _files(tmp_path) == ["x.png"]


def test_failure_mid_write_leaves_no_partial_file(tmp_path, photo, monkeypatch):
    target = tmp_path / "x.png"
    save_image(photo, target)
    original = target.read_bytes()

    def fail_halfway(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_image(photo.flip(-1), target, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        save_image(photo, tmp_path / "new.png")
    assert target.read_bytes() == original
    assert _files(tmp_path) == ["x.png"]


def test_interrupt_mid_write_removes_temp(tmp_path, photo, monkeypatch):
    def interrupted(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_image(photo, tmp_path / "x.png")
    assert _files(tmp_path) == []


def test_failure_in_replace_removes_temp(tmp_path, photo, monkeypatch):
    def broken_replace(src, dst):
        raise PermissionError("replace refused")

    monkeypatch.setattr(image_io.os, "replace", broken_replace)
    with pytest.raises(PermissionError):
        save_image(photo, tmp_path / "x.png", overwrite=True)
    assert _files(tmp_path) == []


def test_save_without_hard_links(tmp_path, photo, monkeypatch):
    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(image_io.os, "link", no_links)
    save_image(photo, tmp_path / "x.png")
    assert torch.equal(load_image(tmp_path / "x.png"), photo)
    with pytest.raises(FileExistsError):
        save_image(photo, tmp_path / "x.png")
    assert _files(tmp_path) == ["x.png"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_file_respects_umask(tmp_path, photo):
    old = os.umask(0o022)
    try:
        save_image(photo, tmp_path / "x.png")
    finally:
        os.umask(old)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644


def test_save_relative_path(tmp_path, photo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_image(photo, "rel.png")
    assert torch.equal(load_image(tmp_path / "rel.png"), photo)


@pytest.mark.cuda
def test_save_from_cuda(tmp_path, photo):
    """A tensor on another device is moved to the CPU (checked with CUDA where available)."""
    save_image(photo.cuda().float() / 255, tmp_path / "c.png")
    assert torch.equal(load_image(tmp_path / "c.png"), photo)


# --- sample image and constants --------------------------------------------------------------


def test_sample_image():
    path = sample_image_path()
    assert isinstance(path, pathlib.Path)
    assert path.name == "chelsea.png" and path.is_file()
    image = sample_image()
    assert image.dtype == torch.uint8 and image.shape == (3, 300, 451)
    assert 60 < image.float().mean() < 200  # a real photo, not a blank


def test_second_sample_image():
    path = sample_image_path("coffee")
    assert path.name == "coffee.png" and path.parent == sample_image_path().parent
    image = sample_image("coffee")
    assert image.dtype == torch.uint8 and image.shape == (3, 400, 600)
    assert image_io.SAMPLE_NAMES == ("chelsea", "coffee")
    with pytest.raises(ValueError, match="unknown sample 'tea'; valid names: chelsea, coffee"):
        sample_image_path("tea")


def test_sample_licence_is_shipped():
    text = (sample_image_path().parent / "LICENSE.txt").read_text(encoding="utf-8")
    assert "CC0" in text and "chelsea.png" in text and "coffee.png" in text


def test_image_suffixes():
    assert IMAGE_SUFFIXES == (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


def test_loads_what_it_saves_in_every_format(tmp_path, photo):
    for suffix in IMAGE_SUFFIXES:
        image = load_image(save_image(photo, tmp_path / f"x{suffix}"))
        assert image.shape == photo.shape, suffix
    buffer = io.BytesIO()
    Image.fromarray(photo.permute(1, 2, 0).numpy()).save(buffer, format="GIF")
    (tmp_path / "x.gif").write_bytes(buffer.getvalue())
    assert load_image(tmp_path / "x.gif").shape == photo.shape  # reads beyond IMAGE_SUFFIXES


# -- bytes: decode_image / encode_image are load_image / save_image without a file -----------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tif"])
def test_bytes_are_the_files(tmp_path, suffix):
    g = torch.Generator().manual_seed(len(suffix))
    image = torch.rand(3, 23, 31, generator=g)[:, :, 1:]  # float, non-contiguous
    path = save_image(image, tmp_path / f"a{suffix}")
    data = image_io.encode_image(image, suffix)
    assert data == path.read_bytes()
    assert torch.equal(image_io.decode_image(data, "a"), load_image(path))


def test_decode_image_errors_name_the_source():
    with pytest.raises(ValueError, match=r"decode_image: 'upload\.png' is not a readable image"):
        image_io.decode_image(b"not an image", "upload.png")
    with pytest.raises(TypeError, match="decode_image: data must be bytes"):
        image_io.decode_image("a.png")
    with pytest.raises(ValueError, match="encode_image: unknown suffix '.gifx'"):
        image_io.encode_image(torch.rand(3, 4, 4), ".gifx")
    with pytest.raises(ValueError, match="encode_image: image must have shape"):
        image_io.encode_image(torch.rand(4, 4), ".png")
