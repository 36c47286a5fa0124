"""Exceptions of fastdream beyond the built-in ``TypeError``/``ValueError``.

Both carry ``command_line``: the same message for the ``fastdream`` command, in flag syntax and
naming subcommands instead of Python calls (the command prints it instead of the message).
"""
from __future__ import annotations

from typing import Optional, Tuple


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded (offline, missing file); the message says how to get them."""

    def __init__(self, message: str, command_line: Optional[str] = None):
        super().__init__(message)
        self.command_line = command_line


class UnknownNameError(ValueError):
    """An unknown model or layer name; the message names the closest valid names and how to list
    them all."""

    def __init__(self, message: str, command_line: Optional[str] = None):
        super().__init__(message)
        self.command_line = command_line


class NonFiniteError(FloatingPointError):
    """A dream became NaN or infinite; the message says where it came from (a module's output, the
    objective, the gradient), found by replaying the failing octave's input once."""


def per_image_errors() -> Tuple[type, ...]:
    """What one image of many may fail with while the others go on (a folder on the command line,
    a Ray worker): a bad file or value, and running out of memory on it (torch imported here)."""
    import torch

    return (ValueError, TypeError, OSError, NonFiniteError, torch.cuda.OutOfMemoryError)
