"""``fastdream zoom`` and ``fastdream video`` in-process on tiny crops (1 octave, 1 iteration)."""
import os
import pathlib

import pytest
import torch

import fastdream
from fastdream.image_io import load_image, sample_image_path, save_image
from fastdream.video import VideoWriter, read_video

from conftest import run

FAST = ["--iterations", "1", "--octaves", "1", "--seed", "0", "--quiet"]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "in.png"
    save_image(load_image(sample_image_path())[:, 60:100, 150:198], path)  # 40×48
    return path


def frames_of(path):
    reader, fps, count = read_video(path)
    with reader:
        return list(reader), fps, count


def test_zoom_gif_frames_fps_and_motion(capsys, image, tmp_path):
    out = tmp_path / "z.gif"
    code, stdout, err = run(capsys, "zoom", image, "-o", out, "--frames", "3", "--zoom", "1.2", "--rotate", "5",
                            "--translate=-1,2", "--fps", "10", *FAST)
    assert code == 0, err
    frames, fps, count = frames_of(out)
    assert (len(frames), count, fps) == (3, 3, 10.0)
    assert frames[0].shape == (3, 40, 48)
    assert not torch.equal(frames[0], frames[2])


def test_zoom_png_sequence_and_bar(capsys, image, tmp_path):
    out = tmp_path / "seq"
    code, stdout, err = run(capsys, "zoom", image, "-o", f"{out}/", "--frames", "2", "--iterations", "1", "--octaves", "1")
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["frame_000000.png", "frame_000001.png"]
    assert "frames" in err and "2/2" in err  # the tqdm bar over frames
    # an existing output is refused without --overwrite, replaced with it
    code, _, err = run(capsys, "zoom", image, "-o", out, "--frames", "2", *FAST)
    assert code == 1 and "--overwrite" in err
    assert run(capsys, "zoom", image, "-o", out, "--frames", "2", "--overwrite", *FAST)[0] == 0


def test_zoom_mp4(capsys, image, tmp_path):
    pytest.importorskip("av")
    out = tmp_path / "z.mp4"
    assert run(capsys, "zoom", image, "-o", out, "--frames", "2", "--fps", "8", *FAST)[0] == 0
    frames, fps, count = frames_of(out)
    assert (len(frames), count, fps) == (2, 2, 8.0)


def make_clip(path, frames=4, fps=10.0):  # GIF stores durations in 10 ms steps
    base = load_image(sample_image_path())[:, 100:140, 200:248]
    with VideoWriter(path, fps) as writer:
        for k in range(frames):
            writer.write(torch.roll(base, k, dims=2))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_keeps_count_size_and_fps(capsys, tmp_path, suffix):
    if suffix == ".mp4":
        pytest.importorskip("av")
    source, out = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    make_clip(source)
    code, _, err = run(capsys, "video", source, "-o", out, "--blend", "0.5", *FAST)
    assert code == 0, err
    frames, fps, count = frames_of(out)
    assert (len(frames), fps) == (4, 10.0) and frames[0].shape == (3, 40, 48)


def test_video_max_frames_blend_zero_and_sequence_input(capsys, tmp_path):
    source = tmp_path / "in"
    make_clip(f"{source}/", frames=3)
    out = tmp_path / "o%02d.png"
    code, _, err = run(capsys, "video", source, "-o", out, "--max-frames", "2", "--blend", "0", "--fps", "5", *FAST)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("o*.png")) == ["o00.png", "o01.png"]


def test_never_over_the_input(capsys, image, tmp_path):
    code, _, err = run(capsys, "zoom", image, "-o", image, "--overwrite", "--frames", "1", *FAST)
    assert code == 1 and "would overwrite the input" in err
    source = tmp_path / "clip"
    make_clip(f"{source}/", frames=2)
    code, _, err = run(capsys, "video", source, "-o", f"{source}/frame_%06d.png", "--overwrite", *FAST)
    assert code == 1 and "would overwrite the input" in err


@pytest.mark.parametrize("output", ["z.gif", "z.mp4", "frames/f_%04d.png"])
def test_unwritable_or_missing_output_found_before_dreaming(capsys, image, tmp_path, monkeypatch, output):
    def never(*args, **kwargs):
        raise AssertionError("the Dreamer was built")

    monkeypatch.setattr(fastdream, "Dreamer", never)
    code, _, err = run(capsys, "zoom", image, "-o", tmp_path / "missing" / "deeper" / output, "--frames", "2", *FAST)
    assert code == 1 and "parent folder of -o does not exist" in err and "missing" in err, err
    locked = pathlib.Path("/proc")  # no file can be made there, whoever runs the tests (root included)
    code, _, err = run(capsys, "zoom", image, "-o", locked / output, "--frames", "2", *FAST)
    assert code == 1 and "cannot write to the output folder /proc" in err, err


def test_numbered_frames_into_a_new_folder_under_one_with_brackets(capsys, image, tmp_path):
    parent = tmp_path / "run[1]"  # glob syntax in a real folder's name: not a pattern
    parent.mkdir()
    code, _, err = run(capsys, "zoom", image, "-o", f"{parent}/out/", "--frames", "2", *FAST)
    assert code == 0, err
    assert sorted(p.name for p in (parent / "out").iterdir()) == ["frame_000000.png", "frame_000001.png"]


@pytest.mark.parametrize("args, fragment", [
    (["--frames", "0"], "--frames"), (["--zoom", "0"], "--zoom"), (["--zoom", "x"], "--zoom"),
    (["--translate", "1"], "--translate"), (["--rotate", "inf"], "--rotate"), (["--fps", "-1"], "--fps"),
])
def test_zoom_bad_flags(capsys, image, tmp_path, args, fragment):
    code, _, err = run(capsys, "zoom", image, "-o", tmp_path / "z.gif", *args)
    assert code == 2 and fragment in err


@pytest.mark.parametrize("args, fragment", [(["--blend", "1"], "--blend"), (["--blend", "-0.1"], "--blend"),
                                            (["--max-frames", "0"], "--max-frames")])
def test_video_bad_flags(capsys, tmp_path, args, fragment):
    code, _, err = run(capsys, "video", tmp_path / "in.gif", "-o", tmp_path / "o.gif", *args)
    assert code == 2 and fragment in err


def test_bad_output_kind_and_model_flag(capsys, image, tmp_path):
    code, _, err = run(capsys, "zoom", image, "-o", tmp_path / "z.txt", "--frames", "1", *FAST)
    assert code == 1 and "output kind" in err
    code, _, err = run(capsys, "zoom", image, "-o", tmp_path / "z.gif", "--frames", "1", "--octave-scale", "0.5", *FAST)
    assert code == 2 and "--octave-scale" in err
    assert not (tmp_path / "z.gif").exists() and [p.name for p in tmp_path.iterdir()] == ["in.png"]


def test_video_matches_the_blend_loop_it_replaced(capsys, tmp_path):
    """``video`` runs through Dreamer.stream: frame k seeded seed + k, its input blended with the
    previous dreamed frame (unquantised), as the CLI's own loop did before."""
    import fastdream

    source, out = tmp_path / "in", tmp_path / "out"
    make_clip(f"{source}/", frames=3)
    code, _, err = run(capsys, "video", source, "-o", f"{out}/", "--blend", "0.4", *FAST)
    assert code == 0, err
    dreamer = fastdream.Dreamer(iterations=1, octaves=1)
    frames, _, _ = frames_of(f"{source}/")
    previous = None
    for k, frame in enumerate(frames):
        x = frame.to(torch.float32).div_(255.0)
        if previous is not None:
            x = x.mul_(0.6).add_(previous, alpha=0.4)
        previous = dreamer(x, seed=k, progress=False)
        expected = previous.mul(255).round().clamp(0, 255).to(torch.uint8)
        got = load_image(out / f"frame_{k:06d}.png")
        assert (got.int() - expected.int()).abs().max() <= 1, k  # lerp vs mul-add: float rounding only


def test_zoom_seeds_frames_as_stream_does(capsys, image, tmp_path):
    """Frame k is dreamed with batching.seed_for(seed, k): the last seed wraps to 0, not past 2**63."""
    code, _, err = run(capsys, "zoom", image, "-o", tmp_path / "z.gif", "--frames", "2", "--iterations", "1",
                       "--octaves", "1", "--seed", str(2**63 - 1), "--quiet")
    assert code == 0, err
    assert len(frames_of(tmp_path / "z.gif")[0]) == 2


def test_video_flow_flag(capsys, tmp_path):
    """``--flow`` is in the help and reaches ``Dreamer.stream(flow=True)``: the same frames as the API."""
    pytest.importorskip("cv2")
    code, out, _ = run(capsys, "video", "--help")
    help_text = " ".join(out.split())
    assert code == 0 and "--flow" in help_text and "optical flow" in help_text and "[video] extra" in help_text
    import fastdream

    source, out = tmp_path / "in", tmp_path / "out"
    make_clip(f"{source}/", frames=3)
    code, _, err = run(capsys, "video", source, "-o", f"{out}/", "--blend", "0.5", "--flow", *FAST)
    assert code == 0, err
    frames, _, _ = frames_of(f"{source}/")
    dreamer = fastdream.Dreamer(iterations=1, octaves=1)
    want = list(dreamer.stream([f.float() / 255 for f in frames], blend=0.5, flow=True, seed=0))
    for k, expected in enumerate(want):
        got = load_image(out / f"frame_{k:06d}.png")
        assert torch.equal(got, expected.mul(255).round().clamp(0, 255).to(torch.uint8)), k


def test_video_flow_needs_blend_and_opencv(capsys, tmp_path, hide_import):
    source = tmp_path / "in"
    make_clip(f"{source}/", frames=2)
    code, _, err = run(capsys, "video", source, "-o", tmp_path / "o.gif", "--blend", "0", "--flow", *FAST)
    assert code == 2 and "--flow moves the previous dreamed frame into the next: it needs --blend > 0" in err
    hide_import("cv2")
    code, _, err = run(capsys, "video", source, "-o", tmp_path / "o.gif", "--flow", *FAST)
    assert code == 1 and "needs OpenCV: pip install 'fastdream[video]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written
