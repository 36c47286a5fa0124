"""The options schema (``fastdream.options``): checks, canonical values, errors that name the option,
and the command line built from it."""
import dataclasses
import inspect
import pickle
import subprocess
import sys

import pytest

import fastdream
from fastdream import cli, options
from fastdream.options import OptionError, Options, OptionTypeError


def test_defaults_agree_with_the_dreamer_signature():
    params = inspect.signature(fastdream.Dreamer).parameters
    assert list(params)[:2] == ["model", "layers"]
    for field in dataclasses.fields(Options):
        assert params[field.name].default == field.default, field.name


def test_canonical_values():
    o = Options(layers="_blocks.9", classes=281, smoothing=2.0, normalize=(0.5, [0.1, 0.2, 0.3]), channels=3)
    assert o.layers == {"_blocks.9": 1.0} and o.classes == {281: 1.0} and o.channels == [3]
    assert o.smoothing == (1.0, 2.0, 4.0) and o.normalize == ((0.5,) * 3, (0.1, 0.2, 0.3))
    assert o.step_size == options.DEFAULT_STEP_SIZE
    assert Options(**o.as_dict()) == o  # canonical values are valid options: a Dreamer can be rebuilt
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.octaves = 3


def test_errors_name_the_option_in_python_and_flag_spelling():
    with pytest.raises(OptionError) as caught:
        Options(octave_scale=0.5)
    assert str(caught.value) == "octave_scale must be > 1.0, got 0.5"
    assert caught.value.option == "octave_scale"
    assert caught.value.render(options.flag) == "--octave-scale must be > 1.0, got 0.5"
    with pytest.raises(OptionTypeError) as caught:  # a TypeError and a ValueError
        Options(octaves="4")
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
    with pytest.raises(OptionError) as caught:
        Options(guide=fastdream.sample_image(), channel_mode="weakest")
    assert caught.value.options == ("guide", "channel_mode")
    assert caught.value.render(options.flag) == "--guide and --channel-mode exclude each other"
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.options == caught.value.options and str(copy) == str(caught.value)


def test_layer_weight_messages_keep_braces_literal():
    with pytest.raises(OptionError, match=r"layers\['\{x\}'\] \(weight\) must be finite"):
        Options(layers={"{x}": float("nan")})


def test_the_command_line_offers_every_option_with_a_group():
    parser = cli.build_parser()
    dream = parser._subparsers._group_actions[0].choices["dream"]
    flags = {s for action in dream._actions for s in action.option_strings}
    for field in dataclasses.fields(Options):
        if field.metadata["group"] is not None:
            assert options.flag(field.name) in flags, field.name
        else:
            assert options.flag(field.name) not in flags, field.name
    zoom = parser._subparsers._group_actions[0].choices["zoom"]
    assert "--init" not in {s for action in zoom._actions for s in action.option_strings}


@pytest.mark.parametrize("argv, message", [
    (["--octaves", "0"], "fastdream: error: --octaves must be >= 1, got 0"),
    (["--octaves", "two"], "fastdream: error: argument --octaves: invalid int value: 'two'"),
    (["--tile-margin", "-1"], "fastdream: error: argument --tile-margin: must be >= 0, got -1"),
    (["--classes", "no such class"], "fastdream: error: --classes: unknown class name 'no such class'"),
])
def test_command_line_errors_are_one_line_in_flag_syntax(capsys, tmp_path, argv, message):
    code = cli.main(["dream", "--demo", "-o", str(tmp_path / "x.png"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(message), err
    assert "_" not in err.split(":", 2)[-1].split("'")[0], err  # no Python names before any quoted text


def test_options_module_imports_no_torch():
    code = "import sys, fastdream.options, fastdream.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
