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
from .engine import Engine
from .options import DEFAULT_STEP_SIZE, OptionError, Options, check_bool, check_choice, check_int, check_real
from .options import check_seed
from .prefetch import prefetched
from .progress import progress_bar

__all__ = ["DEFAULT_STEP_SIZE", "Dreamer", "dream"]


class Dreamer:
    """DeepDream with its options bound once; call it on images.

    Args:
        model: a built-in model name (``fastdream.list_models()``) or any ``nn.Module`` taking
            Tensor[B, 3, H, W]. A module of yours is never moved or changed: the dream runs a graph
            of it that shares its parameters (BatchNorm folded, truncated at the deepest layer,
            ``fastdream.models.prepare``; one per input shape where its forward branches on
            shapes), or where none can be had (a branch on tensor values), its own forward on its
            prepared blocks, said once; it is put in eval mode for the duration of a call. Its
            parameters may be float32, float64, float16 or bfloat16: the model's input is cast to
            its dtype, the image and the step stay float32.
        layers: layer name(s) to dream at, qualified names from ``named_modules()`` or the model's
            aliases (``fastdream.list_layers(model)``); a ``{name: weight}`` dict weighs several
            layers. ``None``: the model's default layer (required for a module of yours).
        weights: built-in models only: ``"default"`` (pretrained), ``None`` (random init) or a path
            to a local ``.pth`` state dict.
        octaves: number of octave sizes (>= 1), fewer if the image is small.
        octave_scale: size ratio between octaves (> 1).
        iterations: gradient steps per octave (>= 0).
        step_size: mean absolute change per pixel per step, in image units ([0, 1] scale);
            ``None``: ``DEFAULT_STEP_SIZE``.
        jitter: maximum random roll in pixels (>= 0), uniform in [-jitter, jitter] per image and step.
        objective: ``"l2"`` (the seed's 0.5·sum(a²)), ``"mean"``, or a callable
            ``Tensor[B, C, h, w] -> scalar`` summed over the batch.
        channels: channel indices to maximise at every layer (``None``: all).
        normalize: ``(mean, std)`` applied to the [0, 1] image before the model; built-in models
            use their own (ImageNet), a module of yours gets the image as given unless this is set.
        min_size: smallest short side (pixels) of an octave; default from the model (32 for
            modules of yours).
        device: where to compute (``None``: the image's device); the result is returned on the
            image's device.
        precision: ``"auto"`` (bf16 autocast on CUDA GPUs, fp16 where bf16 is missing; fp32 on CPUs),
            ``"fp32"``, ``"bf16"`` or ``"fp16"``; the image and the step stay float32.
        seed: default seed of the jitter shifts (``None``: fresh randomness per call).
        progress: default for showing a tqdm bar over octaves × iterations.
        max_memory: memory budget in bytes for one call on its device, or ``"auto"`` (what the
            device has free now); past it, gradients are computed tile by tile (``fastdream.tiles``)
            so any image size fits. ``None``: no budget.
        tile_size: force tiles of this many pixels a side (overrides ``max_memory``).
        tile_margin: context in pixels around each tile, for the receptive field. Tiles, margins
            and grid offsets are rounded to multiples of 32 px (``fastdream.tiles.ALIGN``).

        guide: an image (Tensor[3, H, W], uint8 or float in [0, 1]) whose features the dream
            grows: each activation vector is pulled towards its best match in the guide's features
            at the same layer (the original notebook's ``objective_guide``); replaces ``objective``.
        channel_mode: ``"strongest"``, ``"weakest"`` or ``"average"``: dream only the
            ``channel_count`` channels of each layer that are strongest / weakest / closest to the
            mean in each input image (its mean activation per channel, at the first octave).
        classes: ImageNet classes to grow: names (``"tabby"``, case-insensitive) or indices, a list
            or a ``{class: weight}`` dict; maximises their logits (built-in models). Without
            ``layers`` the classes are the whole objective, with them they are added.
        smoothing: Gaussian smoothing of each gradient before the step: a sigma in pixels (the
            cascade σ·(0.5, 1, 2) is averaged) or a sequence of sigmas.
        lap_normalize: Laplacian-pyramid normalisation of each gradient with this many levels.
        keep_colors: keep the input's colours (only the luminance is dreamed, BT.601 YCbCr).
        init: what ``dreamer(None, size=(H, W))`` starts from: ``"noise"`` (0.5 + 0.1·N(0, 1),
            from the seed) or ``"grey"``.
        cuda_graphs: on CUDA with the compiled kernels, capture one iteration per octave shape in a
            CUDA graph and replay it (``fastdream.graphs``); same result, less launch overhead.
            Graphs are kept across calls. Tiled octaves, ``guide`` and ``channel_mode`` (their
            objective is built per call) run eagerly, and so does a model or objective that cannot
            be captured (one ``RuntimeWarning``). ``torch.backends.cudnn.benchmark`` is yours to
            set; ``True`` is usually faster on GPUs (the autotuning runs before the capture).

    Every option is a field of :class:`fastdream.options.Options` (``dreamer.options``); a bad one
    raises :class:`fastdream.options.OptionError`, a ``ValueError`` (``TypeError`` too for a wrong
    type) naming it. A Dreamer may be called from several threads (calls on it run one at a time),
    under ``torch.no_grad()`` or ``torch.inference_mode()``, and pickled (for process pools: its
    options travel, a built-in model is built again on the other side).
    """

    def __init__(self, model=_options.DEFAULT_MODEL, layers=None, **options):
        with torch.inference_mode(False):  # parameters built here must be usable by autograd
            self.options = Options(model=model, layers=layers, **options)
            self._engine = Engine(self.options)

    __signature__ = _options.signature()

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
        progress: Optional[bool] = None,
        size: Optional[tuple] = None,
    ) -> torch.Tensor:
        """Dream ``image``: Tensor[3, H, W] or [B, 3, H, W] (1 channel: dreamed as grey), uint8 in
        [0, 255] or float in [0, 1]. Returns a new tensor of the same shape, dtype and device.
        Images of a batch are dreamed independently (own jitter, own step normalisation).

        ``image=None`` with ``size=(H, W)``: dream from the Dreamer's ``init`` (noise by default);
        returns float32 Tensor[3, H, W] on the Dreamer's device (CPU if none was given).
        """
        if image is not None:
            check_image(image)
        return self._engine.dream(image, seed, progress, size)

    def dream_many(
        self,
        images: Iterable[torch.Tensor],
        batch_size: Optional[int] = None,
        *,
        seed: Optional[int] = None,
        progress: Optional[bool] = None,
        prefetch: bool = True,
        errors: str = "raise",
    ) -> Iterator[Union[torch.Tensor, Exception]]:
        """Dream many images, batching those of the same shape; yields results in input order.

        Args:
            images: an iterable of Tensor[3, H, W] (any mix of sizes, dtypes, devices). A generator
                that decodes files is read ``batch_size × 4`` images ahead at most.
            batch_size: images per batch (>= 1). ``None``: 8 on a GPU; on the CPU as many as
                ``fastdream.batching.CPU_BATCH_PIXELS`` holds (8 of 128², 4 of 256², 1 from 363²),
                where batching pays for small images and not for large ones (docs/architecture.md,
                "Batches on the CPU").
            seed: base seed; batch ``k`` of the run uses ``seed + k`` (``None``: fresh randomness).
            progress: a bar over images (images/s); default: the Dreamer's ``progress``.
            prefetch: read the next images on a worker thread while the current batch dreams.
            errors: ``"raise"`` stops at the first bad image; ``"return"`` yields the exception in
                its place and goes on (an app dreaming a folder wants that).
        """
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, 1)
        window_size = WINDOW * (batch_size or GPU_BATCH)
        seed = check_seed("seed", seed)
        errors = check_choice("errors", errors, ("raise", "return"))
        progress = self.options.progress if progress is None else check_bool("progress", progress)
        source = prefetched(images, window_size // 2) if prefetch else iter(images)
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
        ``(1 - blend)·frame_k + blend·dreamed_{k-1}``. ``seed``: frame ``k`` uses ``seed + k``.
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
        seed = check_seed("seed", seed)
        progress = self.options.progress if progress is None else check_bool("progress", progress)
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
    ``precision``, ``device``, ``guide``, ``classes``, ``smoothing`` …). To dream many images, build
    one ``Dreamer`` and call it: the model is then loaded once.
    """
    if image is not None:
        check_image(image)  # once, before the model is loaded
    return Dreamer(**options)._engine.dream(image, seed, progress, size)
