"""The build tells the user what it skipped or failed: a warning, and a record that
``backend_info()`` reports (``extension_error``, ``cuda_error``, ``build``)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from fastdream import _extension, backends

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_backend_info_gives_the_builds_reason(monkeypatch):
    record = {"extension": "failed", "extension_reason": "the C++ build failed: g++ exited with status 1",
              "cuda": "skipped", "cuda_reason": "no extension built"}
    monkeypatch.setattr(_extension, "build_record", lambda: record)
    monkeypatch.setattr(_extension, "_loaded", True)
    monkeypatch.setattr(_extension, "_module", None)
    monkeypatch.setattr(_extension, "_error", "ModuleNotFoundError: No module named 'fastdream._C'")
    info = backends.backend_info()
    assert info["extension"] is False and info["build"] == record
    assert info["extension_error"] == (
        "the build failed it: the C++ build failed: g++ exited with status 1 "
        "(ModuleNotFoundError: No module named 'fastdream._C')"
    )
    assert info["cuda_error"].startswith("fastdream._C is not available: the build failed it")


def test_cuda_reason_from_the_record(monkeypatch):
    # a CPU-only extension, whatever this installation has
    monkeypatch.setattr(_extension, "available", lambda: True)
    monkeypatch.setattr(_extension, "cuda_compiled", lambda: False)
    monkeypatch.setattr(_extension, "build_record", lambda: {
        "extension": "built", "extension_reason": None, "cuda": "skipped", "cuda_reason": "nvcc not found"})
    assert _extension.cuda_error() == "the build skipped them: nvcc not found"
    monkeypatch.setattr(_extension, "build_record", lambda: None)
    assert _extension.cuda_error() == "fastdream._C was built without its CUDA kernels"


def _source_tree(tmp_path) -> str:
    """What setup.py needs, copied to ``tmp_path``; returns the folder to put on PYTHONPATH for pybind11."""
    pybind11 = pytest.importorskip("pybind11")
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "csrc", tmp_path / "csrc")
    (tmp_path / "fastdream").mkdir()
    (tmp_path / "fastdream" / "__init__.py").write_text("")
    return str(pathlib.Path(pybind11.__file__).parents[1])


def test_a_failed_compile_warns_and_is_recorded(tmp_path):
    pybind11_home = _source_tree(tmp_path)
    env = dict(os.environ, CC="false", CXX="false", FASTDREAM_BUILD_CUDA="0", FASTDREAM_BUILD_EXT="auto",
               PYTHONPATH=pybind11_home)
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "fastdream setup WARNING: building the compiled extension fastdream._C failed (false exited with " \
           "status 1 on csrc/" in result.stderr
    record = json.loads((tmp_path / "fastdream" / "_build.json").read_text())
    assert record["extension"] == "failed" and record["extension_reason"].startswith("the C++ build failed: false")
    assert record["cuda"] == "skipped"


def test_a_cuda_build_is_strict_about_the_cpp_build_too(tmp_path):
    """FASTDREAM_BUILD_CUDA=1 (the GPU session's build): a failing C++ compile stops the build
    instead of installing pure Python (which would make the CUDA tests compare the twins with
    themselves). nvcc is a stand-in that writes empty objects, so no CUDA toolkit is needed."""
    pybind11_home = _source_tree(tmp_path)
    cuda = tmp_path / "fake-cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "include").mkdir()
    (cuda / "include" / "cuda_runtime.h").write_text("")
    nvcc = cuda / "bin" / "nvcc"
    nvcc.write_text('#!/bin/sh\n'
                    'case "$1" in --list-gpu-arch) echo compute_90; exit 0;; esac\n'
                    'while [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done\n')
    nvcc.chmod(0o755)
    env = dict(os.environ, CC="false", CXX="false", CUDA_HOME=str(cuda), FASTDREAM_BUILD_CUDA="1",
               FASTDREAM_BUILD_EXT="auto", FASTDREAM_CUDA_ARCHS="90", PYTHONPATH=pybind11_home)
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stderr
    assert "CUDA kernels with" in result.stderr  # the (stand-in) nvcc ran first
    assert "Installing pure Python" not in result.stderr
    assert not list((tmp_path / "fastdream").glob("_C*"))
