"""Exceptions of fastdream beyond the built-in ``TypeError``/``ValueError``."""
from __future__ import annotations

from typing import Optional


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded (offline, missing file); the message says how to get them."""


class UnknownNameError(ValueError):
    """An unknown model or layer name. The message names the closest valid names and the Python call
    that lists them all; ``command_line`` is the same message for the ``fastdream`` command (which
    names the subcommand instead of the Python call)."""

    def __init__(self, message: str, command_line: Optional[str] = None):
        super().__init__(message)
        self.command_line = command_line if command_line is not None else message
