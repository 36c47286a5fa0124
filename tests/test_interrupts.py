"""Ctrl-C on the command line: exit 130, ``fastdream: interrupted`` with what was written, and every
output written so far complete (images, and GIF/MP4/numbered frames closed with the frames done).

The dream is replaced by a stand-in that raises KeyboardInterrupt on its Nth call, as Ctrl-C would."""
import os

import pytest
import torch

import fastdream
from fastdream.image_io import load_image, sample_image_path, save_image
from fastdream.video import VideoWriter, read_video

from conftest import run


@pytest.fixture
def photos(tmp_path):
    """Folder ``in/`` with four 40×48 crops of the sample photo."""
    folder = tmp_path / "in"
    folder.mkdir()
    cat = load_image(sample_image_path())
    for k in range(4):
        save_image(cat[:, 40 * k:40 * k + 40, 100:148], folder / f"{k}.png")
    return folder


def interrupt_on(monkeypatch, call):
    """Replaces fastdream.Dreamer with a stand-in whose ``call``-th dream (1-based) raises
    KeyboardInterrupt; returns the list of the ``progress`` values it was called with."""
    calls = []

    class Stand:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, image, *, seed=None, progress=False, size=None):
            calls.append(progress)
            if len(calls) == call:
                raise KeyboardInterrupt
            return image.float() / 255 if image.dtype == torch.uint8 else image

        def stream(self, frames, *, blend=0.5, flow=False, seed=None, progress=False):
            for frame in frames:
                yield self(frame)

    monkeypatch.setattr(fastdream, "Dreamer", Stand)
    return calls


def last_line(err):
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def frame_count(path):
    reader, _, _ = read_video(path)
    with reader:
        return len(list(reader))


def test_folder_says_what_was_written_and_resume_finishes(capsys, monkeypatch, photos, tmp_path):
    out = tmp_path / "out"
    interrupt_on(monkeypatch, 3)
    code, stdout, err = run(capsys, "dream", photos, "-o", out)
    assert code == 130
    assert last_line(err) == (
        "fastdream: interrupted; 2 of 4 images written; run the same command with --resume to finish"
    )
    assert sorted(os.listdir(out)) == ["0.png", "1.png"]  # complete files, no temporary ones
    assert all(load_image(out / name).shape == (3, 40, 48) for name in os.listdir(out))
    interrupt_on(monkeypatch, 0)
    code, stdout, err = run(capsys, "dream", photos, "-o", out, "--resume", "--quiet")
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["0.png", "1.png", "2.png", "3.png"]


def test_single_image_says_interrupted(capsys, monkeypatch, photos, tmp_path):
    interrupt_on(monkeypatch, 1)
    code, stdout, err = run(capsys, "dream", photos / "0.png", "-o", tmp_path / "x.png")
    assert code == 130 and last_line(err) == "fastdream: interrupted"
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name", ["z.gif", "z.mp4", "frames/"])
def test_zoom_keeps_the_frames_done(capsys, monkeypatch, photos, tmp_path, name):
    if name.endswith(".mp4"):
        pytest.importorskip("av")
    out = f"{tmp_path}{os.sep}{name}"  # a str: pathlib would drop the trailing / of a folder
    calls = interrupt_on(monkeypatch, 4)
    code, stdout, err = run(capsys, "zoom", photos / "0.png", "-o", out, "--frames", "6")
    assert code == 130
    assert last_line(err) == f"fastdream: interrupted; 3 of 6 frames written to {out}"
    assert frame_count(out) == 3
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temporary file left
    assert calls == [True] * 4  # the dream's own bar runs inside each frame


def test_zoom_interrupted_before_a_frame_writes_nothing(capsys, monkeypatch, photos, tmp_path):
    interrupt_on(monkeypatch, 1)
    code, stdout, err = run(capsys, "zoom", photos / "0.png", "-o", tmp_path / "z.gif", "--frames", "3")
    assert code == 130 and last_line(err) == "fastdream: interrupted; no frames written"
    assert not (tmp_path / "z.gif").exists()


def test_video_keeps_the_frames_done(capsys, monkeypatch, photos, tmp_path):
    clip = tmp_path / "clip.gif"
    with VideoWriter(clip, 10) as writer:
        for k in range(5):
            writer.write(load_image(photos / f"{k % 4}.png"))
    interrupt_on(monkeypatch, 3)
    out = tmp_path / "v.gif"
    code, stdout, err = run(capsys, "video", clip, "-o", out, "--quiet")
    assert code == 130
    assert last_line(err) == f"fastdream: interrupted; 2 of 5 frames written to {out}"
    assert frame_count(out) == 2
