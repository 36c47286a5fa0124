"""``Dreamer``: the DeepDream options bound once, callable on many images; ``dream()`` wraps it.

The facade of the library (``docs/architecture.md``, "Data flow"): it checks what a call is given
and hands the image to its :class:`~fastdream.engine.Engine`, which owns the model, the caches and
the octave loop. ``dream_many`` batches images of one shape, ``stream`` feeds frames back.
"""
from __future__ import annotations

import itertools
from typing import Dict, Iterable, Iterator, Optional, Union

import torch

from . import options as _options
from ._checks import check_image
from .batching import GPU_BATCH, WINDOW, cpu_batch_size, seed_for, window_batches
from ._convert import to_dtype_like, to_float01
from .dream_cache import DreamerCache, call_lock
from .engine import Engine
from .options import (DEFAULT_STEP_SIZE, OptionError, Options, check_bool, check_choice, check_device, check_int,
                      check_real)
from .prefetch import items_or_errors, prefetched
from .progress import progress_bar

__all__ = ["DEFAULT_STEP_SIZE", "Dreamer", "dream"]


class Dreamer:
    """DeepDream with its options bound once; call it on images.

    {args}

    Every option is a field of :class:`fastdream.options.Options` (``dreamer.options``); a bad one
    raises :class:`fastdream.options.OptionError`, a ``ValueError`` (``TypeError`` too for a wrong
    type) naming it. A Dreamer may be called from several threads (calls on it run one at a time),
    under ``torch.no_grad()`` or ``torch.inference_mode()``, and pickled (for process pools: its
    options travel, a built-in model is built again on the other side).
    """

    def __init__(self, model=_options.DEFAULT_MODEL, layers=None, **options):
        _options.check_names(options, "Dreamer")
        with torch.inference_mode(False):  # parameters built here must be usable by autograd
            self.options = Options(model=model, layers=layers, **options)
            self._engine = Engine(self.options)

    __signature__ = _options.signature()
    __doc__ = __doc__.format(args=_options.args_doc().replace("\n", "\n    "))

    def __getattr__(self, name: str):
        """The options as attributes (``dreamer.octaves``); ``layers``, ``classes``, ``min_size``
        and ``model_name`` as resolved against the model; ``last_tiling``: the ``Tiling`` (``tile``,
        ``margin`` in px) of the last call's largest octave, ``None`` where it ran untiled."""
        if name in ("layers", "classes", "min_size", "model_name", "last_tiling"):
            return getattr(self._engine, name)
        options = self.__dict__.get("options")
        if options is not None and name in Options.__dataclass_fields__:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> Dict[str, object]:
        return {"options": self.options.as_dict()}

    def __setstate__(self, state: Dict[str, object]) -> None:
        self.__init__(**state["options"])

    # -- dreaming -----------------------------------------------------------------------------

    def __call__(
        self,
        image: Optional[torch.Tensor],
        *,
        seed: Optional[int] = None,
        progress=None,
        size: Optional[tuple] = None,
    ) -> torch.Tensor:
        """Dream ``image``: Tensor[3, H, W] or [B, 3, H, W] (1 channel: dreamed as grey), uint8 in
        [0, 255] or float in [0, 1]. Returns a new tensor of the same shape, dtype and device.
        Images of a batch are dreamed independently (own jitter, own step normalisation).

        ``image=None`` with ``size=(H, W)``: dream from the Dreamer's ``init`` (noise by default);
        returns float32 Tensor[3, H, W] on the Dreamer's device (CPU if none was given).

        ``progress``: ``True`` for a tqdm bar over the steps (octaves × iterations), or a callable,
        called as ``progress(n)`` after each step with the steps done since its last call (on the
        host, no device sync); an exception it raises stops the dream and is raised as it is.
        """
        if image is not None:
            check_image(image)
        return self._dream(image, seed, progress, size)

    def _dream(self, image: Optional[torch.Tensor], seed, progress, size) -> torch.Tensor:
        """A call on a checked image (``__call__`` and ``dream()`` check it first)."""
        seed, progress = self._engine.call_defaults(seed, progress)
        return self._engine.dream(image, seed, progress, size)

    def dream_many(
        self,
        images: Iterable[torch.Tensor],
        batch_size: Optional[int] = None,
        *,
        seed: Optional[int] = None,
        progress: Optional[bool] = None,
        prefetch: Optional[bool] = None,
        errors: str = "raise",
    ) -> Iterator[Union[torch.Tensor, Exception]]:
        """Dream many images, batching those of the same shape; yields results in input order.

        Args:
            images: an iterable of Tensor[3, H, W] (any mix of sizes, dtypes, devices). A generator
                that decodes files is read ``batch_size × 4`` images ahead at most.
            batch_size: images per batch (>= 1). ``None``: 8 on a GPU; on the CPU as many as
                ``fastdream.batching.CPU_BATCH_PIXELS`` holds (8 of 256², 3 of 384², 2 of 512², 1 from 725²),
                where batching pays for small images and not for large ones (docs/architecture.md,
                "Batches on the CPU").
            seed: base seed; batch ``k`` of the run uses ``seed + k`` (``None``: the Dreamer's
                ``seed``, or fresh randomness where it has none).
            progress: a bar over images (images/s), or a callable given the images done; default:
                the Dreamer's ``progress``.
            prefetch: read the next images on a worker thread while the current batch dreams.
                ``None``: where the Dreamer's ``device`` is a GPU. On the CPU the dreaming already
                keeps every core busy, and a reader thread decoding beside it made ``dream_many``
                1.3× slower (2 cores, 384² PNGs; docs/architecture.md, "One torch thread per process").
            errors: ``"raise"`` stops at the first bad image; ``"return"`` yields the exception in
                its place and goes on (an app dreaming a folder wants that).
        """
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, 1)
        window_size = WINDOW * (batch_size or GPU_BATCH)
        errors = check_choice("errors", errors, ("raise", "return"))
        if prefetch is None:
            prefetch = self.options.device is not None and self.options.device.type == "cuda"
        prefetch = check_bool("prefetch", prefetch)
        seed, progress = self._engine.call_defaults(seed, progress)
        source = prefetched(images, window_size // 2) if prefetch else items_or_errors(images)
        counter = itertools.count()
        with progress_bar(progress, "images", "img") as bar:
            while True:
                window = list(itertools.islice(source, window_size))
                if not window:
                    return
                results: list = [None] * len(window)
                keys: list = [None] * len(window)  # images that failed keep None
                for i, item in enumerate(window):
                    try:
                        if isinstance(item, BaseException):
                            raise item
                        check_image(item)
                        if item.dim() != 3:
                            raise ValueError(f"images[{i}] must be one image [C, H, W], got {list(item.shape)}")
                        self._engine.check_size(item)
                    except (TypeError, ValueError, OSError) as exc:
                        if errors == "raise":
                            raise
                        results[i] = exc
                        continue
                    keys[i] = (tuple(item.shape), item.dtype, item.device)
                for chunk in window_batches(keys, batch_size or self._default_batch_size):
                    batch = torch.stack([window[i] for i in chunk])
                    out = self._engine.dream(batch, seed_for(seed, next(counter)), False)
                    for j, i in enumerate(chunk):
                        results[i] = out[j]
                    if bar is not None:
                        bar(len(chunk))
                yield from results

    def _default_batch_size(self, key: tuple) -> int:
        """``dream_many``'s ``batch_size=None`` for a (shape, dtype, device) key: ``GPU_BATCH`` on a
        GPU, ``cpu_batch_size`` of the image size on the CPU."""
        if (self.options.device or key[2]).type == "cuda":
            return GPU_BATCH
        return cpu_batch_size(*key[0][-2:])

    def stream(
        self,
        frames: Iterable[torch.Tensor],
        *,
        blend: float = 0.0,
        flow: bool = False,
        seed: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> Iterator[torch.Tensor]:
        """Dream a stream of frames (video-like: one size), yielding each dreamed frame.

        ``blend`` in [0, 1): feedback for temporal coherence, the input of frame ``k`` is
        ``(1 - blend)·frame_k + blend·dreamed_{k-1}``. ``seed``: frame ``k`` uses ``seed + k``
        (``None``: the Dreamer's ``seed``, or fresh randomness where it has none).
        The model, its preparation and (on GPUs) its buffers are reused across frames.

        ``flow=True`` (needs ``blend`` > 0 and OpenCV, the ``[video]`` extra): the previous frame's
        dreamed detail (``dreamed_{k-1} - frame_{k-1}``) is moved along the optical flow from frame
        ``k-1`` to frame ``k`` and added to frame ``k`` with weight ``blend`` where the flow is
        reliable, so the patterns move with the scene instead of ghosting; occluded pixels, pixels
        from outside the frame and motion boundaries get the frame alone, and a frame with too few
        reliable pixels (a scene cut) starts afresh (``fastdream.flow``). The flow runs on the CPU,
        the warp and the blend on the compute device.
        """
        blend = check_real("blend", blend, at_least=0.0)
        if blend >= 1.0:
            raise OptionError("{0} must be in [0, 1), got {blend}", "blend", blend=blend)
        if check_bool("flow", flow) and blend == 0.0:
            raise OptionError("{0} moves the previous dreamed frame into the next: it needs {1} > 0, got 0",
                              "flow", "blend")
        seed, progress = self._engine.call_defaults(seed, progress)
        if flow:
            yield from self._stream_flow(frames, blend, seed, progress)
            return
        previous = None
        with progress_bar(progress, "frames", "frame") as bar:
            for k, frame in enumerate(frames):
                check_image(frame)
                if previous is not None and frame.shape != previous.shape:
                    raise ValueError(
                        f"frames must all have one shape: frame {k} is {list(frame.shape)}, "
                        f"the first was {list(previous.shape)}"
                    )
                source = frame
                if previous is not None and blend > 0:
                    source = torch.lerp(to_float01(frame), to_float01(previous), blend).clamp_(0, 1)
                out = self._engine.dream(source, seed_for(seed, k), False)
                out = to_dtype_like(out, frame.dtype) if out.dtype != frame.dtype else out
                previous = out
                if bar is not None:
                    bar(1)
                yield out

    def _stream_flow(self, frames, blend: float, seed: Optional[int], progress: bool) -> Iterator[torch.Tensor]:
        """``stream(flow=True)``: the feedback warped along the optical flow (``fastdream.flow``);
        the previous frame and its dream stay in float32 on the compute device."""
        from .flow import FlowFeedback

        feedback = FlowFeedback(blend)  # raises ImportError naming the extra without OpenCV
        shape = None
        with progress_bar(progress, "frames", "frame") as bar:
            for k, frame in enumerate(frames):
                check_image(frame)
                if shape is not None and frame.shape != shape:
                    raise ValueError(
                        f"frames must all have one shape: frame {k} is {list(frame.shape)}, the first was {list(shape)}"
                    )
                shape = frame.shape
                batch = frame if frame.dim() == 4 else frame.unsqueeze(0)
                current = to_float01(batch, self._engine.device_for(frame))
                source, grey = feedback.input_for(current)
                # the frame alone (first frame, scene cut): ``current`` is the float the engine
                # would make of it, so the result is the plain call's
                dreamed = self._engine.dream(current if source is None else source, seed_for(seed, k), False)
                feedback.dreamed(current, grey, dreamed)
                out = to_dtype_like(dreamed, frame.dtype).to(frame.device)
                if bar is not None:
                    bar(1)
                yield out if frame.dim() == 4 else out.squeeze(0)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """What each iteration ascends, for float ``x``: Tensor[B, 3, h, w] in image space ([0, 1],
        not normalised), dreamed on the Dreamer's ``device`` (else ``x``'s): the prepared model's
        forward (:meth:`prepared_model`, the normalisation included) and the options' objective, a
        scalar differentiable with respect to ``x``. For objectives that depend on a call's image
        (``guide``, ``channel_mode="top"``), their part that does not. For measuring (the
        benchmarks' floor is ``torch.autograd.grad(dreamer.loss(x), x)``) and inspecting."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            what = f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"loss: x must be a float Tensor[B, 3, H, W], got {what}")
        device = self._engine.device_for(x)
        with self._engine.lock:
            prepared = self._engine.prepare(device)
            with call_lock(prepared.model):
                return self._engine.objective(prepared.features(x.to(device)))

    def prepared_model(self, device=None) -> torch.nn.Module:
        """The model as it is dreamed with on ``device`` (default: the Dreamer's, else the CPU):
        traced, truncated after the deepest layer, BatchNorm folded, channels_last, in the
        precision's dtype (docs/architecture.md, "Models"); Tensor[B, 3, h, w] normalised → the
        dreamed layers' outputs (read them with ``fastdream.models.LayerTap``). Made once per
        device and kept; it shares the model's parameters (a module of yours is never modified)."""
        device = check_device("device", device) or self.options.device or torch.device("cpu")
        return self._engine.prepare(self._engine.device_for(torch.empty(0, device=device))).model

    def check(self, image: torch.Tensor) -> None:
        """Raise the ``TypeError``/``ValueError`` that dreaming ``image`` would raise for the image
        itself (type, shape, values, the model's minimum size), without dreaming it."""
        check_image(image)
        self._engine.check_size(image)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"Dreamer(model={self.model_name!r}, layers={self.layers}, octaves={o.octaves}, "
            f"octave_scale={o.octave_scale}, iterations={o.iterations}, step_size={o.step_size}, "
            f"jitter={o.jitter}, precision={o.precision!r})"
        )


def dream(
    image: Optional[torch.Tensor],
    *,
    seed: Optional[int] = None,
    progress: bool = False,
    size: Optional[tuple] = None,
    **options,
) -> torch.Tensor:
    """Dream one image or a batch: ``Dreamer(**options)(image, seed=seed, progress=progress)``.

    ``image``: Tensor[3, H, W] or [B, 3, H, W], uint8 or float in [0, 1]; the result has the same
    shape, dtype and device. ``image=None, size=(H, W)`` dreams from noise. ``options``: see
    :class:`Dreamer` (``model``, ``layers``, ``octaves``, ``iterations``, ``step_size``, ``jitter``,
    ``precision``, ``device``, ``guide``, ``classes``, ``smoothing`` …).

    Repeated calls are as fast as calls on one ``Dreamer``: the Dreamers of the last few option sets
    of built-in models are kept (``fastdream.dream_cache``; ``dream.cache_clear()`` drops them), and
    a module of yours keeps its prepared graph for as long as you keep the module (never longer).
    """
    _options.check_names(options, "dream")
    if image is not None:
        check_image(image)  # once, before the model is loaded
    with torch.inference_mode(False):
        canonical = Options(**options)
    if isinstance(canonical.model, str):
        dreamer = DREAMERS.get(canonical)
    else:  # a Dreamer holds your module: never cached (its prepared graph is, weakly)
        dreamer = Dreamer(**canonical.as_dict())
    return dreamer._dream(image, seed, progress, size)


DREAMERS = DreamerCache(lambda options: Dreamer(**options.as_dict()))
dream.cache_clear = DREAMERS.clear
