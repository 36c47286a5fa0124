"""The CuPy kernel of the octave resize-add, which ``fastdream.ops.resize_add`` runs on CUDA tensors
(the ops decide the backend: docs/architecture.md, "Backends").

    >>> if cupy_usable(img.device): base, x = fused_resize_add(img, detail, (B, C, H2, W2))

``resize`` is ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` with ``size=``,
and a plain copy where the size does not change (``_reference.resize_ref``). One kernel reads both
sources and writes ``base`` and ``x`` in a single pass, on torch's current stream of that device,
tensors shared zero-copy through DLPack, no host synchronisation. Where CuPy is missing, or the kernel
does not compile or launch for a device, one ``RuntimeWarning`` says so and the ops use torch.

Not tracked by autograd: call it on detached data.
"""
from __future__ import annotations

import functools
import threading
import warnings
from typing import Optional, Tuple

import torch

from .backends import cupy_importable

__all__ = ["cupy_available", "cupy_usable", "fused_resize_add"]

_BLOCK = 256
_MAX_BLOCKS = 65535  # a grid-stride loop covers the rest
_warned: set = set()
_compiled: set = set()  # CUDA device indices the kernel compiled for
_lock = threading.Lock()

# Bilinear, align_corners=False, as ATen's upsample_bilinear2d CUDA kernel computes it in float:
# scale = in / out (float), src = max(scale * (dst + 0.5) - 0.5, 0), the upper neighbour clamped at the
# edge. A source of the output's size is read, not interpolated (ATen copies in that case too).
_KERNEL_SOURCE = r"""
// One axis: the lower source index, the step to the upper one (0 at the edge), the upper weight.
__device__ __forceinline__ void fd_axis(float scale, int dst, int in_size, int* i0, int* step, float* l1) {
    float r = scale * ((float)dst + 0.5f) - 0.5f;
    r = r < 0.0f ? 0.0f : r;
    *i0 = (int)r;
    *step = (*i0 < in_size - 1) ? 1 : 0;
    *l1 = r - (float)*i0;
}

__device__ __forceinline__ float fd_bilinear(const float* __restrict__ p, int in_h, int in_w,
                                             float scale_h, float scale_w, int out_h, int out_w,
                                             int oy, int ox) {
    if (in_h == out_h && in_w == out_w) return p[(long long)oy * in_w + ox];
    int h1, h1p, w1, w1p;
    float h1l, w1l;
    fd_axis(scale_h, oy, in_h, &h1, &h1p, &h1l);
    fd_axis(scale_w, ox, in_w, &w1, &w1p, &w1l);
    const float h0l = 1.0f - h1l, w0l = 1.0f - w1l;
    const float* r0 = p + (long long)h1 * in_w + w1;
    const float* r1 = r0 + (long long)h1p * in_w;
    return h0l * (w0l * r0[0] + w1l * r0[w1p]) + h1l * (w0l * r1[0] + w1l * r1[w1p]);
}

extern "C" __global__ void fastdream_resize_add(
        const float* __restrict__ img, const float* __restrict__ detail,
        float* __restrict__ base, float* __restrict__ x,
        const long long total, const int out_h, const int out_w,
        const int img_h, const int img_w, const float img_scale_h, const float img_scale_w,
        const int det_h, const int det_w, const float det_scale_h, const float det_scale_w,
        const int has_detail) {
    const long long img_plane = (long long)img_h * img_w;
    const long long det_plane = (long long)det_h * det_w;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const int ox = (int)(i % out_w);
        const long long t = i / out_w;
        const int oy = (int)(t % out_h);
        const long long plane = t / out_h;
        const float b = fd_bilinear(img + plane * img_plane, img_h, img_w, img_scale_h, img_scale_w,
                                    out_h, out_w, oy, ox);
        base[i] = b;
        x[i] = has_detail ? b + fd_bilinear(detail + plane * det_plane, det_h, det_w, det_scale_h,
                                            det_scale_w, out_h, out_w, oy, ox)
                          : b;
    }
}
"""


def cupy_available() -> bool:
    """Whether ``import cupy`` works (asked once per process; never raises)."""
    return cupy_importable()


# ------------------------------------------------------------------------------------------- CuPy


@functools.lru_cache(maxsize=None)
def _kernel():
    """The compiled-on-first-launch RawKernel (one per process; CuPy keeps one module per device)."""
    import cupy  # noqa: PLC0415

    return cupy.RawKernel(_KERNEL_SOURCE, "fastdream_resize_add")


def _cupy_usable(device: torch.device) -> bool:
    """CuPy imports and the kernel compiles for ``device``; else warn once and answer False."""
    if not cupy_available():
        _warn_once("no-cupy", "CuPy is not installed (pip install cupy-cuda13x, or fastdream[cuda])")
        return False
    if f"launch-{device.index}" in _warned:  # it compiled but failed to launch: torch from then on
        return False
    if device.index in _compiled:
        return True
    key = f"compile-{device.index}"
    if key in _warned:
        return False
    try:
        import cupy  # noqa: PLC0415

        with cupy.cuda.Device(device.index):
            _kernel().compile()
    except Exception as exc:  # noqa: BLE001 - no NVRTC / unsupported GPU: fall back, said once
        _warn_once(key, f"the CuPy resize kernel did not compile for {device} ({type(exc).__name__}: {exc})")
        return False
    _compiled.add(device.index)
    return True


def _warn_once(key: str, why: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(f"fastdream.resize: {why}. Using the torch resize (F.interpolate) instead.",
                  RuntimeWarning, stacklevel=4)


def _scale(src: int, dst: int):
    import numpy as np  # noqa: PLC0415

    return np.float32(src) / np.float32(dst)  # ATen: (float) in / out, rounded to float


def _cupy_stream(cupy, stream: torch.cuda.Stream):
    """Torch's stream as a CuPy stream: ``Stream.from_external`` (CuPy >= 14), else ``ExternalStream``."""
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(stream, "__cuda_stream__"):
        return from_external(stream)
    return cupy.cuda.ExternalStream(stream.cuda_stream, stream.device.index)


def _launch_cupy(img, detail, base, x) -> None:
    import cupy  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    device = img.device
    _, _, out_h, out_w = base.shape
    img_h, img_w = img.shape[-2:]
    det_h, det_w = detail.shape[-2:] if detail is not None else (1, 1)
    total = base.numel()
    blocks = min((total + _BLOCK - 1) // _BLOCK, _MAX_BLOCKS)
    with cupy.cuda.Device(device.index), _cupy_stream(cupy, torch.cuda.current_stream(device)):
        img_c = cupy.from_dlpack(img)
        det_c = cupy.from_dlpack(detail) if detail is not None else img_c  # never read
        args = (
            img_c, det_c, cupy.from_dlpack(base), cupy.from_dlpack(x),
            np.int64(total), np.int32(out_h), np.int32(out_w),
            np.int32(img_h), np.int32(img_w), _scale(img_h, out_h), _scale(img_w, out_w),
            np.int32(det_h), np.int32(det_w), _scale(det_h, out_h), _scale(det_w, out_w),
            np.int32(detail is not None),
        )
        _kernel()((blocks,), (_BLOCK,), args)


def cupy_usable(device: torch.device) -> bool:
    """Whether the fused kernel serves ``device``: a CUDA device, CuPy there and the kernel compiled
    for it (else warned once, and ``ops.resize_add`` uses the torch resize)."""
    return device.type == "cuda" and _cupy_usable(device)


def fused_resize_add(img, detail, shape) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(base, x)`` from the CuPy kernel, or ``None`` where its launch failed: then the torch
    resize serves this call and every later one on that device, said once."""
    img = img.detach().contiguous()
    detail = detail.detach().contiguous() if detail is not None else None
    base = torch.empty(shape, dtype=torch.float32, device=img.device)
    x = torch.empty(shape, dtype=torch.float32, device=img.device)
    try:
        _launch_cupy(img, detail, base, x)
    except Exception as exc:  # noqa: BLE001 - CuPy's CUDA errors have no common base: fall back, said once
        _warn_once(f"launch-{img.device.index}",
                   f"the CuPy resize kernel failed to launch on {img.device} ({type(exc).__name__}: {exc})")
        return None
    return base, x
