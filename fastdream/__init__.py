"""fastdream: fast DeepDream for PyTorch.

    >>> import torch, fastdream
    >>> out = fastdream.dream(torch.rand(3, 256, 256))          # offline default model
    >>> dreamer = fastdream.Dreamer("googlenet", "inception4c")  # options bound once
    >>> out = dreamer(image_batch, seed=0)

The public API is what this module exports; ``fastdream.ops`` holds the fused kernels.
"""
from .backends import backend_info
from .dreamer import DEFAULT_STEP_SIZE, Dreamer, dream
from .errors import WeightsUnavailableError
from .image_io import load_image, sample_image, sample_image_path, save_image
from .models import DEFAULT_MODEL, default_layer, list_layers, list_models

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_STEP_SIZE",
    "Dreamer",
    "WeightsUnavailableError",
    "backend_info",
    "default_layer",
    "dream",
    "list_layers",
    "list_models",
    "load_image",
    "sample_image",
    "sample_image_path",
    "save_image",
    "__version__",
]
