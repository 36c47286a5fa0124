"""The one place of argument rules (fastdream._checks): every public function that checks an
argument names itself, the argument and what it expected, with TypeError for a type and ValueError
for a value, and the options word the same rules as OptionErrors."""
import pytest
import torch

from fastdream import _checks, ops
from fastdream.colors import keep_colors
from fastdream.objectives import channel_objective, class_objective, guided_objective, select_channels
from fastdream.options import OptionError, OptionTypeError, Options
from fastdream.regularizers import gaussian_smooth, laplacian_normalize
from fastdream.ops import resize_add
from fastdream.transforms import zoom_transform

X = torch.rand(2, 3, 8, 8)
S = torch.zeros(2, 2, dtype=torch.int32)

CASES = [
    # (call, error, the message's start)
    (lambda: ops.jitter(X.double(), S), TypeError, "ops.jitter: src must be a float32, bfloat16 or float16"),
    (lambda: ops.normalized_step_(X, X.clone(), S, "0.1", 0.0, 1.0), TypeError,
     "ops.normalized_step_: step_size must be a real number, got str"),
    (lambda: ops.normalized_step_(X, X.clone(), S, float("inf"), 0.0, 1.0), ValueError,
     "ops.normalized_step_: step_size must be finite, got inf"),
    (lambda: resize_add(X, None, (6, 0)), ValueError, "ops.resize_add: size must be a (height, width) pair of ints >= 1"),
    (lambda: resize_add(X[0], None, (6, 6)), ValueError, "ops.resize_add: img must be a 4-D Tensor[B, C, H, W]"),
    (lambda: gaussian_smooth(X, [1.0, -2.0]), ValueError, "gaussian_smooth: sigmas must be > 0.0, got -2.0"),
    (lambda: gaussian_smooth(X.long(), 1.0), TypeError, "gaussian_smooth: grad must be a floating-point"),
    (lambda: laplacian_normalize(X, 1.5), TypeError, "laplacian_normalize: levels must be an int >= 0, got float"),
    (lambda: zoom_transform(X, zoom=0.0), ValueError, "zoom_transform: zoom must be > 0.0, got 0.0"),
    (lambda: zoom_transform(X, rotate=float("nan")), ValueError, "zoom_transform: rotate must be finite"),
    (lambda: keep_colors(X, X.long()), TypeError, "keep_colors: dreamed must be a floating-point"),
    (lambda: select_channels(X, "loudest", 2), ValueError, "select_channels: mode must be one of"),
    (lambda: select_channels(X, "strongest", True), TypeError, "select_channels: count must be an int, got bool"),
    (lambda: channel_objective(torch.zeros(2, 2, dtype=torch.long), base="max"), ValueError,
     "channel_objective: base must be 'l2' or 'mean', got 'max'"),
    (lambda: guided_objective(X[0]), ValueError, "guided_objective: guide_acts must be a 4-D"),
    (lambda: class_objective([1, -3]), ValueError, "class_objective: indices[1] must be >= 0, got -3"),
]


@pytest.mark.parametrize("call, error, start", CASES, ids=[c[2].split(":")[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_messages_name_the_function_the_argument_and_what_was_expected(call, error, start):
    with pytest.raises(error) as info:
        call()
    assert str(info.value).startswith(start), str(info.value)


def test_options_word_the_same_rules_as_option_errors():
    with pytest.raises(OptionTypeError, match="^iterations must be an int >= 0, got float$"):
        Options(iterations=1.5)
    with pytest.raises(OptionError, match=r"^octave_scale must be > 1.0, got 0.5$") as info:
        Options(octave_scale=0.5)
    assert info.value.for_command_line() == "--octave-scale must be > 1.0, got 0.5"
    # the same rule, raised for a function: one wording
    assert _checks.real_problem(0.5, greater_than=1.0) == (ValueError, "must be > 1.0, got 0.5")


def test_a_rule_text_with_braces_is_not_a_template():
    with pytest.raises(OptionError, match=r"precision must be one of .* got '\{x\}'"):
        Options(precision="{x}")


@pytest.mark.parametrize("bad, error, words", [
    ("pixels", TypeError, "image must be a torch.Tensor"),
    (torch.zeros(3, 8, 8, dtype=torch.int32), TypeError, "image must be uint8 or float"),
    (torch.rand(3, 8, 8, device="meta"), ValueError, "image is on the meta device"),
    (torch.rand(8, 8, 3), ValueError, "channels last?"),
])
def test_check_image(bad, error, words):
    with pytest.raises(error, match=words.replace("?", r"\?")):
        _checks.check_image(bad)
