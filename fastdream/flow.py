"""Optical flow for video: the previous dreamed frame moved into the next (``Dreamer.stream(flow=True)``).

Conventions (``docs/architecture.md``, "Video: optical flow"):

- A **flow** is a float32 Tensor[B, 2, H, W] in **pixels**, channel 0 = ``dx`` (to the right),
  channel 1 = ``dy`` (down), laid on the grid of the frame it aligns *to* (the target):
  ``target[y, x] ≈ source[y + dy, x + dx]``. It is "backward" in the graphics sense: every target
  pixel says where to fetch from, so a warp is one gather with no holes.
- :func:`warp` resamples ``source`` onto the target's grid (bilinear, ``grid_sample``) on the
  tensors' own device. :func:`estimate_flow` measures a flow with OpenCV's DIS optical flow on the
  CPU (the ``[video]`` extra); :func:`reliable` says where a warped pixel can be trusted.

The estimator is OpenCV's DIS (Kroeger et al., ECCV 2016), preset "medium": on a known 1280×720
shift (``benchmarks/video_coherence.py``, one CPU thread) its end-point error was 0.07 px in
0.41 s, against 0.18 px for preset "fast" (0.12 s) and 2.5 px for Farneback (1.0 s); the whole
flow step of a 720p frame (both flows, masks, warp) cost 1.7 % of that frame's dream.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["DISFlow", "FlowFeedback", "estimate_flow", "inside", "consistent", "reliable", "require_opencv", "warp"]

INSTALL_HINT = "flow=True needs OpenCV: pip install 'fastdream[video]' (or pip install opencv-python-headless)"

#: The forward-backward check of Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos"
#: (GCPR 2016): a target pixel p is occluded in the source when
#: ``|b(p) + f(p + b(p))|² > OCCLUSION[0]·(|b|² + |f(p + b(p))|²) + OCCLUSION[1]`` (px²), where b is
#: the flow target→source and f the flow source→target: going there and back must return to p.
OCCLUSION = (0.01, 0.5)
#: Their motion-boundary test, ``|∇b_x|² + |∇b_y|² > MOTION_EDGE[0]·|b|² + MOTION_EDGE[1]``, with
#: central differences (DIS is piecewise smooth per patch; their 0.002 flags a whole zoom as edges).
MOTION_EDGE = (0.01, 0.05)
#: Largest mean |target − warped source| over the channels (image units, [0, 1]) of a reliable
#: pixel: where the warped *input* does not match, the warped dream does not belong there either
#: (a flow error, a lighting change, a transparent or new object).
COLOR_TOLERANCE = 0.1
#: A frame is a scene cut (the stream starts afresh) when fewer than this share of its pixels are
#: reliable: the flow found no consistent motion from the previous frame. Measured on the
#: benchmark's clips: 0.90–0.98 between frames of one shot, 0.02 across a cut between two photos.
SCENE_CUT = 0.3
FLOW_PRESET = "medium"
#: DIS needs frames at least (short side, long side) pixels: its patches are 8 px (measured on
#: OpenCV 5.0: 8×12 works, 7×23 and 11×11 do not).
MIN_SIZE = (8, 12)


def require_opencv():
    """``cv2``, or an ``ImportError`` that names the extra."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return cv2


def _check_pair(func: str, image: torch.Tensor, flow: torch.Tensor) -> None:
    for name, t in (("image", image), ("flow", flow)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{func}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{func}: {name} must be a floating tensor, got {t.dtype}")
    if image.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"{func}: expected image Tensor[B, C, H, W] and flow Tensor[B, 2, H, W], got "
            f"{list(image.shape)} and {list(flow.shape)}"
        )
    if image.shape[0] != flow.shape[0] or image.shape[2:] != flow.shape[2:]:
        raise ValueError(
            f"{func}: flow must have image's batch and size, got image {list(image.shape)} and flow {list(flow.shape)}"
        )
    if image.device != flow.device:
        raise ValueError(f"{func}: image and flow must be on one device, got {image.device} and {flow.device}")


def _sample_grid(flow: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``grid_sample``'s grid (align_corners=True: -1 and 1 are the centres of the edge pixels) of
    the pixel positions ``p + flow(p)``: Tensor[B, H, W, 2] (x, y)."""
    _, _, height, width = flow.shape
    xs = torch.arange(width, device=flow.device, dtype=torch.float32)
    ys = torch.arange(height, device=flow.device, dtype=torch.float32)
    sx = 2.0 / (width - 1) if width > 1 else 0.0  # one column: every sample is that column
    sy = 2.0 / (height - 1) if height > 1 else 0.0
    gx = (flow[:, 0].float() + xs).mul_(sx).sub_(1.0)
    gy = (flow[:, 1].float() + ys[:, None]).mul_(sy).sub_(1.0)
    return torch.stack((gx, gy), dim=-1).to(dtype)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` moved along ``flow``: ``out[b, :, y, x] = image[b, :, y + dy, x + dx]``.

    Args:
        image: floating Tensor[B, C, H, W] (any layout), the source.
        flow: floating Tensor[B, 2, H, W], (dx, dy) in pixels on the output's grid, same device.

    Returns:
        A new Tensor[B, C, H, W] of ``image``'s dtype: bilinear between the four nearest pixels;
        a position outside the frame takes its nearest edge pixel (mask it with :func:`inside`).
        An integer flow moves pixels by exactly that many pixels up to float32 rounding of the
        normalised coordinates (error ≤ ~1e-7·max(H, W) of a pixel's value difference, so uint8
        images come back bit-exact after rounding); ``_reference.warp_ref`` is its twin.
    """
    _check_pair("warp", image, flow)
    if image.numel() == 0:
        return image.clone()
    return F.grid_sample(image, _sample_grid(flow, image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def inside(flow: torch.Tensor) -> torch.Tensor:
    """Where ``p + flow(p)`` lies in the frame (edges included): bool Tensor[B, 1, H, W]."""
    _, _, height, width = flow.shape
    x = flow[:, 0:1] + torch.arange(width, device=flow.device, dtype=flow.dtype)
    y = flow[:, 1:2] + torch.arange(height, device=flow.device, dtype=flow.dtype)[:, None]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def _gradient_energy(flow: torch.Tensor) -> torch.Tensor:
    """``|∇u|² + |∇v|²`` by central differences (one-sided at the edges): Tensor[B, 1, H, W]."""
    padded = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    gx = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) * 0.5
    gy = (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]) * 0.5
    return (gx.square() + gy.square()).sum(dim=1, keepdim=True)


def consistent(backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Where the flow can be trusted: bool Tensor[B, 1, H, W] on the target's grid.

    Args:
        backward: Tensor[B, 2, H, W], the flow target→source (what :func:`warp` takes).
        forward: Tensor[B, 2, H, W], the flow source→target, on the source's grid.

    True where the round trip p → p + b(p) → back by ``forward`` lands within the
    :data:`OCCLUSION` tolerance of p (else p is hidden in the source, or one flow is wrong) and p is
    not on a motion boundary (:data:`MOTION_EDGE`), where flows blur across objects.
    """
    _check_pair("consistent", backward, forward)
    back = backward.float()
    there = warp(forward.float(), back)
    roundtrip = (back + there).square().sum(dim=1, keepdim=True)
    sizes = back.square().sum(dim=1, keepdim=True) + there.square().sum(dim=1, keepdim=True)
    occluded = roundtrip > OCCLUSION[0] * sizes + OCCLUSION[1]
    edge = _gradient_energy(back) > MOTION_EDGE[0] * back.square().sum(dim=1, keepdim=True) + MOTION_EDGE[1]
    return ~(occluded | edge)


def reliable(target: torch.Tensor, source: torch.Tensor, backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Where the source warped by ``backward`` stands for the target: bool Tensor[B, 1, H, W].

    Args:
        target, source: float Tensor[B, C, H, W] in [0, 1], the current and the previous input frame.
        backward, forward: the flows target→source and source→target (see :func:`consistent`).

    The pixel's source position is in the frame (:func:`inside`), the flows agree
    (:func:`consistent`) and the warped source matches the target within :data:`COLOR_TOLERANCE`.
    """
    _check_pair("reliable", target, backward)
    _check_pair("reliable", source, forward)
    color = (warp(source, backward) - target).abs().mean(dim=1, keepdim=True) <= COLOR_TOLERANCE
    return inside(backward) & consistent(backward, forward) & color


def grey_uint8(frames: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of float Tensor[B, C, H, W] in [0, 1] (C = 3, or 1: taken as it is), as uint8
    Tensor[B, H, W] on the CPU: what the flow estimator reads. Computed on the frames' device."""
    luma = frames[:, 0] if frames.shape[1] == 1 else 0.299 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]
    return luma.mul(255.0).round_().clamp_(0, 255).to(device="cpu", dtype=torch.uint8)


def check_flow_size(func: str, size) -> None:
    """``ValueError`` for a frame of ``size`` (H, W) too small for DIS (:data:`MIN_SIZE`)."""
    if min(size) < MIN_SIZE[0] or max(size) < MIN_SIZE[1]:
        raise ValueError(
            f"{func}: optical flow needs frames of at least {MIN_SIZE[0]} px on the short side and "
            f"{MIN_SIZE[1]} px on the long side, got {size[0]}×{size[1]}"
        )


class DISFlow:
    """OpenCV's DIS optical flow on the CPU, one estimator kept (and its buffers reused) per stream.

    Args:
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"`` (the default, see the module docstring).

    Raises:
        ImportError: OpenCV is not installed (the message names the ``[video]`` extra).
    """

    PRESETS = ("ultrafast", "fast", "medium")

    def __init__(self, preset: str = FLOW_PRESET):
        cv2 = require_opencv()
        if preset not in self.PRESETS:
            raise ValueError(f"DISFlow: preset must be one of {self.PRESETS}, got {preset!r}")
        self._dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))

    def __call__(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The flow target→source.

        Args:
            target, source: uint8 Tensor[B, H, W] (grey, e.g. :func:`grey_uint8`) on the CPU, at
                least :data:`MIN_SIZE`.

        Returns:
            float32 Tensor[B, 2, H, W] on the CPU, (dx, dy) in pixels with
            ``target[y, x] ≈ source[y + dy, x + dx]`` (:func:`warp` ``(source, flow)`` ≈ target).
        """
        for name, t in (("target", target), ("source", source)):
            if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 3 or t.device.type != "cpu":
                what = f"{t.dtype} {list(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"DISFlow: {name} must be a uint8 Tensor[B, H, W] on the CPU, got {what}")
        if target.shape != source.shape:
            raise ValueError(
                f"DISFlow: target and source must have one shape, got {list(target.shape)} and {list(source.shape)}"
            )
        check_flow_size("DISFlow", target.shape[-2:])
        flows: List[torch.Tensor] = []
        for t, s in zip(target, source):
            # OpenCV's calc(I0, I1) gives f on I0's grid with I0(p) ≈ I1(p + f(p)): I0 is our target.
            flows.append(torch.from_numpy(self._dis.calc(t.contiguous().numpy(), s.contiguous().numpy(), None)))
        if not flows:
            return torch.empty(0, 2, *target.shape[1:])
        return torch.stack(flows).permute(0, 3, 1, 2).contiguous()


def estimate_flow(target: torch.Tensor, source: torch.Tensor, *, preset: str = FLOW_PRESET) -> torch.Tensor:
    """The flow target→source by OpenCV's DIS optical flow on the CPU: ``DISFlow(preset)(target, source)``
    (see :class:`DISFlow`; keep a ``DISFlow`` to estimate many)."""
    return DISFlow(preset)(target, source)


class FlowFeedback:
    """The feedback of a flow-guided stream: each dreamed frame, moved along the optical flow into
    the next frame, blended into that frame's input where the flow is reliable.

    Per frame (float32 Tensor[B, C, H, W] in [0, 1] on the compute device): the flows between the
    previous input frame and this one (both directions, DIS on the CPU), then on the device
    :func:`reliable` and, where it holds, ``input = frame + blend · warp(dreamed_prev − frame_prev)``
    (``carry="detail"``, the default: the previous frame's *dreamed detail* rides on the current
    frame, whose own colours stay sharp) or ``lerp(frame, warp(dreamed_prev), blend)``
    (``carry="frame"``, the unaligned ``blend``'s rule, aligned). Elsewhere the frame alone. A frame
    with fewer than :data:`SCENE_CUT` reliable pixels starts afresh (for that image of a batch).

    Args:
        blend: share of the previous frame's dream, in (0, 1).
        carry: ``"detail"`` or ``"frame"`` (above).
        preset: the DIS preset (:class:`DISFlow`).

    Raises:
        ImportError: OpenCV is not installed (the message names the ``[video]`` extra).
    """

    def __init__(self, blend: float, *, carry: str = "detail", preset: str = FLOW_PRESET):
        if isinstance(blend, bool) or not isinstance(blend, (int, float)):
            raise TypeError(f"FlowFeedback: blend must be a real number, got {type(blend).__name__}")
        if not 0.0 < blend < 1.0:
            raise ValueError(f"FlowFeedback: blend must be in (0, 1), got {blend!r}")
        if carry not in ("detail", "frame"):
            raise ValueError(f"FlowFeedback: carry must be 'detail' or 'frame', got {carry!r}")
        self._flow = DISFlow(preset)
        self.blend, self.carry = float(blend), carry
        self._grey: Optional[torch.Tensor] = None
        self._frame: Optional[torch.Tensor] = None
        self._carried: Optional[torch.Tensor] = None
        #: per image of the last frame, the share of reliable pixels (float32 Tensor[B], on the
        #: CPU; ``None`` before a second frame) and whether it was a scene cut (bool Tensor[B])
        self.reliable_share: Optional[torch.Tensor] = None
        self.cut: Optional[torch.Tensor] = None

    def input_for(self, frame: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """``(input, grey)``: the input to dream for ``frame`` (float32 Tensor[B, C, H, W] in [0, 1]
        on the compute device; ``None``: the frame alone, the first frame or a cut of every image)
        and the frame's grey, for :meth:`dreamed`."""
        check_flow_size("FlowFeedback", frame.shape[-2:])  # at the first frame, not the second
        grey = grey_uint8(frame)
        if self._grey is None:
            self.reliable_share = self.cut = None
            return None, grey
        backward = self._flow(grey, self._grey).to(frame.device)
        forward = self._flow(self._grey, grey).to(frame.device)
        mask = reliable(frame, self._frame, backward, forward)
        share = mask.float().mean(dim=(1, 2, 3)).cpu()  # one small read per frame, before the dream
        self.reliable_share, self.cut = share, share < SCENE_CUT
        if bool(self.cut.all()):
            return None, grey
        weight = mask.to(frame.dtype).mul_(self.blend)
        if bool(self.cut.any()):
            weight[self.cut.to(frame.device)] = 0.0
        moved = warp(self._carried, backward)
        if self.carry == "detail":
            return frame.addcmul(weight, moved).clamp_(0.0, 1.0), grey
        return torch.lerp(frame, moved, weight), grey

    def dreamed(self, frame: torch.Tensor, grey: torch.Tensor, dreamed: torch.Tensor) -> None:
        """Keep ``frame`` (as given to :meth:`input_for`) and its dream (float32, same shape and
        device) for the next frame."""
        self._grey, self._frame = grey, frame
        self._carried = dreamed - frame if self.carry == "detail" else dreamed
