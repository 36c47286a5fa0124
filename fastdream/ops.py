"""The fused kernels of fastdream, with every argument checked before any pointer moves.

    >>> out = ops.jitter(x, shifts)                          # per-image roll by shifts[b] = (dy, dx)
    >>> ops.normalized_step_(x, grad, shifts, 1.5 / 255, 0.0, 1.0)   # fused unroll + step + clip
    >>> base, x = ops.resize_add(img, detail, (H2, W2))      # the octave resize: base + resized detail

This is where the backend is decided (``docs/architecture.md``, "Backends"): callers (the octave
loop of ``fastdream.engine``, the benchmarks) call these ops and nothing else. Dispatch per call, by
the device of the tensors (``fastdream.backends.select_backend``):
  - CPU tensors: the C++/OpenMP kernels of ``fastdream._C`` (threads: ``torch.get_num_threads()``);
  - CUDA tensors: the CUDA kernels of ``fastdream._C``, launched on torch's current stream of that
    device, no host synchronisation, no host-to-device copy (both ops may be captured in a CUDA graph;
    new shifts can be written into the captured ``shifts`` tensor between replays);
  - otherwise (extension not built, built without CUDA, or another device type): the reference twins
    of ``fastdream._reference``, with one ``RuntimeWarning`` per process saying why and how to build.
``resize_add``: CUDA tensors with CuPy, the fused CuPy kernel of ``fastdream.resize``; elsewhere the
torch twin (on CUDA without CuPy, or where the kernel fails, after one warning).

The ops are not tracked by autograd (they write through raw pointers): call them on detached data.

Errors: a wrong type raises ``TypeError``, a wrong value (shape, device, layout, range) ``ValueError``;
every message names the op, the argument and what was expected. A CUDA launch error becomes a
``RuntimeError``.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple, Union

import torch

from . import _extension, _reference, _scratch, resize
from ._checks import check_per_channel, check_real, check_size, check_tensor, describe, type_name
from .backends import CPU_EXTENSION, CUDA, select_backend

__all__ = ["compiled", "jitter", "normalized_step_", "resize_add"]

Bound = Union[float, Sequence[float]]

_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_FLOAT_DTYPES = "float32, bfloat16 or float16"
MAX_CHANNELS = 64  # per-channel constants travel by value to the kernels (csrc/params.h kMaxChannels)

_warned: set = set()


# ----------------------------------------------------------------------------------------- checks


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _check_image(op: str, name: str, t, dtypes: Sequence[torch.dtype], expected: str) -> torch.Tensor:
    return check_tensor(f"ops.{op}", name, t, dims=4, shape="Tensor[B, C, H, W]", dtypes=dtypes, dtype=expected)


def _check_shifts(op: str, shifts, batch: int, device: torch.device) -> torch.Tensor:
    expected = f"an int32 tensor of shape [B, 2] = [{batch}, 2] on {device}"
    if not isinstance(shifts, torch.Tensor):
        raise TypeError(f"ops.{op}: shifts must be {expected}, got {type_name(shifts)}")
    got = f"ops.{op}: shifts must be {expected}, got {describe(shifts)}"
    if shifts.dtype != torch.int32:
        raise TypeError(got)
    if tuple(shifts.shape) != (batch, 2) or shifts.device != device:
        raise ValueError(got)
    return shifts.contiguous()


def _extent(t: torch.Tensor):
    start = t.data_ptr()
    span = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) + 1
    return start, start + span * t.element_size()


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.device != b.device or a.numel() == 0 or b.numel() == 0:
        return False
    a0, a1 = _extent(a)
    b0, b1 = _extent(b)
    return a0 < b1 and b0 < a1


def _fallback_warning(device: torch.device) -> None:
    if not _extension.available():
        key = "missing"
        why = (f"the compiled extension fastdream._C is not available ({_extension.import_error()}); "
               f"{_extension.BUILD_HINT}")
    elif device.type == "cuda":
        key = "no-cuda"
        why = ("fastdream._C was built without its CUDA kernels (nvcc was not found at build time); rebuild "
               "with nvcc on PATH or in CUDA_HOME (FASTDREAM_BUILD_CUDA=1 makes a missing nvcc an error)")
    else:
        key = f"device-{device.type}"
        why = f"fastdream._C has no kernels for {device.type} tensors"
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(f"fastdream.ops: {why}. Using the slow pure-PyTorch reference kernels instead.",
                  RuntimeWarning, stacklevel=4)


def compiled(device: torch.device) -> bool:
    """Whether the ops run compiled kernels for tensors on ``device`` (else the reference twins).
    Asks without warning; a CUDA graph of the ops is worth capturing only where this is True."""
    return select_backend(device) in (CPU_EXTENSION, CUDA)


def _compiled(device: torch.device):
    """``fastdream._C`` when it has kernels for ``device``; else None, after the once-per-process warning."""
    if compiled(device):
        return _extension.load()
    _fallback_warning(device)
    return None


def _launch(C, name: str, device: torch.device, **args) -> None:
    """Calls ``C.<name>_cuda`` on torch's current stream of ``device``, or ``C.<name>_cpu``."""
    if device.type == "cuda":
        stream = int(torch.cuda.current_stream(device).cuda_stream)
        getattr(C, f"{name}_cuda")(**args, stream=stream, device=device.index)
    else:
        getattr(C, f"{name}_cpu")(**args, num_threads=torch.get_num_threads())


# -------------------------------------------------------------------------------------------- ops


def jitter(src: torch.Tensor, shifts: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Roll each image by its own shift: ``out[b] = torch.roll(src[b], (dy_b, dx_b), (-2, -1))``.

    Bit-exact for any shift (negative, larger than H or W).

    Args:
        src: Tensor[B, C, H, W], float32, bfloat16 or float16. Not modified. A non-contiguous ``src``
            (a permuted or sliced view, channels_last) is first copied to a contiguous tensor.
        shifts: int32 Tensor[B, 2] of (dy, dx) per image, on the device of ``src``. Read on the
            device: it may be rewritten in place between CUDA graph replays.
        out: optional preallocated output: Tensor[B, C, H, W] of ``src``'s dtype on the same device,
            contiguous, not overlapping ``src`` or ``shifts``.

    Returns:
        ``out`` (allocated when not given), Tensor[B, C, H, W], contiguous.
    """
    op = "jitter"
    src = _check_image(op, "src", src, tuple(_DTYPE_CODES), _FLOAT_DTYPES)
    batch, channels, height, width = src.shape
    device = src.device
    shifts = _check_shifts(op, shifts, batch, device)
    original_src = src
    src = src.detach().contiguous()

    if out is None:
        out = torch.empty(tuple(src.shape), dtype=src.dtype, device=device)
    else:
        out = check_tensor(f"ops.{op}", "out", out)
        expected = f"a contiguous {_dtype_name(src.dtype)} tensor of shape {_shape(src)} on {device}"
        if out.dtype != src.dtype:
            raise TypeError(f"ops.{op}: out must be {expected}, got {describe(out)}")
        if out.shape != src.shape or out.device != device or not out.is_contiguous():
            layout = "" if out.is_contiguous() else "non-contiguous "
            raise ValueError(f"ops.{op}: out must be {expected}, got {layout}{describe(out)}")
        if _overlaps(out, original_src) or _overlaps(out, shifts):
            raise ValueError(f"ops.{op}: out must not overlap src or shifts (the roll cannot run in place)")

    if out.numel() == 0:
        return out

    C = _compiled(device)
    if C is not None:
        _launch(
            C, "jitter", device,
            src=src.data_ptr(), out=out.data_ptr(), shifts=shifts.data_ptr(),
            batch=batch, channels=channels, height=height, width=width, dtype=_DTYPE_CODES[src.dtype],
        )
        return out

    with torch.no_grad():
        out.copy_(_reference.jitter_ref(src, shifts))
    return out


def normalized_step_(
    img: torch.Tensor,
    grad: torch.Tensor,
    shifts: torch.Tensor,
    step_size: float,
    lo: Bound,
    hi: Bound,
) -> torch.Tensor:
    """The normalised gradient-ascent step of DeepDream, fused, in place on ``img``.

    ``img[b] = clip(img[b] + step_size / mean|grad[b]| * roll(grad[b], (-dy_b, -dx_b)), lo_c, hi_c)``
    where the mean runs over image b's own C*H*W gradient values (computed on the device, in double;
    nothing is read back to the host), and ``roll`` undoes the jitter the gradient was taken at.
    Scale-free like the seed's step: no epsilon, only an all-zero gradient is guarded (that image
    does not move); see ``_reference.step_scale_ref``.

    Args:
        img: float32 Tensor[B, C, H, W], contiguous (NCHW), updated in place.
        grad: Tensor[B, C, H, W], float32, bfloat16 or float16, same device; not modified, must not
            overlap ``img``. NCHW-contiguous and channels_last (NHWC) gradients are read as they are
            (a channels_last model hands back the latter); any other layout is first copied to a
            contiguous tensor.
        shifts: int32 Tensor[B, 2], the (dy, dx) the gradient's input was rolled by (as given to
            :func:`jitter`), on the device of ``img``.
        step_size: finite float, the mean absolute change per pixel.
        lo, hi: clip bounds, each a float or 1 or C floats (per-channel: C <= 64), ``lo <= hi``;
            +-inf disables a side.

    Returns:
        ``img``.
    """
    op = "normalized_step_"
    img = _check_image(op, "img", img, (torch.float32,), "float32")
    batch, channels, height, width = img.shape
    device = img.device
    if not img.is_contiguous():
        raise ValueError(f"ops.{op}: img must be contiguous (NCHW): it is updated in place and cannot go "
                         f"through a copy; got strides {tuple(img.stride())} for {describe(img)}")
    grad = _check_image(op, "grad", grad, tuple(_DTYPE_CODES), _FLOAT_DTYPES)
    if grad.shape != img.shape or grad.device != device:
        raise ValueError(f"ops.{op}: grad must have the shape and device of img, {_shape(img)} on {device}, "
                         f"got {describe(grad)}")
    shifts = _check_shifts(op, shifts, batch, device)
    step_size = check_real(f"ops.{op}", "step_size", step_size)
    lo_values = check_per_channel(f"ops.{op}", "lo", lo, channels, MAX_CHANNELS)
    hi_values = check_per_channel(f"ops.{op}", "hi", hi, channels, MAX_CHANNELS)
    lo_full = lo_values * channels if len(lo_values) == 1 else lo_values
    hi_full = hi_values * channels if len(hi_values) == 1 else hi_values
    bad = [c for c in range(channels) if lo_full[c] > hi_full[c]]
    if bad:
        raise ValueError(f"ops.{op}: lo must be <= hi in every channel, got lo={lo_values}, hi={hi_values}")
    if _overlaps(grad, img) or _overlaps(shifts, img):
        raise ValueError(f"ops.{op}: grad and shifts must not overlap img (img is written in place)")

    if img.numel() == 0:
        return img

    grad = grad.detach()
    if grad.is_contiguous():
        channels_last = False
    elif grad.is_contiguous(memory_format=torch.channels_last):
        channels_last = True
    else:
        grad, channels_last = grad.contiguous(), False

    C = _compiled(device)
    if C is not None:
        args = dict(img=img.data_ptr(), grad=grad.data_ptr(), shifts=shifts.data_ptr(),
                    batch=batch, channels=channels, height=height, width=width,
                    grad_dtype=_DTYPE_CODES[grad.dtype], grad_channels_last=channels_last,
                    step_size=step_size, lo=lo_values, hi=hi_values)
        if device.type != "cuda":
            _launch(C, "normalized_step", device, **args)
            return img
        # the per-image partial sums of |grad|: a kept buffer, alive until both kernels are enqueued
        key = _scratch.step_key(device, int(torch.cuda.current_stream(device).cuda_stream))
        numel = C.step_workspace_size(batch, channels, height, width)
        with _scratch.STEP.lock:
            workspace = _scratch.STEP.get(key, numel, device)
            _launch(C, "normalized_step", device, **args, workspace=workspace.data_ptr())
        return img

    with torch.no_grad():
        _reference.normalized_step_ref(img, grad, shifts, step_size, lo_values, hi_values)
    return img


def resize_add(
    img: torch.Tensor, detail: Optional[torch.Tensor], size: Sequence[int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Resize the image and the carried detail to one octave size and add them, in one pass on CUDA.

    ``base = resize(img, size)``, ``x = base + resize(detail, size)`` with ``resize`` the bilinear
    ``F.interpolate(size=size, align_corners=False, antialias=False)`` (a copy where the size is
    unchanged). The twin is ``_reference.resize_add_ref``.

    Args:
        img: float32 Tensor[B, C, H, W], H, W >= 1. Not modified.
        detail: float32 Tensor[B, C, h, w] on the device of ``img`` (any h, w >= 1), or None for a zero
            detail (then ``x`` is a copy of ``base``). Not modified.
        size: (H', W'), positive ints.

    Returns:
        (base, x): new contiguous float32 Tensor[B, C, H', W'].

    Backend: on CUDA with CuPy the fused kernel of ``fastdream.resize`` (a non-contiguous ``img`` or
    ``detail`` is first copied to a contiguous tensor; the result is within float rounding (~1e-6)
    of ``F.interpolate``); elsewhere, or where that kernel cannot run (said once), the torch twin,
    bit-exact with ``resize_add_ref`` for any layout.

    Raises:
        TypeError: an argument of the wrong type or dtype. ValueError: a wrong shape, device or layout.
    """
    op = "ops.resize_add"
    source = dict(dims=4, shape="Tensor[B, C, H, W]", dtypes=(torch.float32,), dtype="float32")
    img = check_tensor(op, "img", img, **source)
    detail = check_tensor(op, "detail", detail, optional=True, **source)
    size = check_size(op, "size", size)
    if detail is not None:
        if detail.shape[:2] != img.shape[:2]:
            raise ValueError(f"{op}: detail must have the batch and channels of img {list(img.shape[:2])}, "
                             f"got {describe(detail)}")
        if detail.device != img.device:
            raise ValueError(f"{op}: detail must be on the device of img ({img.device}), got {detail.device}")
    for name, t in (("img", img), ("detail", detail)):
        if t is not None and t.numel() == 0 and t.shape[0] * t.shape[1] > 0:
            raise ValueError(f"{op}: {name} must have H, W >= 1, got {describe(t)}")
    shape = (img.shape[0], img.shape[1], *size)
    if img.shape[0] * img.shape[1] == 0:
        return img.new_empty(shape), img.new_empty(shape)
    if resize.cupy_usable(img.device):
        fused = resize.fused_resize_add(img, detail, shape)
        if fused is not None:
            return fused
    with torch.no_grad():
        if detail is None:
            base = _reference.resize_ref(img, size)
            x = base.clone()
        else:
            base, x = _reference.resize_add_ref(img, detail, size)
    return base.contiguous(), x.contiguous()
