"""Start-up: ``fastdream --help``, ``models``, ``layers`` of an unknown model and path or argument
errors answer without importing torch (a subprocess each, so the test's own imports do not count)."""
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs cli.main(ARGV) and prints its exit code and whether torch (or torchvision) got imported.
SCRIPT = """
import sys
from fastdream import cli
code = cli.main(sys.argv[1:])
print("RESULT", code, "torch" in sys.modules, "torchvision" in sys.modules)
"""


def run_main(*argv, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, argv)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120)
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT")][-1].split()
    return int(line[1]), line[2] == "True", line[3] == "True", result.stderr


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0),
    (["dream", "--help"], 0),
    (["models"], 0),
    (["layers", "vgg"], 2),                                        # unknown model
    (["dream", "missing.png", "-o", "x.png"], 1),                  # missing input
    (["dream", "exists.png", "-o", "exists.png"], 1),              # the output is the input
    (["dream", "exists.png", "-o", "taken.png"], 1),               # existing output
    (["dream", "exists.png", "-o", "x.png", "--octaves", "x"], 2),  # bad value
    (["zoom", "missing.png", "-o", "z.gif"], 1),
    (["zoom", "exists.png", "-o", "taken.gif"], 1),
    (["video", "missing.mp4", "-o", "v.gif"], 1),
    (["dream", "exists.png", "-o", "x.png", "--guide", "missing.png"], 1),  # guide and weights files
    (["dream", "exists.png", "-o", "x.png", "--weights", "missing.pth"], 1),
    (["zoom", "exists.png", "-o", "z.gif", "--guide", "missing.png"], 1),
    (["dream", "exists.png", "-o", "x.png", "--threads", "0"], 2),
])
def test_answers_without_torch(tmp_path, argv, code):
    for name in ("exists.png", "taken.png", "taken.gif"):
        (tmp_path / name).write_bytes(b"not read")
    got, torch_imported, torchvision_imported, err = run_main(*argv, cwd=tmp_path)
    assert got == code, err
    assert not torch_imported and not torchvision_imported, err


def test_list_models_and_registry_without_torch(tmp_path):
    code = ("import sys, fastdream; from fastdream.models import get_spec; "
            "names = fastdream.list_models(); get_spec('vgg16'); fastdream.sample_image_path('coffee'); "
            "print('torch' in sys.modules, names[0] == fastdream.DEFAULT_MODEL)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["False", "True"], out.stderr
