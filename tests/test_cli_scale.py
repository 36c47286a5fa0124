"""``fastdream dream`` at scale and with issue 6's options, in process on tiny crops (1 octave,
1 iteration): --batch-size (Dreamer.dream_many), --resume, --max-memory/--tile-size/--tile-margin,
--guide, --channel-mode, --classes, --smoothing, --lap-normalize, --keep-colors, --noise/--init."""


import pytest
import torch

import fastdream
from fastdream import cli, options
from fastdream.image_io import load_image, sample_image_path, save_image

COFFEE = fastdream.sample_image_path("coffee")
FAST = ["--iterations", "1", "--octaves", "1", "--quiet"]


@pytest.fixture(scope="module")
def cat():
    return load_image(sample_image_path())


@pytest.fixture(scope="module")
def dreamer():
    """The Dreamer the CLI builds for FAST (the API's defaults otherwise)."""
    return fastdream.Dreamer(iterations=1, octaves=1)


@pytest.fixture
def mixed(tmp_path, cat):
    """``in/``: a, c, f are 40×48, b is 50×64 (sorted order: a b c d e f), d is not an image and
    e is too small for the model."""
    folder = tmp_path / "in"
    folder.mkdir()
    save_image(cat[:, 60:100, 150:198], folder / "a.png")
    save_image(load_image(COFFEE)[:, 100:150, 200:264], folder / "b.png")
    save_image(cat[:, 200:240, 300:348], folder / "c.png")
    (folder / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    save_image(cat[:, :8, :8], folder / "e.png")
    save_image(cat[:, 100:140, 250:298], folder / "f.png")
    return folder


def dream(capsys, *args):
    code = cli.main(["dream", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error: " in last, err
    for fragment in fragments:
        assert fragment in last, err


# --- many images ---------------------------------------------------------------------------------


def test_batch_size_1_keeps_the_seed_of_every_file(capsys, tmp_path, mixed, dreamer):
    """The default (--batch-size 1) dreams file by file with --seed as it is, as before the change."""
    for name in ("d.png", "e.png"):
        (mixed / name).unlink()
    code, out, err = dream(capsys, mixed, "-o", tmp_path / "out", *FAST, "--seed", "5")
    assert code == 0, err
    for name in ("a", "b", "c", "f"):
        expected = dreamer(load_image(mixed / f"{name}.png"), seed=5)
        assert torch.equal(load_image(tmp_path / "out" / f"{name}.png"), expected), name


def test_batch_size_2_mixed_sizes_and_bad_files(capsys, tmp_path, mixed, dreamer, monkeypatch):
    calls = []
    real = fastdream.Dreamer.dream_many

    def spy(self, images, batch_size=8, **kwargs):
        calls.append((batch_size, kwargs))
        return real(self, images, batch_size, **kwargs)

    monkeypatch.setattr(fastdream.Dreamer, "dream_many", spy)
    out_dir = tmp_path / "out"
    code = cli.main(["dream", str(mixed), "-o", str(out_dir), "--iterations", "1", "--octaves", "1",
                     "--seed", "7", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert calls == [(2, {"seed": 7, "progress": False, "errors": "return"})]
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png", "c.png", "f.png"]
    assert captured.out.split() == [str(out_dir / f"{n}.png") for n in "abcf"]  # input order
    err = captured.err
    assert "Traceback" not in err
    assert f"fastdream: error: load_image: {str(mixed / 'd.png')!r} is not a readable image" in err
    assert f"fastdream: error: {mixed / 'e.png'}: image is 8×8" in err
    assert "img/s" in err  # the bar over images
    assert err.strip().splitlines()[-1] == "dreamed 4 of 6 images, 2 failed"
    # Same-size images are batched in input order: a and c form batch 0 (seed 7), f batch 1, b batch 2.
    a, b, c, f = (load_image(mixed / f"{n}.png") for n in "abcf")
    ac = dreamer(torch.stack([a, c]), seed=7)
    assert torch.equal(load_image(out_dir / "a.png"), ac[0])
    assert torch.equal(load_image(out_dir / "c.png"), ac[1])
    assert torch.equal(load_image(out_dir / "f.png"), dreamer(f, seed=8))
    assert torch.equal(load_image(out_dir / "b.png"), dreamer(b, seed=9))


def test_resume_skips_existing_outputs(capsys, tmp_path, mixed):
    for name in ("d.png", "e.png", "f.png"):
        (mixed / name).unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    save_image(torch.full((3, 8, 8), 7, dtype=torch.uint8), out_dir / "b.png")  # a complete image: kept
    done_before = (out_dir / "b.png").read_bytes()
    code, out, err = dream(capsys, mixed, "-o", out_dir, "--iterations", "1", "--octaves", "1", "--resume",
                           "--batch-size", "2")
    assert code == 0, err
    assert "skipped 1 image whose output exists (--resume)" in err
    assert "dreamed 2 of 2 images, 0 failed" in err
    assert (out_dir / "b.png").read_bytes() == done_before
    assert load_image(out_dir / "a.png").shape == load_image(out_dir / "c.png").shape == (3, 40, 48)
    # Nothing left to do: still exit 0.
    code, out, err = dream(capsys, mixed, "-o", out_dir, *FAST, "--resume")
    assert (code, out, err) == (0, "", "")
    # Without --resume an existing output is refused, naming both ways out.
    code, out, err = dream(capsys, mixed, "-o", out_dir, *FAST)
    assert code == 1 and "--overwrite" in err and "--resume" in err


def test_resume_excludes_overwrite(capsys, tmp_path, mixed):
    code, out, err = dream(capsys, mixed, "-o", tmp_path / "out", "--resume", "--overwrite")
    assert_usage_error(code, err, "--resume", "--overwrite")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags", [["--max-memory", "64M"], ["--tile-size", "64", "--tile-margin", "0"]])
def test_tiled_runs(capsys, tmp_path, cat, flags):
    source = tmp_path / "in.png"
    save_image(cat[:, 40:120, 100:196], source)  # 80×96: 2×2 tiles of 64
    code, out, err = dream(capsys, source, "-o", tmp_path / "x.png", *FAST, "--seed", "0", *flags)
    assert code == 0, err
    result = load_image(tmp_path / "x.png")
    assert result.shape == (3, 80, 96) and not torch.equal(result, load_image(source))


# --- issue 6's options ---------------------------------------------------------------------------


class Recorder:
    """Stands in for fastdream.Dreamer: records the options and the calls."""

    seen: dict = {}

    def __init__(self, model=fastdream.DEFAULT_MODEL, layers=None, **options):
        Recorder.seen = dict(options, model=model, layers=layers)

    def __call__(self, image, *, seed=None, progress=False, size=None):
        Recorder.seen.update(image=image, size=size, call_seed=seed)
        return torch.rand(3, *size) if image is None else image

    def stream(self, frames, *, blend=0.0, flow=False, seed=None, progress=None):
        Recorder.seen.update(blend=blend, flow=flow, call_seed=seed)
        yield from frames


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(fastdream, "Dreamer", Recorder)
    return Recorder


def test_options_reach_the_dreamer(capsys, tmp_path, mixed, recorder):
    code, out, err = dream(
        capsys, mixed / "a.png", "-o", tmp_path / "x.png", "--guide", mixed / "b.png", "--max-side", "32",
        "--classes", "tabby:2,285", "--smoothing", "1,2.5", "--lap-normalize", "3", "--keep-colors",
        "--max-memory", "2G", "--tile-size", "256", "--tile-margin", "32", "--quiet",
    )
    assert code == 0, err
    seen = recorder.seen
    guide = seen.pop("guide")
    assert guide.shape == (3, 25, 32) and guide.dtype == torch.uint8  # 50×64 limited by --max-side
    assert {k: seen[k] for k in ("classes", "smoothing", "lap_normalize", "keep_colors", "max_memory",
                                 "tile_size", "tile_margin")} == {
        "classes": {"tabby": 2.0, 285: 1.0}, "smoothing": [1.0, 2.5], "lap_normalize": 3, "keep_colors": True,
        "max_memory": 2 * 2**30, "tile_size": 256, "tile_margin": 32,
    }
    code, out, err = dream(capsys, mixed / "a.png", "-o", tmp_path / "y.png", "--channel-mode", "weakest",
                           "--channel-count", "3", "--classes", "tabby,285", "--smoothing", "1.5",
                           "--max-memory", "auto", "--quiet")
    assert code == 0, err
    assert {k: recorder.seen[k] for k in ("channel_mode", "channel_count", "classes", "smoothing",
                                          "max_memory")} == {
        "channel_mode": "weakest", "channel_count": 3, "classes": ["tabby", 285], "smoothing": 1.5,
        "max_memory": "auto",
    }
    # Unset, they are not passed: the API's defaults apply.
    dream(capsys, mixed / "a.png", "-o", tmp_path / "z.png", "--quiet")
    assert not {"guide", "channel_mode", "channel_count", "classes", "smoothing", "lap_normalize", "keep_colors",
                "max_memory", "tile_size", "tile_margin", "init"} & set(recorder.seen)


def test_options_reach_the_dreamer_in_zoom_and_video(capsys, tmp_path, mixed, recorder):
    code = cli.main(["zoom", str(mixed / "a.png"), "-o", str(tmp_path / "z.gif"), "--frames", "1",
                     "--smoothing", "2", "--channel-mode", "strongest", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (recorder.seen["smoothing"], recorder.seen["channel_mode"]) == (2.0, "strongest")
    recorder.seen.clear()
    code = cli.main(["video", str(tmp_path / "z.gif"), "-o", str(tmp_path / "v.gif"), "--lap-normalize", "2",
                     "--keep-colors", "--tile-size", "64", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert {k: recorder.seen[k] for k in ("lap_normalize", "keep_colors", "tile_size")} == {
        "lap_normalize": 2, "keep_colors": True, "tile_size": 64}


def test_noise_reaches_the_dreamer(capsys, tmp_path, recorder):
    code, out, err = dream(capsys, "--noise", "64x48", "--init", "grey", "-o", tmp_path / "n.png", "--seed", "4",
                           "--quiet")
    assert code == 0, err
    assert (recorder.seen["image"], recorder.seen["size"], recorder.seen["init"], recorder.seen["call_seed"]) == (
        None, (48, 64), "grey", 4)


def test_classes_smoothing_keep_colors_end_to_end(capsys, tmp_path, mixed):
    out = tmp_path / "x.png"
    code, stdout, err = dream(capsys, mixed / "a.png", "-o", out, "--iterations", "1", "--octaves", "1",
                              "--seed", "0", "--classes", "tabby", "--smoothing", "1", "--keep-colors")
    assert code == 0, err
    assert stdout.strip() == str(out)
    original, result = load_image(mixed / "a.png").float(), load_image(out).float()
    assert result.shape == original.shape and not torch.equal(result, original)
    # --keep-colors: the chroma (BT.601 Cb, Cr) stays put, only the luminance moves.
    def chroma(rgb):
        r, g, b = rgb
        return torch.stack([-0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b])
    assert (chroma(result) - chroma(original)).abs().mean() < 0.5  # 1.7 without --keep-colors


def test_guide_and_lap_normalize_end_to_end(capsys, tmp_path, mixed):
    code, stdout, err = dream(capsys, mixed / "a.png", "-o", tmp_path / "x.png", *FAST, "--seed", "0",
                              "--guide", mixed / "b.png", "--lap-normalize", "2")
    assert code == 0, err
    assert load_image(tmp_path / "x.png").shape == (3, 40, 48)


def test_noise_end_to_end(capsys, tmp_path):
    out = tmp_path / "out.png"
    code, stdout, err = dream(capsys, "--noise", "64x48", "-o", out, "--iterations", "1", "--octaves", "1",
                              "--seed", "2")
    assert code == 0, err
    assert stdout.strip() == str(out)
    image = load_image(out)
    assert image.shape == (3, 48, 64) and image.float().std() > 5
    # An existing output is refused, like any other.
    code, stdout, err = dream(capsys, "--noise", "64x48", "-o", out, *FAST)
    assert code == 1 and "output exists" in err


# --- bad values: exit 2, one error line, no traceback -------------------------------------------


@pytest.mark.parametrize("flags, fragments", [
    (["--max-memory", "lots"], ["--max-memory", "2G"]),
    (["--max-memory", "0"], ["--max-memory"]),
    (["--channel-mode", "loud"], ["--channel-mode", "invalid choice"]),
    (["--smoothing", "-1"], ["--smoothing", "> 0"]),
    (["--smoothing", "1,x"], ["--smoothing"]),
    (["--noise", "10"], ["--noise", "WIDTHxHEIGHT"]),
    (["--tile-size", "0"], ["--tile-size"]),
    (["--tile-margin", "-1"], ["--tile-margin"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--lap-normalize", "0"], ["--lap-normalize"]),
    (["--classes", "tabby:x"], ["--classes", "bad weight"]),
    (["--init", "white"], ["--init"]),
])
def test_bad_flag_values(capsys, tmp_path, mixed, flags, fragments):
    code, out, err = dream(capsys, mixed / "a.png", "-o", tmp_path / "x.png", *flags)
    assert_usage_error(code, err, *fragments)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, fragments", [
    (["{a}", "--tile-size", "8"], ["--tile-size must be >= 32"]),
    (["{a}", "--channel-count", "3"], ["--channel-count needs --channel-mode"]),
    (["{a}", "--guide", "{b}", "--channel-mode", "weakest"], ["--guide", "--channel-mode"]),
    (["{a}", "--channels", "1", "--channel-mode", "weakest"], ["--channels", "--channel-mode"]),
    (["{a}", "--classes", "no such class"], ["--classes", "no such class"]),
    (["{a}", "--init", "grey"], ["--init", "--noise"]),
    (["{a}", "--noise", "64x48"], ["--noise", "INPUT"]),
    (["--demo", "--noise", "64x48"], ["--noise", "--demo"]),
    (["--noise", "64x48", "-o", "{tmp}/"], ["--noise needs -o FILE"]),
    (["--noise", "16x16"], ["--noise 16x16", "32"]),
])
def test_bad_combinations(capsys, tmp_path, mixed, args, fragments):
    argv = [a.format(a=mixed / "a.png", b=mixed / "b.png", tmp=tmp_path) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "x.png")]
    code, out, err = dream(capsys, *argv, *FAST)
    assert_usage_error(code, err, *fragments)
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_guide_missing_is_a_runtime_error(capsys, tmp_path, mixed):
    code, out, err = dream(capsys, mixed / "a.png", "-o", tmp_path / "x.png", "--guide", tmp_path / "nope.png")
    assert code == 1 and "Traceback" not in err
    assert err.startswith("fastdream: error: --guide: ") and "nope.png" in err


def test_memory_sizes():
    assert options.parse_memory("2G") == 2 * 2**30
    assert options.parse_memory("512M") == 512 * 2**20
    assert options.parse_memory("1.5GiB") == 3 * 2**29
    assert options.parse_memory("64kb") == 64 * 1024
    assert options.parse_memory("1000000") == 1000000
    assert options.parse_memory("AUTO") == "auto"


def test_help_states_the_new_defaults():
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["dream"].format_help().split())
    import inspect

    params = inspect.signature(fastdream.Dreamer).parameters
    for flag, name in [("--tile-margin", "tile_margin"), ("--channel-count", "channel_count"), ("--init", "init")]:
        start = help_text.index(f" {flag} ", help_text.index("options:"))
        assert f"(default: {params[name].default})" in help_text[start:start + 400], flag
    for flag in ("--batch-size", "--resume", "--max-memory", "--tile-size", "--guide", "--channel-mode",
                 "--classes", "--smoothing", "--lap-normalize", "--keep-colors", "--noise"):
        assert f" {flag} " in help_text, flag
