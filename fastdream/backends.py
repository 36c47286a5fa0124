"""Which kernels run where: the compiled CUDA kernels, the compiled CPU kernels, or the reference.

Backend names (also what :func:`select_backend` returns):
  - ``"cuda"``: ``fastdream._C`` CUDA kernels (CUDA tensors, extension built with nvcc);
  - ``"cpu-extension"``: ``fastdream._C`` C++/OpenMP kernels (CPU tensors);
  - ``"reference"``: the plain PyTorch twins of ``fastdream._reference`` (any device; slow).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from . import _extension

CUDA = "cuda"
CPU_EXTENSION = "cpu-extension"
REFERENCE = "reference"

_cupy: Optional[bool] = None


def cupy_importable() -> bool:
    """Whether ``import cupy`` works (imported on first ask only; any failure counts as no)."""
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: F401, PLC0415

            _cupy = True
        except Exception:  # noqa: BLE001 - a broken CuPy install is "no CuPy", never a crash
            _cupy = False
    return _cupy


def select_backend(device: torch.device) -> str:
    """The backend ``fastdream.ops`` uses for tensors on ``device`` (a torch.device or a string)."""
    device = torch.device(device)
    if device.type == "cpu":
        return CPU_EXTENSION if _extension.available() else REFERENCE
    if device.type == "cuda":
        return CUDA if _extension.cuda_compiled() else REFERENCE
    return REFERENCE


def backend_info() -> Dict[str, Any]:
    """What this installation can run, for bug reports and for choosing a backend.

    Returns a dict with:
      ``extension`` (bool): ``fastdream._C`` is loaded; ``extension_error``: why not (or None): the
      build's reason where it skipped or failed the extension, and the import error;
      ``cuda_compiled`` (bool): it carries the CUDA kernels; ``cuda_error``: why not (or None), such
      as "the build skipped them: nvcc not found ..."; ``build``: what setup.py recorded
      (``{"extension": "built"|"skipped"|"failed", "extension_reason", "cuda", "cuda_reason"}``, or
      None for a checkout never built); ``cuda_version``: the CUDA runtime it was
      built with ("13.0") or None; ``cuda_archs``: the GPU architectures compiled in ("" if none);
      ``cuda_available`` (bool): ``torch.cuda.is_available()``; ``cupy`` (bool): ``import cupy`` works;
      ``torch``: torch's version; ``devices``: ``{"cpu": name, "cuda": name or None}`` with the backend
      names of :func:`select_backend` (``"cuda"`` is None without a usable CUDA device).
    """
    module = _extension.load()
    cuda_available = torch.cuda.is_available()
    return {
        "extension": module is not None,
        "extension_error": _extension.import_error(),
        "cuda_compiled": _extension.cuda_compiled(),
        "cuda_error": _extension.cuda_error(),
        "build": _extension.build_record(),
        "cuda_version": _extension.cuda_version(),
        "cuda_archs": str(getattr(module, "CUDA_ARCHS", "")) if module is not None else "",
        "cuda_available": cuda_available,
        "cupy": cupy_importable(),
        "torch": torch.__version__,
        "devices": {
            "cpu": select_backend(torch.device("cpu")),
            "cuda": select_backend(torch.device("cuda")) if cuda_available else None,
        },
    }
