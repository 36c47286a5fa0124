"""Loads the compiled extension ``fastdream._C`` once, lazily, and never raises.

``available()`` says whether it loaded, ``cuda_compiled()`` whether it carries the CUDA kernels, and
``import_error()`` why it did not load (what the build recorded, when it skipped or failed the
extension, and the text of the ImportError), ``cuda_error()`` why it has no CUDA kernels, and
``build_record()`` what setup.py recorded in ``fastdream/_build.json``; for messages and
``fastdream.backend_info()``. Build it with ``pip install .`` (a C++17 compiler; nvcc as well for
the CUDA kernels); ``FASTDREAM_BUILD_EXT=0`` installs without it.
"""
from __future__ import annotations

import json
import threading
from importlib import resources
from types import ModuleType
from typing import Any, Dict, Optional

_lock = threading.Lock()
_loaded = False
_module: Optional[ModuleType] = None
_error: Optional[str] = None

API_VERSION = 2
"""The ``API_VERSION`` of ``csrc/bindings.cpp`` this source calls: a module built from older sources
(an in-place build not redone after a pull) is refused, so the ops fall back, with a warning saying
so, rather than call kernels whose signature or arithmetic changed."""

BUILD_HINT = (
    "build it with `pip install .` (or `pip install -e .`) from the fastdream source tree: that needs a "
    "C++17 compiler, and nvcc on PATH or in CUDA_HOME for the CUDA kernels"
)


def load() -> Optional[ModuleType]:
    """The ``fastdream._C`` module, or None when it cannot be imported (see :func:`import_error`)."""
    global _loaded, _module, _error
    if _loaded:
        return _module
    with _lock:
        if not _loaded:
            try:
                from fastdream import _C  # noqa: PLC0415 - the point of this module

                built = getattr(_C, "API_VERSION", 1)
                if built != API_VERSION:
                    raise ImportError(f"fastdream._C at {_C.__file__} is a stale build (API {built}; these "
                                      f"sources need API {API_VERSION}): rebuild it")
                _module, _error = _C, None
            except Exception as error:  # noqa: BLE001 - ImportError, or a broken build's OSError
                _module, _error = None, f"{type(error).__name__}: {error}"
            _loaded = True
    return _module


def available() -> bool:
    """Whether ``fastdream._C`` (at least its CPU kernels) is loaded."""
    return load() is not None


def cuda_compiled() -> bool:
    """Whether ``fastdream._C`` is loaded and was built with its CUDA kernels."""
    module = load()
    return module is not None and bool(module.cuda_compiled())


def cuda_version() -> Optional[str]:
    """CUDA runtime version the extension was built with, as "13.0", or None."""
    module = load()
    if module is None or not module.cuda_compiled():
        return None
    v = int(module.cuda_version())
    return f"{v // 1000}.{(v % 1000) // 10}"


def build_record() -> Optional[Dict[str, Any]]:
    """What setup.py recorded about the build in ``fastdream/_build.json``: ``extension`` and
    ``cuda``, each ``"built"``, ``"skipped"`` or ``"failed"``, with ``extension_reason`` and
    ``cuda_reason`` (None, or why not). None where there is no record (a checkout never built, or
    a record that cannot be read)."""
    try:
        record = json.loads((resources.files("fastdream") / "_build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def import_error() -> Optional[str]:
    """Why ``fastdream._C`` did not load (None when it did): the build's reason where the build
    skipped or failed it, then the ImportError."""
    load()
    if _error is None:
        return None
    record = build_record() or {}
    if record.get("extension") in ("skipped", "failed") and record.get("extension_reason"):
        return f"the build {record['extension']} it: {record['extension_reason']} ({_error})"
    return _error


def cuda_error() -> Optional[str]:
    """Why ``fastdream._C`` has no CUDA kernels (None when it has them)."""
    if cuda_compiled():
        return None
    if not available():
        return "fastdream._C is not available: " + str(import_error())
    record = build_record() or {}
    if record.get("cuda") in ("skipped", "failed") and record.get("cuda_reason"):
        return f"the build {record['cuda']} them: {record['cuda_reason']}"
    return "fastdream._C was built without its CUDA kernels"
