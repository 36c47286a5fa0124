"""The options of a dream, declared once: type, default, check, and how the command line spells them.

    >>> Options(octaves=3, layers=["_blocks.9", "_blocks.11"]).layers
    {'_blocks.9': 1.0, '_blocks.11': 1.0}
    >>> Options(octaves=0)
    Traceback (most recent call last):
    fastdream.options.OptionError: octaves must be >= 1, got 0

:class:`Options` is what ``Dreamer(...)`` takes: each field carries its check (run by the frozen
dataclass's ``__post_init__``, which also puts the value in its canonical form: ``layers`` as a
``{name: weight}`` dict, ``smoothing`` as a tuple of sigmas, ...) and, in its metadata, the
command-line flag, help text, metavar, choices and text parser (``fastdream/cli.py`` builds its
flags from them; see ``docs/architecture.md``, "Options").

A bad value raises :class:`OptionError` (a ``ValueError``; :class:`OptionTypeError` is also a
``TypeError``) that knows which option it is about, so the same error reads
``octaves must be >= 1, got 0`` in Python and ``--octaves must be >= 1, got 0`` on the command line
(:meth:`OptionError.render`). This module imports no torch (the command line's ``--help`` stays fast);
the few checks that need it (``device``, ``guide``) import it when they run.
"""
from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._checks import choice_problem, int_problem, real_problem, type_name  # torch-free, like this module
from .models.registry import DEFAULT_MODEL, closest_names  # torch-free, like this module

DEFAULT_STEP_SIZE = 0.01
"""Mean change per pixel per iteration, in image units (the seed's 1.5 on 0..255 is ~0.006)."""

OBJECTIVES = ("l2", "mean")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHANNEL_MODES = ("strongest", "weakest", "average")
INITS = ("noise", "grey")


# ----------------------------------------------------------------------------------------- errors


class OptionError(ValueError):
    """A bad option value, naming the option(s) it is about.

    ``template`` holds ``{0}``, ``{1}``, ... for the option names and ``{value}``-style fields for
    ``values``; ``str(error)`` spells the names as Python does (``octave_scale``), :meth:`render`
    as the caller wants (the command line: ``--octave-scale``).
    """

    def __init__(self, template: str, *options: str, **values: Any):
        self.template = template
        self.options = options
        self.values = values
        self.command_line_values: Optional[Dict[str, Any]] = None  # where the command line reads otherwise
        super().__init__(self.render())

    @classmethod
    def about(cls, option: str, error: BaseException) -> "OptionError":
        """``error``'s message as an error about ``option`` (a leading ``option:`` becomes the name).
        An ``error`` with a ``command_line`` wording (the models' unknown-name errors) keeps it for
        :meth:`for_command_line`."""
        made = cls("{0}:{rest}", option, rest=cls._rest(option, str(error)))
        wording = getattr(error, "command_line", None)
        if wording:
            made.command_line_values = {"rest": cls._rest(option, str(wording))}
        return made

    @staticmethod
    def _rest(option: str, text: str) -> str:
        text = " ".join(text.split())
        for prefix in (option + ":", flag(option) + ":"):
            if text.startswith(prefix):
                return text[len(prefix):]
        return " " + text

    @property
    def option(self) -> str:
        """The option the error is about (the first, where it names several)."""
        return self.options[0]

    def render(self, spell: Callable[[str], str] = str) -> str:
        """The message with every option name passed through ``spell``."""
        return self.template.format(*map(spell, self.options), **self.values)

    def for_command_line(self) -> str:
        """The message as the ``fastdream`` command says it: options as flags (``--octave-scale``),
        and the command-line wording of a wrapped error."""
        return self.template.format(*map(flag, self.options), **(self.command_line_values or self.values))

    def __reduce__(self):  # keeps the option names (and the command-line wording) across pickling
        return _rebuild_error, (type(self), self.template, self.options, self.values, self.command_line_values)


class OptionTypeError(OptionError, TypeError):
    """An option of the wrong type (``except TypeError`` catches it too)."""


def _rebuild_error(cls, template, options, values, command_line_values=None):
    error = cls(template, *options, **values)
    error.command_line_values = command_line_values
    return error


def _raise(problem, name: str, label: str = "{0}") -> None:
    """Raise a rule's ``problem`` (``fastdream._checks``) as an :class:`OptionError` about ``name``."""
    if problem is not None:
        kind, text = problem
        error = OptionTypeError if kind is TypeError else OptionError
        raise error(label + " " + text.replace("{", "{{").replace("}", "}}"), name)


# ----------------------------------------------------------------------------------------- checks
# Each check takes (name, value) and returns the canonical value or raises OptionError naming ``name``;
# the rules of numbers and choices are ``fastdream._checks``' (one place for every argument rule).


def check_int(name: str, value, minimum: int, label: str = "{0}") -> int:
    _raise(int_problem(value, minimum), name, label)
    return int(value)


def check_real(name: str, value, *, greater_than: Optional[float] = None, at_least: Optional[float] = None,
               label: str = "{0}") -> float:
    _raise(real_problem(value, greater_than=greater_than, at_least=at_least), name, label)
    return float(value)


def check_bool(name: str, value, expected: str = "a bool") -> bool:
    if not isinstance(value, bool):
        raise OptionTypeError("{0} must be " + expected + ", got {got}", name, got=type_name(value))
    return value


def check_choice(name: str, value, choices: Sequence[str], optional: bool = False) -> Optional[str]:
    _raise(choice_problem(value, choices, optional), name)
    return value


def check_seed(name: str, seed) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise OptionTypeError("{0} must be None or an int, got {got}", name, got=type_name(seed))
    if not 0 <= seed < 2**63:
        raise OptionError("{0} must be in [0, 2**63), got {seed}", name, seed=seed)
    return int(seed)


def _optional(check: Callable) -> Callable:
    """``check`` that lets ``None`` through."""
    return lambda name, value: None if value is None else check(name, value)


def _at_least(minimum: int) -> Callable:
    return lambda name, value: check_int(name, value, minimum)


def _weighted(name: str, value, what: str, key_ok: Callable[[Any], bool], key_kind: str) -> Dict[Any, float]:
    """One name | a list of names | ``{name: weight}`` → ``{name: weight}`` (weights finite)."""
    items = list(value.items()) if isinstance(value, Mapping) else [(key, 1.0) for key in value]
    if not items:
        raise OptionError("{0} must name at least one {what}", name, what=what)
    out: Dict[Any, float] = {}
    for key, weight in items:
        if not key_ok(key):
            raise OptionTypeError("{0}: {key_kind}, got {got}", name, key_kind=key_kind, got=type_name(key))
        out[key] = check_real(name, weight, label="{0}[" + repr(key).replace("{", "{{").replace("}", "}}")
                              + "] (weight)")
    return out


def check_layers(name: str, layers) -> Optional[Dict[str, float]]:
    """``None`` | name | names | ``{name: weight}`` → ``{name: weight}`` (``None`` stays ``None``)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (Mapping, Sequence)):
        raise OptionTypeError("{0} must be a layer name, a list of names or a {{name: weight}} dict, got {got}",
                              name, got=type_name(layers))
    out = _weighted(name, layers, "layer", lambda key: isinstance(key, str), "layer names must be str")
    if all(w == 0 for w in out.values()):
        raise OptionError("{0}: at least one layer weight must be non-zero", name)
    return out


def check_classes(name: str, classes) -> Optional[Dict[Union[str, int], float]]:
    """``None`` | a class (name or index) | a list | ``{class: weight}`` → ``{class: weight}``."""
    if classes is None:
        return None
    if isinstance(classes, (str, numbers.Integral)) and not isinstance(classes, bool):
        classes = [classes]
    if not isinstance(classes, (Mapping, Sequence)):
        raise OptionTypeError("{0} must be a class name or index, a list of them or a {{class: weight}} dict, "
                              "got {got}", name, got=type_name(classes))
    return _weighted(name, classes, "class",
                     lambda c: not isinstance(c, bool) and isinstance(c, (str, numbers.Integral)),
                     "each class must be a name (str) or an index (int)")


def check_channels(name: str, channels) -> Optional[List[int]]:
    if channels is None:
        return None
    if isinstance(channels, numbers.Integral) and not isinstance(channels, bool):
        channels = [channels]
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
        raise OptionTypeError("{0} must be None, an int or a list of ints, got {got}", name,
                              got=type_name(channels))
    if not channels:
        raise OptionError("{0} must list at least one channel index", name)
    return [check_int(name, c, 0, label="{0}[i]") for c in channels]


def check_sigmas(name: str, smoothing) -> Optional[Tuple[float, ...]]:
    """A sigma σ (→ the cascade σ·(0.5, 1, 2)) or a sequence of sigmas, each > 0, in pixels."""
    if smoothing is None:
        return None
    if isinstance(smoothing, numbers.Real) and not isinstance(smoothing, bool):
        sigma = check_real(name, smoothing, greater_than=0.0)
        return (0.5 * sigma, sigma, 2.0 * sigma)
    if isinstance(smoothing, (str, bytes)) or not isinstance(smoothing, Sequence) or not smoothing:
        raise OptionTypeError("{0} must be None, a sigma or a non-empty list of sigmas, got {value!r}", name,
                              value=smoothing)
    return tuple(check_real(name, s, greater_than=0.0, label="{0} sigma") for s in smoothing)


def check_normalize(name: str, normalize) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    if normalize is None:
        return None
    if not (isinstance(normalize, Sequence) and len(normalize) == 2):
        raise OptionTypeError("{0} must be None or a (mean, std) pair, each a float or 3 floats", name)
    pair = []
    for label, part in zip(("mean", "std"), normalize):
        values = [part] if isinstance(part, numbers.Real) else list(part) if isinstance(part, Sequence) else None
        if values is None or len(values) not in (1, 3):
            raise OptionError("{0}: {label} must be a float or 3 floats, got {part!r}", name, label=label, part=part)
        values = [check_real(name, v, label="{0} " + label) for v in values] * (3 if len(values) == 1 else 1)
        pair.append(tuple(values))
    if any(s <= 0 for s in pair[1]):
        raise OptionError("{0}: std must be > 0, got {std}", name, std=pair[1])
    return pair[0], pair[1]


def check_model(name: str, model):
    """A model name (str; the registry checks it) or an ``nn.Module``."""
    nn = sys.modules.get("torch.nn")  # a module can only exist once torch is imported: no import here
    if isinstance(model, str) or (nn is not None and isinstance(model, nn.Module)):
        return model
    raise OptionTypeError("{0} must be a model name (str) or an nn.Module, got {got}", name, got=type_name(model))


def check_weights(name: str, weights):
    if weights is None or isinstance(weights, (str, os.PathLike)):
        return weights
    raise OptionTypeError("{0} must be 'default', None or a path to a .pth file, got {got}", name,
                          got=type_name(weights))


def check_objective(name: str, objective):
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise OptionError("{0} must be one of {choices} or a callable, got {value!r}", name, choices=OBJECTIVES,
                              value=objective)
    elif not callable(objective):
        raise OptionTypeError("{0} must be one of {choices} or a callable, got {got}", name, choices=OBJECTIVES,
                              got=type_name(objective))
    return objective


def check_device(name: str, device):
    if device is None:
        return None
    import torch  # noqa: PLC0415 - only when a device is given

    if not isinstance(device, (str, torch.device)):
        raise OptionTypeError("{0} must be None, a str such as 'cuda:0' or a torch.device, got {got}", name,
                              got=type_name(device))
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise OptionError("{0}: {why}", name, why=str(exc)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("{0}: {device} was requested but CUDA is not available on this machine", name,
                          device=device)
    if device.type not in ("cpu", "cuda"):
        raise OptionError("{0} must be a cpu or cuda device, got {device}", name, device=device)
    return device


def check_memory(name: str, value):
    if value is None or value == "auto":
        return value
    return check_int(name, value, 1)


def check_guide(name: str, guide):
    if guide is None:
        return None
    from ._checks import check_image  # noqa: PLC0415 - torch, only when a guide is given

    guide = check_image(guide, name)
    if guide.dim() != 3:
        raise OptionError("{0} must be one image [3, H, W], got shape {shape}", name, shape=list(guide.shape))
    return guide


# ----------------------------------------------------------------------------------- text parsers
# The command line's form of an option (``--layers a:1,b:0.5``); each raises ValueError with a message
# that names no option (the command line puts the flag in front).


def _weighted_names(text: str, what: str, convert=str):
    """``a,b`` -> ``[a, b]``; ``a:1,b:0.5`` -> ``{a: 1.0, b: 0.5}`` (a missing weight is 1)."""
    names: Dict[object, float] = {}
    weighted = False
    for part in text.split(","):
        part = part.strip()
        name, sep, weight = part.rpartition(":") if ":" in part else (part, "", "")
        name = name.strip()
        if not name:
            raise ValueError(f"empty {what} name in {text!r}")
        key = convert(name)
        if sep:
            weighted = True
            try:
                names[key] = float(weight)
            except ValueError:
                raise ValueError(f"bad weight {weight!r} for {what} {name!r} (expected NAME or NAME:WEIGHT)") from None
        else:
            names[key] = 1.0
    return names if weighted else list(names)


def parse_layers(text: str):
    """``a,b`` -> ``["a", "b"]``; ``a:1,b:0.5`` -> ``{"a": 1.0, "b": 0.5}``."""
    return _weighted_names(text, "layer")


def parse_classes(text: str):
    """``tabby,285`` -> ``["tabby", 285]``; ``tabby:2,285`` -> ``{"tabby": 2.0, 285: 1.0}``."""
    return _weighted_names(text, "class", lambda name: int(name) if name.isdigit() else name)


def parse_channels(text: str) -> List[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated channel indices such as 3,17,42, got {text!r}") from None


def parse_weights(text: str):
    return None if text == "none" else text  # "default" or a path; the model registry checks it


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value}")
    return value


def parse_count(text: str) -> int:
    return _whole_number(text, 1)


def parse_non_negative(text: str) -> int:
    return _whole_number(text, 0)


def parse_positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"must be a finite number > 0, got {text}")
    return value


def parse_smoothing(text: str):
    """``SIGMA`` -> a float (the cascade 0.5σ, σ, 2σ); ``S1,S2,...`` -> a list of sigmas."""
    sigmas = [parse_positive(part.strip()) for part in text.split(",")]
    return sigmas[0] if len(sigmas) == 1 else sigmas


_BYTE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(text: str):
    """``auto``, a byte count, or a size with a binary unit: ``512M``, ``2G``, ``1.5GiB``."""
    if text.strip().lower() == "auto":
        return "auto"
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"expected bytes such as 2G, 512M, 1000000 or auto, got {text!r}")
    value = int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])
    if value < 1:
        raise ValueError(f"must be at least 1 byte, got {text!r}")
    return value


def format_memory(value) -> str:
    """The inverse of :func:`parse_memory` for messages: 2147483648 -> '2G', 1610612736 -> '1.5G';
    ``"auto"`` and ``None`` as they are."""
    if not isinstance(value, int):
        return str(value)
    for unit in "TGMK":
        size = _BYTE_UNITS[unit.lower()]
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


# ----------------------------------------------------------------------------------------- schema


def option(default, check: Callable, help: str, *, group: Optional[str] = None, parse: Optional[Callable] = None,
           metavar: Optional[str] = None, choices: Optional[Sequence[str]] = None, shown: Optional[str] = None,
           switch: bool = False, command: Optional[str] = None, per_call: bool = False, doc: str = ""):
    """A field of :class:`Options` with its check and its command-line form.

    ``check(name, value)``: the canonical value, or an :class:`OptionError`. ``group``: the ``--help``
    section of its flag, ``None`` for an option the command line does not offer. ``parse``: text →
    value (default ``str``). ``shown``: the default as ``--help`` states it (default: the value).
    ``switch``: a flag without a value (sets ``True``). ``command``: the one subcommand that offers it.
    ``per_call``: the command line passes it to each call, not to ``Dreamer(...)`` (``seed``).
    ``doc``: what it does, for Python (``Dreamer``'s docstring is made of them: :func:`args_doc`).
    """
    meta = dict(check=check, help=help, group=group, parse=parse, metavar=metavar, choices=choices,
                shown=str(default) if shown is None else shown, switch=switch, command=command, per_call=per_call,
                doc=doc or help)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Options:
    """Every option of a dream (see :class:`fastdream.Dreamer` for what each one does)."""

    model: Any = option(DEFAULT_MODEL, check_model, "model name, see 'fastdream models'", group="model",
        doc=(
            'a built-in model name (``fastdream.list_models()``) or any ``nn.Module`` taking Tensor[B, 3, H, '
            'W]. A module of yours is never moved or changed: the dream runs a graph of it that shares its '
            'parameters (BatchNorm folded, truncated at the deepest layer, ``fastdream.models.prepare``; one '
            'per input shape where its forward branches on shapes), or where none can be had (a branch on '
            'tensor values), its own forward on its prepared blocks, said once; it is put in eval mode for '
            "the duration of a call. Its parameters may be float32, float64, float16 or bfloat16: the model's "
            'input is cast to its dtype, the image and the step stay float32.'))
    layers: Any = option(
        None, check_layers, "layer(s) to dream at, comma-separated, each optionally weighted as NAME:WEIGHT; "
        "see 'fastdream layers MODEL'", group="model", parse=parse_layers, metavar="NAME[:W],...",
        shown="the model's default layer",
        doc=(
            "layer name(s) to dream at, qualified names from ``named_modules()`` or the model's aliases "
            '(``fastdream.list_layers(model)``); a ``{name: weight}`` dict weighs several layers. ``None``: '
            "the model's default layer (required for a module of yours)."))
    weights: Any = option(
        "default", check_weights, "pretrained weights ('default'), random init ('none'), or a .pth state dict file",
        group="model", parse=parse_weights, metavar="default|none|PATH", shown="pretrained",
        doc=(
            'built-in models only: ``"default"`` (pretrained), ``None`` (random init) or a path to a local '
            '``.pth`` state dict.'))
    channels: Any = option(None, check_channels, "maximise only these channel indices of the layer(s)",
                           group="model", parse=parse_channels, metavar="I,J,...", shown="all",
        doc=(
            'channel indices to maximise at every layer (``None``: all).'))
    objective: Any = option("l2", check_objective, "what to maximise: l2 = 0.5*sum(a^2) or mean", group="model",
                            choices=OBJECTIVES,
        doc=(
            '``"l2"`` (the seed\'s 0.5·sum(a²)), ``"mean"``, or a callable ``Tensor[B, C, h, w] -> scalar`` '
            'summed over the batch.'))

    octaves: int = option(4, _at_least(1), "number of octave sizes", group="algorithm", parse=int, metavar="N",
        doc=(
            'number of octave sizes (>= 1), fewer if the image is small.'))
    octave_scale: float = option(1.4, lambda n, v: check_real(n, v, greater_than=1.0),
                                 "size ratio between octaves, > 1", group="algorithm", parse=float, metavar="S",
        doc=(
            'size ratio between octaves (> 1).'))
    iterations: int = option(10, _at_least(0), "gradient steps per octave", group="algorithm", parse=int,
                             metavar="N",
        doc=(
            'gradient steps per octave (>= 0).'))
    step_size: Optional[float] = option(
        None, lambda n, v: DEFAULT_STEP_SIZE if v is None else check_real(n, v, greater_than=0.0),
        "mean change per pixel per step, image in [0, 1]", group="algorithm", parse=float, metavar="S",
        shown=str(DEFAULT_STEP_SIZE),
        doc=(
            'mean absolute change per pixel per step, in image units ([0, 1] scale); ``None``: '
            '``DEFAULT_STEP_SIZE``.'))
    jitter: int = option(32, _at_least(0), "maximum random shift in pixels", group="algorithm", parse=int,
                         metavar="PX",
        doc=(
            'maximum random roll in pixels (>= 0), uniform in [-jitter, jitter] per image and step.'))
    min_size: Optional[int] = option(None, _optional(_at_least(1)), "smallest short side of an octave",
                                     group="algorithm", parse=int, metavar="PX", shown="the model's",
        doc=(
            'smallest short side (pixels) of an octave; default from the model (32 for modules of yours).'))
    seed: Optional[int] = option(None, check_seed, "seed of the random shifts, for repeatable results",
                                 group="algorithm", parse=int, per_call=True, shown="fresh randomness",
        doc=(
            'default seed of the jitter shifts (``None``: fresh randomness per call). Reproducible: the '
            'same seed, input, options, machine, backend (``fastdream.backend_info()``) and torch thread '
            'count (``torch.get_num_threads()``) give the same output; 1 and 2 threads differ (the CPU '
            "step's per-image mean is reduced per thread and the dynamics are chaotic)."))

    guide: Any = option(None, check_guide, "grow the features of this image instead of --objective's",
                        group="what to dream", metavar="IMAGE", shown="none",
        doc=(
            'an image (Tensor[3, H, W], uint8 or float in [0, 1]) whose features the dream grows: each '
            "activation vector is pulled towards its best match in the guide's features at the same layer "
            "(the original notebook's ``objective_guide``); replaces ``objective``."))
    channel_mode: Optional[str] = option(
        None, lambda n, v: check_choice(n, v, CHANNEL_MODES, optional=True),
        "dream only the --channel-count channels of each layer that are strongest / weakest / closest to the "
        "mean in each image", group="what to dream", choices=CHANNEL_MODES, shown="all channels",
        doc=(
            '``"strongest"``, ``"weakest"`` or ``"average"``: dream only the ``channel_count`` channels of '
            'each layer that are strongest / weakest / closest to the mean in each input image (its mean '
            'activation per channel, at the first octave).'))
    channel_count: int = option(8, _at_least(1), "channels picked by --channel-mode", group="what to dream",
                                parse=parse_count, metavar="N",
        doc=(
            'how many channels ``channel_mode`` picks per layer and image (>= 1).'))
    classes: Any = option(
        None, check_classes, "ImageNet classes to grow, names (tabby) or indices (285), each optionally weighted "
        "as CLASS:WEIGHT; alone, or added to --layers", group="what to dream", parse=parse_classes,
        metavar="CLASS[:W],...", shown="none",
        doc=(
            'ImageNet classes to grow: names (``"tabby"``, case-insensitive) or indices, a list or a '
            '``{class: weight}`` dict; maximises their logits (built-in models). Without ``layers`` the '
            'classes are the whole objective, with them they are added.'))
    smoothing: Any = option(
        None, check_sigmas, "Gaussian smoothing of each gradient, sigma in pixels (one SIGMA: the cascade 0.5, 1, "
        "2 x SIGMA)", group="what to dream", parse=parse_smoothing, metavar="SIGMA[,SIGMA...]", shown="none",
        doc=(
            'Gaussian smoothing of each gradient before the step: a sigma in pixels (the cascade σ·(0.5, 1, '
            '2) is averaged) or a sequence of sigmas.'))
    lap_normalize: Optional[int] = option(
        None, _optional(_at_least(1)), "Laplacian-pyramid normalisation of each gradient with LEVELS levels",
        group="what to dream", parse=parse_count, metavar="LEVELS", shown="none",
        doc=(
            'Laplacian-pyramid normalisation of each gradient with this many levels.'))
    keep_colors: bool = option(False, check_bool, "keep the input's colours, dream only the luminance",
                               group="what to dream", switch=True, shown="off",
        doc=(
            "keep the input's colours (only the luminance is dreamed, BT.601 YCbCr)."))
    init: str = option("noise", lambda n, v: check_choice(n, v, INITS),
                       "what --noise starts from: noise (0.5 + 0.1 N(0, 1), from --seed) or flat grey",
                       group="what to dream", choices=INITS, command="dream",
        doc=(
            'what ``dreamer(None, size=(H, W))`` starts from: ``"noise"`` (0.5 + 0.1·N(0, 1), from the seed) '
            'or ``"grey"``.'))

    max_memory: Any = option(
        None, check_memory, "memory budget of one dream on its device, such as 2G, 512M, a byte count, or auto "
        "(what is free now); larger images are dreamed tile by tile", group="memory", parse=parse_memory,
        metavar="BYTES|auto", shown="no budget",
        doc=(
            'memory budget in bytes for one call on its device, or ``"auto"`` (what the device has free now);'
            ' past it, gradients are computed tile by tile (``fastdream.tiles``) so any image size fits. '
            '``None``: no budget.'))
    tile_size: Optional[int] = option(
        None, _optional(_at_least(32)), "force square tiles of PX pixels a side, >= 32, rounded down to a "
        "multiple of 32", group="memory", parse=parse_count, metavar="PX", shown="from --max-memory",
        doc=(
            'force tiles of this many pixels a side (overrides ``max_memory``).'))
    tile_margin: int = option(64, _at_least(0), "context around each tile, rounded up to 32", group="memory",
                              parse=parse_non_negative, metavar="PX",
        doc=(
            'context in pixels around each tile, for the receptive field. Tiles, margins and grid offsets are'
            ' rounded to multiples of 32 px (``fastdream.tiles.ALIGN``).'))

    device: Any = option(None, check_device, "cpu, cuda or cuda:N", group="hardware",
                         shown="cpu",
        doc=(
            "where to compute (``None``: the image's device); the result is returned on the image's device."))
    precision: str = option("auto", lambda n, v: check_choice(n, v, PRECISIONS),
                            "model arithmetic; auto = bf16 (fp16 where bf16 is missing) on CUDA GPUs, fp32 on CPUs", group="hardware",
                            choices=PRECISIONS,
        doc=(
            '``"auto"`` (bf16 autocast on CUDA GPUs, fp16 where bf16 is missing; fp32 on CPUs), ``"fp32"``, '
            '``"bf16"`` or ``"fp16"``; the image and the step stay float32.'))
    normalize: Any = option(None, check_normalize, "(mean, std) applied to the [0, 1] image before the model",
        doc=(
            '``(mean, std)`` applied to the [0, 1] image before the model; built-in models use their own '
            '(ImageNet), a module of yours gets the image as given unless this is set.'))
    progress: bool = option(False, check_bool, "show a progress bar",
        doc=(
            'default for showing a tqdm bar over octaves × iterations.'))
    cuda_graphs: bool = option(True, check_bool, "replay captured CUDA graphs on CUDA",
        doc=(
            'on CUDA with the compiled kernels, capture one iteration per octave shape in a CUDA graph and '
            'replay it (``fastdream.graphs``); same result, less launch overhead. Graphs are kept across '
            'calls. Tiled octaves, ``guide`` and ``channel_mode`` (their objective is built per call) run '
            'eagerly, and so does a model or objective that cannot be captured (one ``RuntimeWarning``). '
            '``torch.backends.cudnn.benchmark`` is yours to set; ``True`` is usually faster on GPUs (the '
            'autotuning runs before the capture).'))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))
        if self.channel_mode is not None and self.channels is not None:
            raise OptionError("{0} and {1} exclude each other: pick channels by index or by mode",
                              "channels", "channel_mode")
        if self.channel_mode is not None and self.guide is not None:
            raise OptionError("{0} and {1} exclude each other", "guide", "channel_mode")

    def as_dict(self) -> Dict[str, Any]:
        """The options as keyword arguments (shallow: tensors and modules are not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def fields() -> Tuple[dataclasses.Field, ...]:
    """The fields of :class:`Options`, in declaration order, each with its metadata (see :func:`option`)."""
    return dataclasses.fields(Options)


def check_names(names, where: str, also: Sequence[str] = ()) -> None:
    """TypeError for a keyword of ``where(...)`` that is not an option (nor one of ``also``), naming
    the closest option names (``octave`` → did you mean ``'octaves'``)."""
    known = [f.name for f in fields()] + list(also)
    for name in names:
        if name not in known:
            close = closest_names(name, known, 2)
            hint = (f"; did you mean {' or '.join(map(repr, close))}?" if close
                    else f"; the options are {', '.join(known)}")
            raise TypeError(f"{where}() got an unknown option {name!r}{hint}")


def args_doc(indent: str = "    ") -> str:
    """The ``Args:`` section of a docstring for the options, from each field's ``doc``."""
    import textwrap  # noqa: PLC0415 - once, when the Dreamer class is made

    lines = ["Args:"]
    for f in fields():
        lines += textwrap.wrap(f"{f.name}: {f.metadata['doc']}", 100, initial_indent=indent,
                               subsequent_indent=indent * 2, break_on_hyphens=False)
    return "\n".join(lines)


def flag(name: str) -> str:
    """How the command line spells option ``name``: ``octave_scale`` -> ``--octave-scale``."""
    return "--" + name.replace("_", "-")


def signature(leading: Sequence[str] = ("model", "layers")) -> inspect.Signature:
    """``(model=..., layers=..., *, weights=..., ...)``: the signature of a callable taking the options."""
    params = [
        inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD if f.name in leading
                          else inspect.Parameter.KEYWORD_ONLY, default=f.default)
        for f in sorted(fields(), key=lambda f: f.name not in leading)
    ]
    return inspect.Signature(params)
