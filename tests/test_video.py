"""Video IO round trips on small generated clips: frame count, size, fps; atomic writes; bad arguments."""
import os

import pytest
import torch

from fastdream.video import VideoWriter, read_video, sequence_glob


def clip(frames=6, height=24, width=32, seed=0):
    """Smooth moving gradients (compress well, so lossy codecs stay close)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    colour = torch.rand(3, 1, 1, generator=gen)
    return [((0.5 + 0.5 * torch.sin(6 * (x + y) + k / 2 + 3 * colour)) * 255).round().to(torch.uint8) for k in range(frames)]


def round_trip(path, frames, fps):
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    reader, got_fps, count = read_video(path)
    with reader:
        got = list(reader)
    return got, got_fps, count


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_video_round_trip(tmp_path, suffix):
    pytest.importorskip("av")
    frames = clip()
    got, fps, count = round_trip(tmp_path / f"a{suffix}", frames, 12.5)
    assert len(got) == len(frames) and fps == pytest.approx(12.5)
    assert count in (len(frames), None) and (suffix != ".mp4" or count == len(frames))
    for a, b in zip(got, frames):
        assert a.shape == b.shape and a.dtype == torch.uint8
        assert (a.float() - b.float()).abs().mean() < 16  # 4:2:0 chroma on a tiny frame; unrelated frames differ by ~80
    assert sorted(os.listdir(tmp_path)) == [f"a{suffix}"]  # no temporary file left


def test_odd_sizes_are_padded_for_4_2_0(tmp_path):
    pytest.importorskip("av")
    frames = [f[:, :23, :31] for f in clip(3)]
    got, _, _ = round_trip(tmp_path / "odd.mp4", frames, 10)
    assert got[0].shape == (3, 24, 32)
    assert (got[0][:, :23, :31].float() - frames[0].float()).abs().mean() < 16  # 4:2:0 chroma on a tiny frame; unrelated frames differ by ~80


def test_gif_round_trip(tmp_path):
    frames = clip(5, 17, 21)
    got, fps, count = round_trip(tmp_path / "a.gif", frames, 20)
    assert (len(got), count, fps) == (5, 5, pytest.approx(20.0))
    for a, b in zip(got, frames):
        assert a.shape == (3, 17, 21) and (a.float() - b.float()).abs().mean() < 8


@pytest.mark.parametrize("target", ["folder", "pattern"])
def test_png_sequence_round_trip_is_exact(tmp_path, target):
    frames = clip(4, 9, 13)
    path = tmp_path / "seq" if target == "folder" else tmp_path / "f%03d.png"
    floats = [f.float() / 255 for f in frames]  # float frames are accepted too
    got, fps, count = round_trip(str(path) + ("/" if target == "folder" else ""), floats, 7)
    assert (fps, count) == (None, 4)
    assert all(torch.equal(a, b) for a, b in zip(got, frames))
    names = sorted(os.listdir(path if target == "folder" else tmp_path))
    assert names == ([f"frame_{i:06d}.png" for i in range(4)] if target == "folder" else [f"f{i:03d}.png" for i in range(4)])
    assert sequence_glob(path).endswith("frame_*.png" if target == "folder" else "f*.png")


def test_existing_output_refused_and_error_leaves_nothing(tmp_path):
    target = tmp_path / "a.gif"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        VideoWriter(target, 10)
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(target, 10, overwrite=True) as writer:
            writer.write(clip(1)[0])
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.gif"]
    with VideoWriter(target, 10, overwrite=True) as writer:
        writer.write(clip(1)[0])
    assert target.read_bytes()[:3] == b"GIF"
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "frame_000000.png").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        VideoWriter(tmp_path / "s", 10)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "a.gif", 0)
    with pytest.raises(ValueError, match="output kind"):
        VideoWriter(tmp_path / "a.txt", 10)
    with pytest.raises(FileNotFoundError):
        VideoWriter(tmp_path / "missing" / "a.gif", 10)
    with pytest.raises(TypeError, match="path"):
        VideoWriter(3, 10)
    with VideoWriter(tmp_path / "b.gif", 10) as writer:
        writer.write(clip(1)[0])
        with pytest.raises(ValueError, match="frame"):
            writer.write(clip(1, 8, 8)[0])
        with pytest.raises(ValueError, match="frame"):
            writer.write(torch.zeros(4, 8, 8, dtype=torch.uint8))
        with pytest.raises(TypeError, match="frame"):
            writer.write(torch.zeros(3, 24, 32, dtype=torch.int32))
    with pytest.raises(ValueError, match="no frames"):
        VideoWriter(tmp_path / "c.gif", 10).close()
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "nothing.mp4")
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "none%04d.png")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    pytest.importorskip("av")
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(tmp_path / "junk.mp4")


def test_missing_pyav_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(ImportError, match="needs PyAV: pip install av$"):  # works however fastdream was installed
        VideoWriter(tmp_path / "a.mp4", 10)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_ctrl_c_publishes_the_frames_written(tmp_path, suffix):
    if suffix == ".mp4":
        pytest.importorskip("av")
    frames = clip(frames=5)
    target = tmp_path / f"a{suffix}"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(target, 10) as writer:
            for k, frame in enumerate(frames):
                if k == 3:
                    raise KeyboardInterrupt
                writer.write(frame)
    reader, _, _ = read_video(target)
    with reader:
        assert len(list(reader)) == 3
    assert sorted(os.listdir(tmp_path)) == [target.name]


def test_ctrl_c_before_any_frame_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "a.gif", 10):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_an_error_still_discards_the_file(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "a.gif", 10) as writer:
            writer.write(clip(frames=1)[0])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_without_hard_links_an_existing_file_is_still_kept(tmp_path, monkeypatch):
    # The target appears while the GIF is written, on a file system without hard links.
    target = tmp_path / "a.gif"

    def no_links(src, dst):
        raise OSError(1, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    writer = VideoWriter(target, 10)
    writer.write(clip(frames=1)[0])
    target.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError, match="VideoWriter: file exists"):
        writer.close()
    assert target.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["a.gif"]  # the temporary file is gone
