"""Exceptions of fastdream beyond the built-in ``TypeError``/``ValueError``."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded (offline, missing file); the message says how to get them."""
