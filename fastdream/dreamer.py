"""``Dreamer``: the DeepDream options bound once, callable on many images; ``dream()`` wraps it.

Data flow (DESIGN.md §2): check the arguments → image to float32 [B, 3, H, W] on the compute device
→ octave sizes and per-octave shift tables (host, from the seed) → for each octave, resize-add the
carried detail and run the iterations (``step.Stepper``) → back to the caller's dtype, shape and
device. The model is loaded (built-in models: frozen), then prepared (BatchNorm folded, truncated
at the deepest requested layer, ``models/prepare.py``) once per Dreamer and device.
"""
from __future__ import annotations

import copy
import itertools
import secrets
import threading
from typing import Callable, Dict, Iterable, Iterator, Optional, Union

import torch
import torch.nn as nn

from . import _checks
from .colors import keep_colors
from .graphs import FallbackNotice, GraphCache, GraphStepper
from .guides import CHANNEL_MODES, channel_objective, class_indices, class_objective, guided_objective
from .guides import imagenet_categories, select_channels
from .models.layers import LayerTap, resolve_layers
from .models.prepare import freeze, prepare_for_dreaming
from .models.registry import DEFAULT_MODEL, ModelSpec, get_spec
from .objectives import OBJECTIVES, layer_terms, weighted_sum
from .octaves import octave_sizes, shift_table
from .prefetch import prefetched
from .regularizers import gaussian_smooth, laplacian_normalize
from ._reference import resize_ref
from .resize import resize_add
from .step import StepConfig, Stepper, Tiling, autocast_context
from .tiles import aligned, available_memory, grid_offsets, saved_bytes_per_pixel, tile_for_budget

DEFAULT_STEP_SIZE = 0.01
"""Mean change per pixel per iteration, in image units (the seed's 1.5 on 0..255 is ~0.006)."""

ModelArg = Union[str, nn.Module]


def _select_backend(device: torch.device) -> str:
    from .backends import select_backend

    return select_backend(device)


def _resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for the model (``None`` = float32) that ``precision`` means on ``device``."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_fast_bf16() else None


def _cpu_has_fast_bf16() -> bool:
    """bf16 pays off on the CPU only with native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class _Prepared:
    """The model on one device, ready to dream with: the tap and the normalisation constants."""

    def __init__(self, model: nn.Module, layers, mean, std, device, dtype, channels_last: bool):
        self.model = model
        self.tap = LayerTap(model, layers)
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        self.bytes_per_pixel: Optional[float] = None  # measured on first tiled use
        self.guide_acts: Optional[Dict[str, torch.Tensor]] = None  # the guide's features, once
        self.graphs = GraphCache()  # captured CUDA iterations, kept across calls (fastdream.graphs)
        if mean is None:
            self.scale = self.shift = None
        else:
            m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            self.scale, self.shift = 1.0 / s, -m / s

    def features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.scale is not None:
            x = torch.addcmul(self.shift, x, self.scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.dtype):
            return self.tap(x)


class Dreamer:
    """DeepDream with its options bound once; call it on images.

    Args:
        model: a built-in model name (``fastdream.list_models()``) or any ``nn.Module`` taking
            Tensor[B, 3, H, W]. A module of yours is used as it is: never copied, moved or changed
            (it is put in eval mode only for the duration of a call).
        layers: layer name(s) to dream at, qualified names from ``named_modules()`` or the model's
            aliases (``fastdream.list_layers(model)``); a ``{name: weight}`` dict weighs several
            layers. ``None``: the model's default layer (required for a module of yours).
        weights: built-in models only: ``"default"`` (pretrained), ``None`` (random init) or a path
            to a local ``.pth`` state dict.
        octaves: number of octave sizes (>= 1), fewer if the image is small.
        octave_scale: size ratio between octaves (> 1).
        iterations: gradient steps per octave (>= 0).
        step_size: mean absolute change per pixel per step, in image units ([0, 1] scale).
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
        precision: ``"auto"`` (bf16/fp16 autocast where the hardware runs it fast, else fp32),
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

    A Dreamer may be called from several threads: calls on it run one at a time.
    """

    def __init__(
        self,
        model: ModelArg = DEFAULT_MODEL,
        layers=None,
        *,
        weights="default",
        octaves: int = 4,
        octave_scale: float = 1.4,
        iterations: int = 10,
        step_size: Optional[float] = None,
        jitter: int = 32,
        objective="l2",
        channels=None,
        normalize=None,
        min_size: Optional[int] = None,
        device=None,
        precision: str = "auto",
        seed: Optional[int] = None,
        progress: bool = False,
        max_memory: Union[int, str, None] = None,
        tile_size: Optional[int] = None,
        tile_margin: int = 64,
        guide: Optional[torch.Tensor] = None,
        channel_mode: Optional[str] = None,
        channel_count: int = 8,
        classes=None,
        smoothing=None,
        lap_normalize: Optional[int] = None,
        keep_colors: bool = False,
        init: str = "noise",
        cuda_graphs: bool = True,
    ):
        self.octaves = _checks.check_int("octaves", octaves, 1)
        self.octave_scale = _checks.check_real("octave_scale", octave_scale, greater_than=1.0)
        self.iterations = _checks.check_int("iterations", iterations, 0)
        self.step_size = (
            DEFAULT_STEP_SIZE if step_size is None else _checks.check_real("step_size", step_size, greater_than=0.0)
        )
        self.jitter = _checks.check_int("jitter", jitter, 0)
        if isinstance(objective, str):
            if objective not in OBJECTIVES:
                raise ValueError(f"objective must be one of {OBJECTIVES} or a callable, got {objective!r}")
        elif not callable(objective):
            raise TypeError(f"objective must be one of {OBJECTIVES} or a callable, got {type(objective).__name__}")
        self.channels = _checks.check_channels(channels)
        normalize = _checks.check_normalize(normalize)
        self.device = _checks.check_device(device)
        self.precision = _checks.check_precision(precision)
        self.seed = _checks.check_seed(seed)
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        self.progress = progress
        if max_memory is not None and max_memory != "auto":
            max_memory = _checks.check_int("max_memory", max_memory, 1)
        self.max_memory = max_memory
        self.tile_size = None if tile_size is None else _checks.check_int("tile_size", tile_size, 32)
        self.tile_margin = _checks.check_int("tile_margin", tile_margin, 0)
        self.guide = None if guide is None else _checks.check_image(guide)
        if self.guide is not None and self.guide.dim() != 3:
            raise ValueError(f"guide must be one image [3, H, W], got shape {list(self.guide.shape)}")
        if channel_mode is not None and channel_mode not in CHANNEL_MODES:
            raise ValueError(f"channel_mode must be None or one of {CHANNEL_MODES}, got {channel_mode!r}")
        if channel_mode is not None and self.channels is not None:
            raise ValueError("channels and channel_mode exclude each other: pick channels by index or by mode")
        if channel_mode is not None and guide is not None:
            raise ValueError("guide and channel_mode exclude each other")
        self.channel_mode = channel_mode
        self.channel_count = _checks.check_int("channel_count", channel_count, 1)
        self.smoothing = None if smoothing is None else _checks.check_sigmas(smoothing)
        self.lap_normalize = None if lap_normalize is None else _checks.check_int("lap_normalize", lap_normalize, 1)
        if not isinstance(keep_colors, bool):
            raise TypeError(f"keep_colors must be a bool, got {type(keep_colors).__name__}")
        self.keep_colors = keep_colors
        if init not in ("noise", "grey"):
            raise ValueError(f"init must be 'noise' or 'grey', got {init!r}")
        self.init = init
        if not isinstance(cuda_graphs, bool):
            raise TypeError(f"cuda_graphs must be a bool, got {type(cuda_graphs).__name__}")
        self.cuda_graphs = cuda_graphs
        self._graph_notice = FallbackNotice()
        self._objective_arg = objective
        layer_weights = _checks.check_layers(layers)
        class_weights = _checks.check_classes(classes)

        if isinstance(model, nn.Module):
            if weights != "default":
                raise ValueError("weights applies to built-in model names only; load your module's weights yourself")
            self.spec: Optional[ModelSpec] = None
            self.model_name = type(model).__name__
            self._user_model: Optional[nn.Module] = model
            self._base_model = model
            aliases: Dict[str, str] = {}
            if layer_weights is None:
                raise ValueError("layers is required with a custom model; see fastdream.list_layers(model)")
            if class_weights is not None:
                raise ValueError("classes needs a built-in model (their classifier and class names are known)")
            self.mean_std = normalize
            self.min_size = 32 if min_size is None else _checks.check_int("min_size", min_size, 1)
            self._min_input = 1
        elif isinstance(model, str):
            self.spec = get_spec(model)
            self.model_name = model
            self._user_model = None
            self._base_model = freeze(self.spec.build(weights))
            aliases = self.spec.aliases
            if layer_weights is None and class_weights is None:
                layer_weights = {self.spec.default_layer: 1.0}
            self.mean_std = normalize or (self.spec.mean, self.spec.std)
            self.min_size = self.spec.min_size if min_size is None else _checks.check_int("min_size", min_size, 1)
            self._min_input = self.spec.min_input
        else:
            raise TypeError(f"model must be a model name (str) or an nn.Module, got {type(model).__name__}")

        layer_weights = layer_weights or {}
        resolved = resolve_layers(self._base_model, list(layer_weights), aliases, repr(self.model_name))
        self.layers = dict(zip(resolved, layer_weights.values()))
        self.classes: Optional[Dict[int, float]] = None
        if class_weights is not None:
            categories = imagenet_categories(self._weights_meta())
            indices = class_indices(list(class_weights), categories)
            self.classes = dict(zip(indices, class_weights.values()))
        self._tapped = list(self.layers) + ([self.spec.logits_layer] if self.classes else [])
        self.objective = self._static_objective()
        self._prepared: Dict[tuple, _Prepared] = {}
        self._lock = threading.Lock()

    # -- objectives ----------------------------------------------------------------------------

    def _weights_meta(self):
        if self.spec is None or self.spec.weights_enum is None:
            return None
        import torchvision.models as tvm

        return getattr(tvm, self.spec.weights_enum).DEFAULT.meta

    def _class_terms(self) -> list:
        if not self.classes:
            return []
        return [(self.spec.logits_layer, w, class_objective([i])) for i, w in self.classes.items()]

    def _static_objective(self):
        """The objective when it depends on nothing but the options (no guide, no channel mode)."""
        return weighted_sum(layer_terms(self._objective_arg, self.layers, self.channels) + self._class_terms())

    def _objective_for(self, img: torch.Tensor, prepared: "_Prepared", first_size) -> Callable:
        """This call's objective: the guide's features or the input's channel ranking are needed."""
        if self.guide is None and self.channel_mode is None:
            return self.objective
        terms = []
        with torch.no_grad():
            if self.guide is not None:
                if prepared.guide_acts is None:
                    guide = self.guide.to(prepared.device, torch.float32)
                    guide = guide / 255.0 if self.guide.dtype == torch.uint8 else guide
                    prepared.guide_acts = prepared.features(guide.unsqueeze(0).contiguous())
                for name, w in self.layers.items():
                    terms.append((name, w, guided_objective(prepared.guide_acts[name])))
            else:
                acts = prepared.features(resize_ref(img, first_size))
                for name, w in self.layers.items():
                    index = select_channels(acts[name], self.channel_mode, self.channel_count)
                    base = self._objective_arg if isinstance(self._objective_arg, str) else "l2"
                    terms.append((name, w, channel_objective(index, base)))
        return weighted_sum(terms + self._class_terms())

    # -- model per device ---------------------------------------------------------------------

    def _prepare(self, device: torch.device) -> _Prepared:
        dtype = _resolve_precision(self.precision, device)
        key = (str(device), dtype)
        prepared = self._prepared.get(key)
        if prepared is not None:
            return prepared
        if self._user_model is not None:
            params = list(self._user_model.parameters()) + list(self._user_model.buffers())
            where = {p.device for p in params}
            if where and where != {device}:
                raise ValueError(
                    f"device: the model's parameters are on {sorted(map(str, where))} but the dream runs on "
                    f"{device}; move the model there or pass device="
                )
            model = self._user_model
        else:
            model = self._base_model
            if any(p.device != device for p in model.parameters()):
                model = copy.deepcopy(model).to(device)
        # Built-in and user modules alike: traced, truncated, BN folded, in place, channels_last
        # (models/prepare.py); a module that does not trace runs as it is.
        model = prepare_for_dreaming(model, self._tapped)
        mean, std = self.mean_std if self.mean_std is not None else (None, None)
        prepared = _Prepared(model, self._tapped, mean, std, device, dtype, channels_last=False)
        self._prepared[key] = prepared
        return prepared

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
        seed = self.seed if seed is None else _checks.check_seed(seed)
        if seed is None:
            seed = secrets.randbits(63)
        if image is None:
            image = self._initial_image(size, seed)
        elif size is not None:
            raise ValueError("size is only for image=None (dreaming from noise); resize the image yourself")
        _checks.check_image(image)
        progress = self.progress if progress is None else progress
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        device = self.device or image.device
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        batch_in = image.dim() == 4
        x = image if batch_in else image.unsqueeze(0)
        grey = x.shape[1] == 1
        height, width = x.shape[-2:]
        self._check_size(x)
        if x.shape[0] == 0:
            return image.clone()

        img = x.detach().to(device=device, dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
        if image.dtype == torch.uint8:
            img.div_(255.0)
        if grey:
            img = img.expand(-1, 3, -1, -1).contiguous()

        sizes = octave_sizes(height, width, self.octaves, self.octave_scale, self.min_size)
        generator = torch.Generator().manual_seed(seed)
        tables = [shift_table(self.iterations, img.shape[0], self.jitter, generator) for _ in sizes]

        with self._lock:
            tilings = self._tilings(img.shape[0], sizes, device, generator)
            out = self._run(img, sizes, tables, tilings, device, progress)

        if grey:
            out = out.mean(dim=1, keepdim=True)
        if image.dtype == torch.uint8:
            out = out.mul_(255.0).round_().clamp_(0, 255)
        out = out.to(device=image.device, dtype=image.dtype)
        return out if batch_in else out.squeeze(0)

    def _initial_image(self, size, seed: int) -> torch.Tensor:
        if size is None:
            raise ValueError("size=(height, width) is required when image is None")
        if not (isinstance(size, (tuple, list)) and len(size) == 2):
            raise TypeError(f"size must be a (height, width) pair of ints, got {size!r}")
        height, width = (_checks.check_int("size", v, self._min_input) for v in size)
        if self.init == "grey":
            image = torch.full((3, height, width), 0.5)
        else:  # its own generator: the shift tables of a seed do not depend on the size
            noise = torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed ^ 0x5EED))
            image = noise.mul_(0.1).add_(0.5).clamp_(0.0, 1.0)
        return image.to(self.device or "cpu")

    def _tilings(self, batch, sizes, device, generator) -> list:
        """Per octave, ``None`` (whole image at once) or the ``Tiling`` its memory budget needs."""
        if self.tile_size is None and self.max_memory is None:
            return [None] * len(sizes)
        height, width = sizes[-1]
        tile, margin = self.tile_size, aligned(self.tile_margin, up=True)
        if tile is None:
            prepared = self._prepare(device)
            if prepared.bytes_per_pixel is None:
                prepared.bytes_per_pixel = saved_bytes_per_pixel(prepared.features, self.objective, device)
            budget = available_memory(device) if self.max_memory == "auto" else self.max_memory
            tile = tile_for_budget(budget, prepared.bytes_per_pixel, batch, height, width,
                                   margin, self._min_input)
        if tile is not None:
            tile = aligned(tile)
        tilings = []
        for h, w in sizes:  # offsets drawn after the shift tables: untiled runs are unchanged
            if tile is None or (h <= tile and w <= tile):
                tilings.append(None)
                continue
            tilings.append(Tiling(tile, margin, grid_offsets(self.iterations, tile, generator)))
        return tilings

    def _grad_transforms(self) -> list:
        transforms = []
        if self.smoothing is not None:
            sigmas = self.smoothing
            transforms.append(lambda g: gaussian_smooth(g, sigmas))
        if self.lap_normalize is not None:
            levels = self.lap_normalize
            transforms.append(lambda g: laplacian_normalize(g, levels))
        return transforms

    def _run(self, img, sizes, tables, tilings, device, progress) -> torch.Tensor:
        prepared = self._prepare(device)
        objective = self._objective_for(img, prepared, sizes[0])
        backend = _select_backend(device)
        if self.cuda_graphs and device.type == "cuda" and backend == "cuda" and objective is self.objective:
            stepper = GraphStepper(prepared.features, objective, StepConfig(self.step_size), backend,
                                   self._grad_transforms(), cache=prepared.graphs, notice=self._graph_notice,
                                   signature=(self.smoothing, self.lap_normalize), model=prepared.model,
                                   dtype=prepared.dtype)
        else:
            stepper = Stepper(prepared.features, objective, StepConfig(self.step_size), backend,
                              self._grad_transforms())
        user = self._user_model
        modes = [m.training for m in user.modules()] if user is not None else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(sizes) * self.iterations, desc="dream", unit="step", leave=False)
        try:
            if user is not None:
                user.eval()
            detail = None
            x = img
            for size, table, tiling in zip(sizes, tables, tilings):
                base, x = resize_add(img, detail, size)  # detail None: x = a copy of base
                shifts = table.to(device, non_blocking=True)
                stepper.run(x, shifts, bar.update if bar is not None else None, tiling)
                detail = x - base
            return keep_colors(img, x) if self.keep_colors else x
        finally:
            if bar is not None:
                bar.close()
            if user is not None:
                for m, mode in zip(user.modules(), modes):
                    m.training = mode

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
            batch_size: images per batch (>= 1). ``None``: 8 on a GPU, 1 on the CPU, where batching
                measured slower per image (512², 2-core EPYC: 5.2 images/s at batch 1, 3.2 at 4,
                1.8 at 64: the activations of a batch outgrow the caches).
            seed: base seed; batch ``k`` of the run uses ``seed + k`` (``None``: fresh randomness).
            progress: a bar over images (images/s); default: the Dreamer's ``progress``.
            prefetch: read the next images on a worker thread while the current batch dreams.
            errors: ``"raise"`` stops at the first bad image; ``"return"`` yields the exception in
                its place and goes on (an app dreaming a folder wants that).
        """
        if batch_size is not None:
            batch_size = _checks.check_int("batch_size", batch_size, 1)
        window_size = 4 * (batch_size or 8)
        seed = _checks.check_seed(seed)
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        progress = self.progress if progress is None else progress
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        source = prefetched(images, window_size // 2) if prefetch else iter(images)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc="images", unit="img")
        counter = itertools.count()
        try:
            while True:
                window = list(itertools.islice(source, window_size))
                if not window:
                    return
                results: list = [None] * len(window)
                groups: Dict[tuple, list] = {}
                for i, item in enumerate(window):
                    try:
                        if isinstance(item, BaseException):
                            raise item
                        _checks.check_image(item)
                        if item.dim() != 3:
                            raise ValueError(f"images[{i}] must be one image [C, H, W], got {list(item.shape)}")
                        self._check_size(item)
                    except (TypeError, ValueError, OSError) as exc:
                        if errors == "raise":
                            raise
                        results[i] = exc
                        continue
                    groups.setdefault((tuple(item.shape), item.dtype, item.device), []).append(i)
                for (_, _, where), indices in groups.items():
                    step = batch_size or (8 if (self.device or where).type == "cuda" else 1)
                    for start in range(0, len(indices), step):
                        chunk = indices[start : start + step]
                        batch = torch.stack([window[i] for i in chunk])
                        k = next(counter)
                        out = self(batch, seed=None if seed is None else (seed + k) % 2**63, progress=False)
                        for j, i in enumerate(chunk):
                            results[i] = out[j]
                        if bar is not None:
                            bar.update(len(chunk))
                for result in results:
                    yield result
        finally:
            if bar is not None:
                bar.close()

    def stream(
        self,
        frames: Iterable[torch.Tensor],
        *,
        blend: float = 0.0,
        seed: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> Iterator[torch.Tensor]:
        """Dream a stream of frames (video-like: one size), yielding each dreamed frame.

        ``blend`` in [0, 1): feedback for temporal coherence, the input of frame ``k`` is
        ``(1 - blend)·frame_k + blend·dreamed_{k-1}``. ``seed``: frame ``k`` uses ``seed + k``.
        The model, its preparation and (on GPUs) its buffers are reused across frames.
        """
        blend = _checks.check_real("blend", blend, at_least=0.0)
        if blend >= 1.0:
            raise ValueError(f"blend must be in [0, 1), got {blend}")
        seed = _checks.check_seed(seed)
        progress = self.progress if progress is None else progress
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc="frames", unit="frame")
        previous = None
        try:
            for k, frame in enumerate(frames):
                _checks.check_image(frame)
                if previous is not None and frame.shape != previous.shape:
                    raise ValueError(
                        f"frames must all have one shape: frame {k} is {list(frame.shape)}, "
                        f"the first was {list(previous.shape)}"
                    )
                source = frame
                if previous is not None and blend > 0:
                    scale = 255.0 if frame.dtype == torch.uint8 else 1.0
                    mixed = torch.lerp(frame.float() / scale, previous.float() / scale, blend)
                    source = mixed.clamp_(0, 1)
                out = self(source, seed=None if seed is None else (seed + k) % 2**63, progress=False)
                if frame.dtype == torch.uint8 and out.dtype != torch.uint8:
                    out = out.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
                else:
                    out = out.to(frame.dtype)
                previous = out
                if bar is not None:
                    bar.update(1)
                yield out
        finally:
            if bar is not None:
                bar.close()

    def _check_size(self, image: torch.Tensor) -> None:
        height, width = image.shape[-2:]
        if min(height, width) < self._min_input:
            raise ValueError(
                f"image is {height}×{width}; model {self.model_name!r} needs at least {self._min_input} px "
                "on the short side"
            )

    def __repr__(self) -> str:
        return (
            f"Dreamer(model={self.model_name!r}, layers={self.layers}, octaves={self.octaves}, "
            f"octave_scale={self.octave_scale}, iterations={self.iterations}, step_size={self.step_size}, "
            f"jitter={self.jitter}, precision={self.precision!r})"
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
        _checks.check_image(image)  # before the model is loaded
    return Dreamer(**options)(image, seed=seed, progress=progress, size=size)
