"""The engine behind a ``Dreamer``: the model, its preparation per device, and the octave loop.

    >>> engine = Engine(Options(octaves=2))
    >>> out = engine.dream(image, seed=0, progress=False)    # image checked by the caller

One :class:`Engine` per Dreamer. Built once from the :class:`~fastdream.options.Options`: the model
(a built-in one loaded, frozen and BatchNorm-folded; a module of yours used as it is), the resolved
layers and classes, and the objective plan. Per device and precision, once: a :class:`Prepared`
model (the copy on the device, the layer tap, the normalisation, the CUDA graphs). Per call,
:meth:`Engine.dream` takes the image down the way ``docs/architecture.md`` ("Data flow") draws it:
float32 batch on the compute device → octave sizes and shift tables from the seed → tilings →
objective → stepper (eager, or CUDA graphs) → for each octave resize-add and iterate → back to the
caller's dtype, shape and device. The kernels (and so the backend) are ``fastdream.ops``'.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import secrets
import threading
import warnings
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from . import ops
from ._checks import check_min_size
from ._convert import to_dtype_like, to_float01
from .colors import keep_colors
from .dream_cache import PREPARED_GRAPHS, call_lock
from .diagnose import detached_layer_error, is_no_path_error, nonfinite_error
from .graphs import FallbackNotice, GraphCache, GraphStepper
from .models.layers import LayerTap, resolve_layers
from .models.prepare import freeze, prepare_for_dreaming
from .models.registry import ModelSpec, get_spec
from .objectives import Context, Objective, ObjectivePlan, class_indices, compose, first_octave, imagenet_categories
from .objectives import plan_options
from .octaves import octave_sizes, shift_table
from .progress import progress_bar
from .options import OptionError, Options, check_bool, check_int, check_seed, format_memory
from .regularizers import gaussian_smooth, laplacian_normalize
from .step import StepConfig, Stepper, Tiling, autocast_context
from .tiles import aligned, available_memory, grid_offsets, saved_bytes_per_pixel, tile_for_budget


FULL_SIZE_BUFFERS = 5
"""float32 tensors of the full image size a call holds at its last octave, tiled or not: the image,
``x``, ``base``, ``detail`` and the assembled gradient."""


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for the model (``None`` = float32) that ``precision`` means on ``device``."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # auto on the CPU: fp32 (docs/architecture.md, "Where the design changed, and why")
    return None


def autograd_on():
    """Gradients on and inference mode off, whatever the caller set (``torch.no_grad()``,
    ``torch.inference_mode()``); the caller's modes come back on exit."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack


def _floating_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """The dtype of the module's first floating-point parameter or buffer (None if it has none)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), None)


class Prepared:
    """The model on one device, ready to dream with: the tap, the normalisation constants, the
    CUDA graphs (``graphs``), the autograd bytes per pixel (``bytes_per_pixel``, measured on first
    tiled use) and ``memo``, what objectives keep per device (the guide's features)."""

    def __init__(self, model: nn.Module, layers, mean, std, device, dtype):
        self.model = model
        self.tap = LayerTap(model, layers)
        self.device = device
        self.dtype = dtype
        model_dtype = _floating_dtype(model)
        # A float64 / float16 / bfloat16 module gets its own dtype; the image and the step stay float32.
        self.input_dtype = model_dtype if model_dtype not in (None, torch.float32) else None
        self.bytes_per_pixel: Optional[float] = None
        self.memo: dict = {}
        self.graphs = GraphCache()  # captured CUDA iterations, kept across calls (fastdream.graphs)
        if mean is None:
            self.scale = self.shift = None
        else:
            m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            self.scale, self.shift = 1.0 / s, -m / s

    def features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Image-space float32 Tensor[B, 3, h, w] → ``{layer: activation}``."""
        if self.scale is not None:
            x = torch.addcmul(self.shift, x, self.scale)
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        with autocast_context(self.device, self.dtype):
            return self.tap(x)


class Engine:
    """Everything a Dreamer computes with, built from its options (see the module's docstring).

    ``layers`` (``{resolved name: weight}``), ``classes`` (``{index: weight}`` or None), ``plan``
    (the objective's options), ``objective`` (the objective of the options alone: the one every
    call uses when ``plan.static``), ``prepared`` (``{(device, dtype): Prepared}``).
    Calls run one at a time (a lock), so one engine may serve several threads.
    """

    def __init__(self, options: Options):
        self.options = options
        model = options.model
        layer_weights, class_weights = options.layers, options.classes
        if isinstance(model, nn.Module):
            if options.weights != "default":
                raise OptionError("{0} applies to built-in model names only; load your module's weights yourself",
                                  "weights")
            if layer_weights is None:
                raise OptionError("{0} is required with a custom model; see fastdream.list_layers(model)", "layers")
            if class_weights is not None:
                raise OptionError("{0} needs a built-in model (their classifier and class names are known)",
                                  "classes")
            self.spec: Optional[ModelSpec] = None
            self.model_name = type(model).__name__
            self.user_model: Optional[nn.Module] = model
            base = model
            aliases: Dict[str, str] = {}
            self.mean_std = options.normalize
            self.min_size = 32 if options.min_size is None else options.min_size
            self.min_input = 1
        else:
            self.spec = _wrapped("model", get_spec, model)
            self.model_name = model
            self.user_model = None
            base = _wrapped("weights", self.spec.build, options.weights)
            aliases = self.spec.aliases
            if layer_weights is None and class_weights is None:
                layer_weights = {self.spec.default_layer: 1.0}
            self.mean_std = options.normalize or (self.spec.mean, self.spec.std)
            self.min_size = self.spec.min_size if options.min_size is None else options.min_size
            self.min_input = self.spec.min_input

        layer_weights = layer_weights or {}
        resolved = _wrapped("layers", resolve_layers, base, list(layer_weights), aliases, repr(self.model_name))
        self.layers = dict(zip(resolved, layer_weights.values()))
        self.classes: Optional[Dict[int, float]] = None
        if class_weights is not None:
            categories = imagenet_categories(self._weights_meta())
            indices = _wrapped("classes", class_indices, list(class_weights), categories)
            self.classes = dict(zip(indices, class_weights.values()))
        # Every option some objective source reads, whatever the source (fastdream.objectives.plan);
        # the classes as resolved against the model's class names.
        values = {name: getattr(options, name) for name in plan_options()}
        if "classes" in values:
            values["classes"] = self.classes
        logits_layer = self.spec.logits_layer if self.spec is not None else None
        self.plan = ObjectivePlan(self.layers, logits_layer, **values)
        self.tapped = self.plan.tapped
        # The options' own objective: every call's where the plan is static; else the probe of tiles.py
        self.objective = compose(self.plan, static_only=True)
        self.base_model = base if self.user_model is not None else freeze(base)
        self.prepared: Dict[tuple, Prepared] = {}
        self.graph_notice = FallbackNotice()
        self.lock = threading.Lock()
        self.last_tiling: Optional[Tiling] = None  # of the last call's largest octave (None: untiled)

    def _weights_meta(self):
        if self.spec is None or self.spec.weights_enum is None:
            return None
        import torchvision.models as tvm

        return getattr(tvm, self.spec.weights_enum).DEFAULT.meta

    # -- inputs ----------------------------------------------------------------------------------

    def check_size(self, image: torch.Tensor) -> None:
        check_min_size(image.shape[-2:], self.min_input, self.model_name)

    def initial_image(self, size, seed: int) -> torch.Tensor:
        """What ``dreamer(None, size=(H, W))`` starts from: the ``init`` option's image, float32 [3, H, W]."""
        if size is None:
            raise OptionError("{0}=(height, width) is required when image is None", "size")
        if not (isinstance(size, (tuple, list)) and len(size) == 2):
            raise OptionError("{0} must be a (height, width) pair of ints, got {size!r}", "size", size=size)
        height, width = (check_int("size", v, self.min_input) for v in size)
        self.check_budget(1, height, width)
        if self.options.init == "grey":
            image = torch.full((3, height, width), 0.5)
        else:  # its own generator: the shift tables of a seed do not depend on the size
            noise = torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed ^ 0x5EED))
            image = noise.mul_(0.1).add_(0.5).clamp_(0.0, 1.0)
        return image.to(self.options.device or "cpu")

    def check_budget(self, batch: int, height: int, width: int) -> None:
        """OptionError naming ``max_memory`` where a byte budget cannot hold even the full-size float32
        buffers of a ``batch × 3 × height × width`` call (tiles bound the model's memory, not these),
        before anything of that size is allocated."""
        budget = self.options.max_memory
        if not isinstance(budget, int):
            return
        need = FULL_SIZE_BUFFERS * batch * 3 * height * width * 4
        if need > budget:
            raise OptionError(
                "{0}: {budget} is too small for a {batch}×3×{height}×{width} dream: its full-size float32 "
                "buffers alone (the image, the octave's input and base, the detail, the gradient) take {need}, "
                "whatever the tiles; raise {0} or dream a smaller image", "max_memory", budget=format_memory(budget), batch=batch,
                height=height, width=width, need=format_memory(need))

    def device_for(self, image: torch.Tensor) -> torch.device:
        device = self.options.device or image.device
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    # -- a call ----------------------------------------------------------------------------------

    def call_defaults(self, seed: Optional[int], progress: Optional[bool]) -> Tuple[int, bool]:
        """A call's ``seed`` and ``progress``, resolved once per public call: a given one checked,
        ``None`` the options' (a fresh random seed where the options have none either)."""
        seed = self.options.seed if seed is None else check_seed("seed", seed)
        if progress is None:
            progress = self.options.progress
        elif not callable(progress):
            progress = check_bool("progress", progress, "a bool or a callable")
        return (secrets.randbits(63) if seed is None else seed), progress

    def dream(self, image: Optional[torch.Tensor], seed: int, progress: bool, size=None) -> torch.Tensor:
        """Dream a checked image (``fastdream._checks.check_image``): Tensor[3, H, W] or [B, 3, H, W],
        1 or 3 channels, uint8 or float in [0, 1]. Returns a new tensor of its shape, dtype and device.
        ``image=None``: dream from the ``init`` option's image of ``size``. ``seed`` and ``progress``
        as :meth:`call_defaults` resolved them."""
        if image is None:
            image = self.initial_image(size, seed)
        elif size is not None:
            raise OptionError("{0} is only for image=None (dreaming from noise); resize the image yourself", "size")
        self.check_size(image)
        device = self.device_for(image)
        batch_in = image.dim() == 4
        x = image if batch_in else image.unsqueeze(0)
        batch, channels, height, width = x.shape
        self.check_budget(batch, height, width)
        with autograd_on():
            if batch == 0:
                return image.clone()
            sizes = octave_sizes(height, width, self.options.octaves, self.options.octave_scale, self.min_size)
            generator = torch.Generator().manual_seed(seed)
            tables = [shift_table(self.options.iterations, batch, self.options.jitter, generator) for _ in sizes]
            with self.lock:  # then the prepared model's own (always in this order)
                prepared = self.prepare(device)
                with call_lock(prepared.model):
                    tilings = self.tilings(prepared, batch, sizes, generator)
                    img = to_float01(x, device)
                    grey = channels == 1
                    if grey:
                        img = img.expand(-1, 3, -1, -1).contiguous()
                    out = self._octaves_or_tiled(prepared, img, sizes, tables, tilings, generator, progress)
            if grey:
                out = out.mean(dim=1, keepdim=True)
            out = to_dtype_like(out, image.dtype).to(image.device)
        return out if batch_in else out.squeeze(0)

    def prepare(self, device: torch.device) -> Prepared:
        """The model on ``device`` at the options' precision, made once."""
        dtype = resolve_precision(self.options.precision, device)
        key = (str(device), dtype)
        prepared = self.prepared.get(key)
        if prepared is not None:
            return prepared
        if self.user_model is not None:
            params = list(self.user_model.parameters()) + list(self.user_model.buffers())
            where = {p.device for p in params}
            if where and where != {device}:
                raise OptionError(
                    "{0}: the model's parameters are on {where} but the dream runs on {device}; move the model "
                    "there or pass {0}=", "device", where=sorted(map(str, where)), device=device)
            model = self.user_model
        else:
            model = self.base_model
            if any(p.device != device for p in model.parameters()):
                model = copy.deepcopy(model).to(device)
        # Built-in and user modules alike: traced, truncated, BN folded, in place, channels_last
        # (docs/architecture.md, "Models"), per input shape or on prepared blocks where fx cannot.
        if self.user_model is not None:  # memoised for dream()'s repeated calls, weakly per module
            model = PREPARED_GRAPHS.get(model, self.tapped, prepare_for_dreaming)
        else:
            model = prepare_for_dreaming(model, self.tapped)
        mean, std = self.mean_std if self.mean_std is not None else (None, None)
        prepared = Prepared(model, self.tapped, mean, std, device, dtype)
        self.prepared[key] = prepared
        return prepared

    def _octaves_or_tiled(self, prepared: Prepared, img, sizes, tables, tilings, generator, progress):
        """:meth:`octaves`; where a call with no memory budget runs out of memory, once more in
        tiles within what the device has free then, with a warning ("Memory and tiles")."""
        options = self.options
        self.last_tiling = _largest(tilings)
        budgeted = options.max_memory is not None or options.tile_size is not None
        try:
            return self.octaves(prepared, img, sizes, tables, tilings, progress)
        except torch.cuda.OutOfMemoryError:
            if budgeted:
                raise
        # outside the except block: its traceback no longer holds the failed attempt's tensors
        if prepared.device.type == "cuda":
            torch.cuda.empty_cache()
        tilings = self.tilings(prepared, img.shape[0], sizes, generator, max_memory="auto")
        self.last_tiling = _largest(tilings)
        if self.last_tiling is None:  # the budget says the whole image fits: nothing smaller to try
            raise torch.cuda.OutOfMemoryError(
                f"out of memory dreaming a {list(img.shape)} image on {prepared.device}, and its free memory "
                "says it should fit untiled; set max_memory= or tile_size= to dream it in tiles")
        warnings.warn(
            f"fastdream: out of memory on {prepared.device}; dreaming this call again in tiles of "
            f"{self.last_tiling.tile} px within the memory free now (set max_memory= to choose the budget)",
            RuntimeWarning, stacklevel=4)
        return self.octaves(prepared, img, sizes, tables, tilings, progress)

    def tilings(self, prepared: Prepared, batch: int, sizes, generator, max_memory=None) -> list:
        """Per octave, ``None`` (whole image at once) or the ``Tiling`` its memory budget needs
        (``max_memory``: a budget other than the options')."""
        options = self.options
        max_memory = options.max_memory if max_memory is None else max_memory
        if options.tile_size is None and max_memory is None:
            return [None] * len(sizes)
        height, width = sizes[-1]
        tile, margin = options.tile_size, aligned(options.tile_margin, up=True)
        if tile is None:
            if prepared.bytes_per_pixel is None:
                prepared.bytes_per_pixel = saved_bytes_per_pixel(prepared.features, self.objective, prepared.device)
            budget = available_memory(prepared.device) if max_memory == "auto" else max_memory
            tile = tile_for_budget(budget, prepared.bytes_per_pixel, batch, height, width, margin, self.min_input)
        if tile is not None:
            tile = aligned(tile)
        tilings = []
        for h, w in sizes:  # offsets drawn after the shift tables: untiled runs are unchanged
            if tile is None or (h <= tile and w <= tile):
                tilings.append(None)
                continue
            tilings.append(Tiling(tile, margin, grid_offsets(options.iterations, tile, generator)))
        return tilings

    def objective_for(self, prepared: Prepared, img: torch.Tensor, first_size) -> Objective:
        """This call's objective: the options' own, or one built from the guide's features or the
        input's channel ranking (``fastdream.objectives.compose``)."""
        if self.plan.static:
            return self.objective
        return compose(self.plan, Context(prepared.features, prepared.device, first_octave(img, first_size),
                                          prepared.memo))

    def _as_written(self, prepared: Prepared):
        """``(model, features)`` of the module as its author wrote it (a module of yours, not its
        prepared graph, which inlines the modules it does not keep), for naming a module in an error."""
        if self.user_model is None:
            return prepared.model, prepared.features
        mean, std = self.mean_std if self.mean_std is not None else (None, None)
        return self.user_model, Prepared(self.user_model, self.tapped, mean, std, prepared.device,
                                         prepared.dtype).features

    def _grad_transforms(self) -> list:
        transforms = []
        if self.options.smoothing is not None:
            sigmas = self.options.smoothing
            transforms.append(lambda g: gaussian_smooth(g, sigmas))
        if self.options.lap_normalize is not None:
            levels = self.options.lap_normalize
            transforms.append(lambda g: laplacian_normalize(g, levels))
        return transforms

    def octaves(self, prepared: Prepared, img: torch.Tensor, sizes, tables, tilings, progress: bool) -> torch.Tensor:
        """The octave loop on float32 ``img`` [B, 3, H, W] (on the compute device); returns the dream.

        The iterations run eagerly (``Stepper``), or as CUDA-graph replays (``GraphStepper``) where
        they pay and can be had: a static objective on a CUDA device with the compiled kernels.
        """
        options = self.options
        objective = self.objective_for(prepared, img, sizes[0])
        config, transforms, device = StepConfig(options.step_size), self._grad_transforms(), prepared.device
        if options.cuda_graphs and device.type == "cuda" and objective.static and ops.compiled(device):
            stepper = GraphStepper(prepared.features, objective, config, transforms, cache=prepared.graphs,
                                   notice=self.graph_notice, signature=(options.smoothing, options.lap_normalize),
                                   model=prepared.model, dtype=prepared.dtype)
        else:
            stepper = Stepper(prepared.features, objective, config, transforms)
        user = self.user_model
        modes = [m.training for m in user.modules()] if user is not None else None
        with progress_bar(progress, "dream", "step", total=len(sizes) * options.iterations, leave=False) as bar:
            try:
                if user is not None:
                    user.eval()
                detail = None
                x = img
                finite = []  # per octave, on the device: read once, after the last octave
                for size, table, tiling in zip(sizes, tables, tilings):
                    base, x = ops.resize_add(img, detail, size)  # detail None: x = a copy of base
                    shifts = table.to(prepared.device, non_blocking=True)
                    try:
                        stepper.run(x, shifts, bar, tiling)
                    except RuntimeError as exc:
                        if not is_no_path_error(exc):
                            raise
                        raise detached_layer_error(*self._as_written(prepared), base, self.tapped) from None
                    detail = x - base
                    finite.append(torch.isfinite(x).all())
                if not bool(torch.stack(finite).all()):  # the one host read of the call
                    k = [bool(f) for f in finite].index(False)
                    probe = ops.resize_add(img, None, sizes[k])[0]
                    raise nonfinite_error(*self._as_written(prepared), objective, transforms, probe, k + 1,
                                          len(sizes))
                return keep_colors(img, x) if options.keep_colors else x
            finally:
                if user is not None:
                    for m, mode in zip(user.modules(), modes):
                        m.training = mode


def _largest(tilings: list) -> Optional[Tiling]:
    """The tiling of the largest octave that is tiled (octaves grow), or ``None``: untiled."""
    return next((tiling for tiling in reversed(tilings) if tiling is not None), None)


def _wrapped(option: str, fn, *args):
    """``fn(*args)``, its ``ValueError`` about ``option`` raised again as an :class:`OptionError`."""
    try:
        return fn(*args)
    except OptionError:
        raise
    except ValueError as exc:
        raise OptionError.about(option, exc) from None
