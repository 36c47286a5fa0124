"""Messages: unknown layer and model names (closest few, how to list all, right in Python and on the
command line), one-line argparse errors, install hints, the --max-memory tiling note."""
import re
import types

import pytest
import torch

import fastdream
from fastdream import cli, video
from fastdream.image_io import load_image, sample_image_path, save_image

from conftest import run


@pytest.fixture
def one(tmp_path):
    path = tmp_path / "in.png"
    save_image(load_image(sample_image_path())[:, 60:100, 150:198], path)
    return path


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastdream: error: "), err
    assert "usage:" not in err and "Traceback" not in err
    return lines[0]


def suggestions(message):
    match = re.search(r"(?:closest|names look like):? (.*?) \(default", message)
    return match.group(1).split(", ")


def test_unknown_layer_in_python():
    with pytest.raises(ValueError) as info:
        fastdream.Dreamer("vgg16", "relu4_33", weights=None)
    message = str(info.value)
    count = len(fastdream.list_layers("vgg16"))
    assert message.startswith("layers: model 'vgg16' has no layer 'relu4_33'; closest: relu4_3")
    assert 1 <= len(suggestions(message)) <= 5
    assert "(default: relu4_3)" in message
    assert message.endswith(f"fastdream.list_layers('vgg16') lists all {count} names")
    assert "fastdream layers" not in message


def test_unknown_layer_of_a_module_names_the_python_call():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"no layer '2'; .*fastdream.list_layers\(model\) lists all 2 names$"):
        fastdream.Dreamer(model, "2")


def test_unknown_layer_on_the_command_line(capsys, one, tmp_path):
    code, out, err = run(capsys, "dream", one, "-o", tmp_path / "x.png", "--layers", "_blocks.99")
    line = one_error_line(err)
    assert code == 2
    count = len(fastdream.list_layers("efficientnet_lite0"))
    assert line.startswith("fastdream: error: --layers: model 'efficientnet_lite0' has no layer '_blocks.99'; closest: ")
    assert "_blocks.9" in suggestions(line) and len(suggestions(line)) <= 5
    assert line.endswith(f"run 'fastdream layers efficientnet_lite0' to list all {count} names")
    assert "list_layers" not in line and len(line) < 300


def test_nothing_alike_shows_a_few_shallow_names(capsys, one, tmp_path):
    code, out, err = run(capsys, "dream", one, "-o", tmp_path / "x.png", "--layers", "nonexistent")
    line = one_error_line(err)
    assert "names look like _conv_stem, _bn0, _blocks" in line and len(suggestions(line)) == 5
    assert "(default: _blocks.9)" in line


def test_unknown_model_suggests_the_closest(capsys):
    with pytest.raises(ValueError, match=r"unknown model 'googlenett' \(did you mean googlenet\?\); valid names: "):
        fastdream.list_layers("googlenett")
    code, out, err = run(capsys, "layers", "VGG16")
    assert code == 2 and one_error_line(err).startswith(
        "fastdream: error: unknown model 'VGG16' (did you mean vgg16?); valid names: efficientnet_lite0, ")


@pytest.mark.parametrize("argv, fragment, help", [
    (["dream", "in.png", "-o", "x.png", "--octaves", "x"], "argument --octaves: invalid int value: 'x'", "dream"),
    (["dream", "in.png", "-o", "x.png", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0", "dream"),
    (["dream", "in.png", "-o", "x.png", "--objective", "max"], "argument --objective: invalid choice: 'max'", "dream"),
    (["dream", "in.png", "-o", "x.png", "--nope"], "unrecognized arguments: --nope", ""),
    (["dream", "in.png"], "the following arguments are required: -o/--output", "dream"),
    (["zoom", "in.png", "-o", "z.gif", "--fps", "-1"], "argument --fps: must be a finite number > 0", "zoom"),
    (["video", "in.gif", "-o", "v.gif", "--blend", "1"], "argument --blend: must be in [0, 1)", "video"),
    (["paint"], "argument COMMAND: invalid choice: 'paint'", ""),
])
def test_argparse_errors_are_one_line(capsys, argv, fragment, help):
    code, out, err = run(capsys, *argv)
    line = one_error_line(err)
    assert code == 2 and fragment in line
    assert line.endswith(f"(see '{' '.join(filter(None, ['fastdream', help]))} --help')")


def test_install_hints_work_for_this_package(capsys, monkeypatch, one, tmp_path):
    assert "pip install av" in cli.build_parser()._subparsers._group_actions[0].choices["zoom"].format_help()

    def no_av():
        raise ImportError(video._INSTALL_HINT)

    monkeypatch.setattr(video, "_import_av", no_av)
    code, out, err = run(capsys, "zoom", one, "-o", tmp_path / "z.mp4", "--frames", "1")
    line = one_error_line(err)
    assert code == 1 and line.endswith("needs PyAV: pip install av") and "fastdream[" not in line


def test_weights_error_in_flag_syntax(capsys, monkeypatch, one, tmp_path):
    def offline(*args, **kwargs):
        raise fastdream.WeightsUnavailableError("pass weights=None", "pass --weights none")

    monkeypatch.setattr(fastdream, "Dreamer", offline)
    code, out, err = run(capsys, "dream", one, "-o", tmp_path / "x.png", "--model", "googlenet")
    assert code == 1 and one_error_line(err) == "fastdream: error: pass --weights none"


class Tiled:
    """A Dreamer stand-in that reports a tiling (``last_tiling``, the hook the CLI reads)."""

    def __init__(self, *args, **kwargs):
        self.last_tiling = None

    def __call__(self, image, *, seed=None, progress=False, size=None):
        self.last_tiling = types.SimpleNamespace(tile=256, margin=64)
        return image


@pytest.mark.parametrize("flags, why", [(["--max-memory", "1.5G"], "--max-memory 1.5G"),
                                        (["--tile-size", "256"], "--tile-size 256")])
def test_tiling_is_reported_once(capsys, monkeypatch, one, tmp_path, flags, why):
    monkeypatch.setattr(fastdream, "Dreamer", Tiled)
    save_image(load_image(one), tmp_path / "two.png")
    code, out, err = run(capsys, "dream", one, tmp_path / "two.png", "-o", tmp_path / "out", *flags)
    assert code == 0, err
    note = f"fastdream: dreaming in tiles of 256×256 px (+64 px margin) for {why}"
    assert err.count(note) == 1, err
    code, out, err = run(capsys, "dream", one, "-o", tmp_path / "q.png", "--quiet", *flags)
    assert code == 0 and err == ""


def test_a_dream_gone_non_finite_is_one_images_failure_and_one_line(monkeypatch, capsys):
    from fastdream.errors import NonFiniteError, per_image_errors

    assert issubclass(NonFiniteError, per_image_errors())  # a folder run goes on past it

    def nan(args):
        raise NonFiniteError("the model's output at layer 'x' is not finite")

    monkeypatch.setitem(cli.COMMANDS, "dream", nan)
    assert cli.main(["dream", "in.png", "-o", "out.png"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not finite" in err and "Traceback" not in err


def test_guide_and_class_index_errors_name_the_argument():
    import numpy as np

    from fastdream.objectives.classes import class_objective

    with pytest.raises(TypeError, match=r"^guide must be a torch\.Tensor"):
        fastdream.Dreamer(guide=np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match=r"indices\[1\] must be >= 0, got -2"):
        class_objective([1, -2])
