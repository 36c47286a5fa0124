"""fastdream: fast DeepDream for PyTorch.

    >>> import torch, fastdream
    >>> out = fastdream.dream(torch.rand(3, 256, 256))          # offline default model
    >>> dreamer = fastdream.Dreamer("googlenet", "inception4c")  # options bound once
    >>> out = dreamer(image_batch, seed=0)

The public API is what this module exports; ``fastdream.ops`` holds the fused kernels. Names are
imported on first use, so ``import fastdream`` (and ``fastdream --help``) does not pay for torch.
"""
from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_STEP_SIZE": ".options",
    "Dreamer": ".dreamer",
    "OptionError": ".options",
    "Options": ".options",
    "dream": ".dreamer",
    "WeightsUnavailableError": ".errors",
    "NonFiniteError": ".errors",
    "dream_files": ".cluster",
    "dream_folder": ".cluster",
    "backend_info": ".backends",
    "DEFAULT_MODEL": ".models",
    "default_layer": ".models",
    "list_layers": ".models",
    "list_models": ".models",
    "IMAGE_SUFFIXES": ".image_io",
    "decode_image": ".image_io",
    "encode_image": ".image_io",
    "load_image": ".image_io",
    "sample_image": ".image_io",
    "sample_image_path": ".image_io",
    "save_image": ".image_io",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastdream' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static tools see the real names
    from .backends import backend_info
    from .cluster import dream_files, dream_folder
    from .dreamer import Dreamer, dream
    from .errors import NonFiniteError, WeightsUnavailableError
    from .image_io import IMAGE_SUFFIXES, decode_image, encode_image, load_image, sample_image
    from .image_io import sample_image_path, save_image
    from .models import DEFAULT_MODEL, default_layer, list_layers, list_models
    from .options import DEFAULT_STEP_SIZE, OptionError, Options
