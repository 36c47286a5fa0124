"""Tests of the ``fastdream`` command: end to end through ``python -m fastdream`` and in-process
through ``fastdream.cli.main`` on small crops of real photos with the offline default model."""

import inspect
import os
import pathlib
import subprocess
import sys
import time

import pytest
import torch

import fastdream
from fastdream import cli
from fastdream.image_io import load_image, sample_image_path, save_image

REPO = pathlib.Path(__file__).resolve().parents[1]
COFFEE = sample_image_path("coffee")
FAST = ["--iterations", "1", "--octaves", "1", "--seed", "0", "--quiet"]


def run_cli(*args, cwd):
    """``python -m fastdream ARGS`` in ``cwd`` with this checkout importable; returns the result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "fastdream", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def crops(tmp_path):
    """Folder ``in/`` with three 40×48 crops of the two photos (a.png, b.jpg, c.png)."""
    folder = tmp_path / "in"
    folder.mkdir()
    cat = load_image(sample_image_path())
    coffee = load_image(COFFEE)
    save_image(cat[:, 60:100, 150:198], folder / "a.png")
    save_image(coffee[:, 101:141, 203:251], folder / "b.jpg")
    save_image(cat[:, 200:240, 300:348], folder / "c.png")
    return folder


@pytest.fixture
def one(crops):
    return crops / "a.png"


def dream(capsys, *args):
    """``cli.main(["dream", *args])`` -> (exit code, stdout, stderr)."""
    code = cli.main(["dream", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(err, *fragments):
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("fastdream: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


# --- end to end, subprocess ----------------------------------------------------------------------


@pytest.mark.slow
def test_folder_with_bad_files_continues_and_exits_1(crops, tmp_path):
    (crops / "d.png").write_text("this is not an image")
    save_image(torch.zeros(3, 8, 8, dtype=torch.uint8), crops / "e.png")  # too small for the model
    (crops / "notes.txt").write_text("skipped: not an image suffix")
    (crops / ".hidden.png").write_text("skipped: hidden")
    result = run_cli("dream", crops, "-o", "out", "--iterations", "2", "--octaves", "2", "--seed", "1",
                     cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    for name in ("a", "c"):
        dreamed = load_image(out / f"{name}.png")
        original = load_image(crops / f"{name}.png")
        assert dreamed.shape == original.shape
        assert not torch.equal(dreamed, original)
    assert "fastdream: error:" in result.stderr and "d.png" in result.stderr
    assert "not a readable image" in result.stderr
    assert "e.png" in result.stderr
    assert "dreamed 3 of 5 images, 2 failed" in result.stderr
    assert result.stdout.split() == [str(pathlib.Path("out") / f"{n}.png") for n in "abc"]


@pytest.mark.slow
def test_demo_subprocess(tmp_path):
    result = run_cli("dream", "--demo", "-o", "cat.jpg", "--max-side", "64", "--iterations", "1",
                     "--octaves", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    image = load_image(tmp_path / "cat.jpg")
    assert image.shape == (3, 43, 64)  # 451×300 scaled to a long side of 64
    assert result.stdout.strip() == "cat.jpg"


def test_unknown_model_subprocess(tmp_path, one):
    result = run_cli("dream", one, "-o", "x.png", "--model", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert_clean_error(result.stderr, "nope", "efficientnet_lite0", "googlenet")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_help_and_version(tmp_path):
    start = time.perf_counter()
    help_result = run_cli("dream", "--help", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert help_result.returncode == 0
    assert "--octave-scale" in help_result.stdout and "--demo" in help_result.stdout
    version = run_cli("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.strip() == f"fastdream {fastdream.__version__}"
    assert elapsed < 30  # sanity only: the package import (torch) dominates


def test_corrupt_single_input(capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, out, err = dream(capsys, bad, "-o", tmp_path / "x.png", *FAST)
    assert code == 1
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"fastdream: error: load_image: {str(bad)!r} is not a readable image (")
    assert lines[1] == "dreamed 0 of 1 images, 1 failed"
    assert not (tmp_path / "x.png").exists()


# --- listing commands ----------------------------------------------------------------------------


def test_models(capsys):
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == fastdream.list_models()
    assert f"{fastdream.DEFAULT_MODEL}  (default)" in lines


def test_layers(capsys):
    assert cli.main(["layers", "efficientnet_lite0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == fastdream.list_layers("efficientnet_lite0")
    default = fastdream.default_layer("efficientnet_lite0")
    assert [line for line in lines if line.endswith("(default)")] == [f"{default}  (default)"]


def test_layers_unknown_model(capsys):
    assert cli.main(["layers", "nope"]) == 2
    err = capsys.readouterr().err
    assert_clean_error(err, "nope", "efficientnet_lite0")


def test_no_command_is_usage_error(capsys):
    assert cli.main([]) == 2
    assert "required" in capsys.readouterr().err


# --- usage errors: exit 2, one line, no traceback ------------------------------------------------


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--octave-scale", "0.5"], ["--octave-scale must be > 1"]),
        (["--iterations", "-1"], ["--iterations must be >= 0"]),
        (["--octaves", "0"], ["--octaves must be >= 1"]),
        (["--jitter", "-3"], ["--jitter"]),
        (["--step-size", "0"], ["--step-size"]),
        (["--layers", "no_such_layer"], ["no_such_layer", "_blocks.9"]),
        (["--model", "nope"], ["--model", "nope", "efficientnet_lite0"]),
        (["--device", "tpu"], ["--device"]),
    ],
)
def test_bad_api_values(capsys, tmp_path, one, flags, fragments):
    code, out, err = dream(capsys, one, "-o", tmp_path / "x.png", *flags)
    assert code == 2
    assert_clean_error(err, *fragments)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--layers", "_blocks.9:heavy"], "bad weight 'heavy'"),
        (["--layers", ",_blocks.9"], "empty layer name"),
        (["--channels", "1,x"], "channel indices"),
        (["--max-side", "0"], "must be >= 1"),
        (["--octaves", "two"], "invalid int value"),
        (["--precision", "fp64"], "invalid choice"),
        (["--objective", "max"], "invalid choice"),
    ],
)
def test_bad_flag_syntax(capsys, tmp_path, one, flags, fragment):
    code, out, err = dream(capsys, one, "-o", tmp_path / "x.png", *flags)
    assert code == 2
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--demo", "{one}"], "not both"),
        ([], "--demo for the sample photo"),
        (["{one}", "-o", "{tmp}/x.gif"], "cannot tell the output format"),
        (["{one}", "-o", "{tmp}/noext"], "cannot tell the output format"),
        (["{one}", "-o", "{tmp}/x.png", "--format", "jpg"], "contradicts"),
        (["{one}", "{one2}", "-o", "{tmp}/x.png"], "looks like a file name"),
        (["{crops}", "-o", "{one}"], "is a file"),
    ],
)
def test_bad_output_plans(capsys, tmp_path, one, crops, args, fragment):
    values = {"one": one, "one2": crops / "c.png", "tmp": tmp_path, "crops": crops}
    argv = [a.format(**values) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "x.png")]
    code, out, err = dream(capsys, *argv)
    assert code == 2
    assert_clean_error(err, fragment)


def test_missing_output_flag(capsys, one):
    code, out, err = dream(capsys, one)
    assert code == 2 and "-o/--output" in err


# --- runtime errors: exit 1 ----------------------------------------------------------------------


def test_missing_input(capsys, tmp_path, one):
    code, out, err = dream(capsys, one, tmp_path / "nope.png", "-o", tmp_path / "out")
    assert code == 1
    assert_clean_error(err, "input not found", "nope.png")
    assert not (tmp_path / "out").exists()


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = dream(capsys, tmp_path / "empty", "-o", tmp_path / "out")
    assert code == 1
    assert_clean_error(err, "no image files", "empty")


def test_output_folder_parent_missing(capsys, tmp_path, one):
    code, out, err = dream(capsys, one, "-o", tmp_path / "typo" / "x.png")
    assert code == 1
    assert_clean_error(err, "output folder does not exist", "typo")
    code, out, err = dream(capsys, one, one, "-o", tmp_path / "typo" / "out")
    assert code == 1
    assert_clean_error(err, "typo")
    assert not (tmp_path / "typo").exists()


def test_never_overwrites_an_input(capsys, tmp_path, crops, one):
    before = {p.name: p.read_bytes() for p in crops.iterdir()}
    for extra in ([], ["--overwrite"]):
        code, out, err = dream(capsys, one, "-o", one, *FAST, *extra)
        assert code == 1
        assert_clean_error(err, "would overwrite the input")
        # A folder dreamed into itself: a.png and c.png would be replaced.
        code, out, err = dream(capsys, crops, "-o", crops, *FAST, *extra)
        assert code == 1
        assert_clean_error(err, "would overwrite the input")
    # Another name for the same file (a hard link) is caught too.
    os.link(one, tmp_path / "link.png")
    code, out, err = dream(capsys, tmp_path / "link.png", "-o", one, *FAST, "--overwrite")
    assert code == 1
    assert_clean_error(err, "would overwrite the input")
    assert {p.name: p.read_bytes() for p in crops.iterdir()} == before


def test_two_inputs_one_output_name(capsys, tmp_path, crops):
    save_image(load_image(crops / "a.png"), crops / "a.jpg")
    code, out, err = dream(capsys, crops, "-o", tmp_path / "out", *FAST)
    assert code == 1
    assert_clean_error(err, "a.jpg", "a.png", "would both be written")


def test_existing_output_refused_then_overwritten(capsys, tmp_path, one):
    target = tmp_path / "x.png"
    target.write_bytes(b"precious")
    code, out, err = dream(capsys, one, "-o", target, *FAST)
    assert code == 1
    assert_clean_error(err, "output exists", "--overwrite")
    assert target.read_bytes() == b"precious"
    code, out, err = dream(capsys, one, "-o", target, *FAST, "--overwrite")
    assert code == 0, err
    assert load_image(target).shape == load_image(one).shape


def test_existing_outputs_in_folder_refused(capsys, tmp_path, crops):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "a.png").write_bytes(b"1")
    (out_dir / "b.png").write_bytes(b"2")
    code, out, err = dream(capsys, crops, "-o", out_dir, *FAST)
    assert code == 1
    assert_clean_error(err, "2 outputs exist", "--overwrite")
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png"]


def test_weights_file_missing(capsys, tmp_path, one):
    code, out, err = dream(capsys, one, "-o", tmp_path / "x.png", "--weights", tmp_path / "w.pth")
    assert code == 1
    assert_clean_error(err, "w.pth")


def test_weights_unavailable_is_clean(capsys, tmp_path, one, monkeypatch):
    def unavailable(*args, **kwargs):
        raise fastdream.WeightsUnavailableError("could not load the pretrained weights of 'googlenet'")

    monkeypatch.setattr(fastdream, "Dreamer", unavailable)
    code, out, err = dream(capsys, one, "-o", tmp_path / "x.png", "--model", "googlenet")
    assert code == 1
    assert_clean_error(err, "pretrained weights", "--weights none")


def test_keyboard_interrupt_exits_130_quietly(capsys, tmp_path, one, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastdream, "Dreamer", interrupted)
    code, out, err = dream(capsys, one, "-o", tmp_path / "x.png")
    assert code == 130
    assert "Traceback" not in err and "error" not in err


def test_unexpected_errors_are_not_hidden(tmp_path, one, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastdream, "Dreamer", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["dream", str(one), "-o", str(tmp_path / "x.png")])


# --- successful runs, in process -----------------------------------------------------------------


def test_single_file(capsys, tmp_path, one):
    code, out, err = dream(capsys, one, "-o", tmp_path / "x.webp", "--iterations", "2", "--octaves", "2",
                           "--seed", "3", "--layers", "_blocks.5:1,_blocks.9:0.5", "--channels", "1,2,3")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "x.webp")
    assert load_image(tmp_path / "x.webp").shape == load_image(one).shape
    assert "Traceback" not in err


def test_single_file_into_existing_folder(capsys, tmp_path, one):
    (tmp_path / "out").mkdir()
    code, out, err = dream(capsys, one, "-o", tmp_path / "out", *FAST, "--format", "bmp")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.bmp"]
    assert out == "" and err == ""  # --quiet


def test_folder_output_created_with_format(capsys, tmp_path, crops):
    code, out, err = dream(capsys, crops / "a.png", crops / "b.jpg", "-o", tmp_path / "new", *FAST,
                           "--format", "jpg", "--max-side", "40")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.jpg", "b.jpg"]
    assert load_image(tmp_path / "new" / "a.jpg").shape == (3, 33, 40)


@pytest.mark.slow
def test_seed_is_repeatable(capsys, tmp_path, one):
    for name in ("s1.png", "s2.png"):
        code, out, err = dream(capsys, one, "-o", tmp_path / name, "--iterations", "2", "--octaves", "1",
                               "--seed", "5", "--precision", "fp32", "--quiet")
        assert code == 0, err
    assert torch.equal(load_image(tmp_path / "s1.png"), load_image(tmp_path / "s2.png"))


def test_options_reach_the_dreamer(capsys, tmp_path, one, monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, model=fastdream.DEFAULT_MODEL, layers=None, **options):
            seen.update(options, model=model, layers=layers)

        def __call__(self, image, *, seed=None, progress=False):
            seen.update(call_seed=seed, progress=progress)
            return image

    monkeypatch.setattr(fastdream, "Dreamer", Recorder)
    code, out, err = dream(
        capsys, one, "-o", tmp_path / "x.png", "--model", "vgg16", "--layers", "relu4_3:2,relu5_1",
        "--weights", "none", "--octaves", "3", "--octave-scale", "1.5", "--iterations", "7",
        "--step-size", "0.02", "--jitter", "8", "--objective", "mean", "--channels", "4,5",
        "--min-size", "40", "--seed", "9", "--device", "cpu", "--precision", "fp32", "--quiet",
    )
    assert code == 0, err
    assert seen == {
        "model": "vgg16", "layers": {"relu4_3": 2.0, "relu5_1": 1.0}, "weights": None, "octaves": 3,
        "octave_scale": 1.5, "iterations": 7, "step_size": 0.02, "jitter": 8, "objective": "mean",
        "channels": [4, 5], "min_size": 40, "device": "cpu", "precision": "fp32",
        "call_seed": 9, "progress": False,
    }
    # Unset flags are not passed: the API's defaults apply (weights included).
    seen.clear()
    dream(capsys, one, "-o", tmp_path / "y.png", "--layers", "_blocks.3,_blocks.4")
    assert seen == {"model": fastdream.DEFAULT_MODEL, "layers": ["_blocks.3", "_blocks.4"],
                    "call_seed": None, "progress": True}


@pytest.mark.slow
def test_dreamer_is_built_once(capsys, tmp_path, crops, monkeypatch):
    built = []
    real = fastdream.Dreamer

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fastdream, "Dreamer", counting)
    code, out, err = dream(capsys, crops, "-o", tmp_path / "out", *FAST)
    assert code == 0, err
    assert len(built) == 1
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_help_states_the_api_defaults():
    """The defaults written in --help (kept static so --help needs no torch) match the API."""
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["dream"].format_help().split())
    params = inspect.signature(fastdream.Dreamer).parameters
    for flag, name in [("--octaves", "octaves"), ("--octave-scale", "octave_scale"),
                       ("--iterations", "iterations"), ("--jitter", "jitter"), ("--model", "model"),
                       ("--objective", "objective"), ("--precision", "precision")]:
        assert f"(default: {params[name].default})" in help_text, flag
    assert f"(default: {fastdream.DEFAULT_STEP_SIZE})" in help_text


def test_limit_side():
    from fastdream.transforms import limit_side

    image = torch.randint(0, 256, (3, 30, 90), dtype=torch.uint8)
    assert limit_side(image, 90) is image
    small = limit_side(image, 45)
    assert small.shape == (3, 15, 45) and small.dtype == torch.uint8
    flat = torch.full((3, 40, 20), 77, dtype=torch.uint8)
    assert torch.equal(limit_side(flat, 10), torch.full((3, 10, 5), 77, dtype=torch.uint8))



def test_closed_pipe_is_quiet(monkeypatch, capsys):
    """`fastdream layers googlenet | head -1`: exit quietly when the reader has left."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write raises BrokenPipeError
    with capsys.disabled():
        stdout = os.fdopen(write_end, "w", buffering=1)
        monkeypatch.setattr(sys, "stdout", stdout)
        code = cli.main(["layers", "googlenet"])
        monkeypatch.undo()
        stdout.close()  # fd now points at /dev/null: closing must not raise either
    assert code == 141


def test_threads_flag_sets_torch_threads(capsys, tmp_path, one):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        code, _, err = dream(capsys, one, "-o", tmp_path / "x.png", *FAST, "--threads", "1")
        assert code == 0, err
        assert torch.get_num_threads() == 1  # set for the dream (and for Ray's CPU actors, which copy it)
    finally:
        torch.set_num_threads(before)


def test_resume_dreams_again_what_is_not_a_complete_image(capsys, tmp_path, crops):
    out = tmp_path / "out"
    assert dream(capsys, crops, "-o", out, *FAST)[0] == 0
    whole = {path.name: path.read_bytes() for path in out.iterdir()}
    (out / "a.png").write_bytes(whole["a.png"][: len(whole["a.png"]) // 2])  # cut short by a crash
    (out / "b.png").write_bytes(b"")  # a full disk
    code, _, err = dream(capsys, crops, "-o", out, *FAST[:-1], "--resume")
    assert code == 0, err
    assert f"{out / 'a.png'} is not a complete image: dreaming it again" in err and "b.png is not a complete" in err
    assert "skipped 1 image" in err  # c.png
    assert {path.name: path.read_bytes() for path in out.iterdir()} == whole


def test_stale_temp_files_of_our_outputs_removed_others_kept(capsys, tmp_path, crops):
    out = tmp_path / "out"
    out.mkdir()
    ours = [out / ".a.png.0123456789ab.tmp", out / ".c.png.ffffffffffff.tmp"]
    theirs = [out / ".a.png.notes.tmp", out / ".z.png.0123456789ab.tmp", out / "a.png.0123456789ab.tmp",
              out / ".a.png.0123456789AB.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"partial")
    code, _, err = dream(capsys, crops, "-o", out, *FAST[:-1])
    assert code == 0, err
    assert "removed 2 temporary files that an interrupted run left" in err
    assert not any(path.exists() for path in ours)
    assert all(path.read_bytes() == b"partial" for path in theirs)


def test_resume_with_the_input_folder_as_output(capsys, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    save_image(load_image(COFFEE)[:, 101:141, 203:251], folder / "x.jpg")
    assert dream(capsys, folder, "-o", folder, *FAST)[0] == 0
    first = (folder / "x.png").read_bytes()
    code, _, err = dream(capsys, folder, "-o", folder, *FAST[:-1], "--resume")
    assert code == 0, err
    assert "skipped 1 image" in err and (folder / "x.png").read_bytes() == first
    code, _, err = dream(capsys, folder, "-o", folder, *FAST)  # without --resume: an error, nothing lost
    assert code == 1 and "would overwrite the input" in err and (folder / "x.png").read_bytes() == first


def test_unwritable_output_found_before_dreaming(capsys, tmp_path, crops, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the Dreamer was built")

    monkeypatch.setattr(fastdream, "Dreamer", never)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: take a folder no one can write to
            locked = pathlib.Path("/sys")
            if not locked.is_dir() or os.access(locked, os.W_OK) and _can_create(locked):
                pytest.skip("no unwritable folder here")
        code, _, err = dream(capsys, crops, "-o", f"{locked}/", *FAST)
        assert code == 1 and f"cannot write to the output folder {locked}" in err, err
        code, _, err = dream(capsys, crops, "-o", tmp_path / "missing" / "deeper" / "out", *FAST)
        assert code == 1 and "parent folder of -o does not exist" in err
    finally:
        (tmp_path / "locked").chmod(0o755)


def _can_create(folder):
    try:
        (folder / ".fastdream-probe").touch()
    except OSError:
        return False
    (folder / ".fastdream-probe").unlink()
    return True
