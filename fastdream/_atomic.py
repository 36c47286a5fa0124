"""Files written atomically: a hidden temporary file next to the target, moved into place when done.

Used by :func:`fastdream.save_image` and :class:`fastdream.video.VideoWriter`, so a reader (or a
crash, or Ctrl-C) never sees a partial file at the target's name, and an existing file is replaced
only when the caller asked for that.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
from typing import Iterable, List, Tuple


_TOKEN_BYTES = 6  # .BASE.<12 hex digits>.tmp


def open_temp(folder: str, base: str, func: str) -> Tuple[int, str]:
    """Creates a new hidden file ``.BASE.RANDOM.tmp`` in ``folder`` (mode 0o666 minus the umask);
    returns its descriptor, open for writing, and its path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = os.path.join(folder, f".{base}.{secrets.token_hex(_TOKEN_BYTES)}.tmp")
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"{func}: could not create a temporary file in {folder!r}")


def exists_error(name: str, func: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"{func}: file exists (pass overwrite=True to replace it)", name)


def publish(temp: str, name: str, overwrite: bool, func: str) -> None:
    """Moves the finished file ``temp`` to ``name`` in one step.

    Without ``overwrite`` an existing ``name`` is never replaced, not even one that appeared while
    ``temp`` was written: ``FileExistsError`` (naming ``func``) and ``temp`` is left for the caller to
    remove. On file systems without hard links the check and the rename are two steps.
    """
    if overwrite:
        os.replace(temp, name)
        return
    try:  # a hard link fails if the target exists, so it is never replaced
        os.link(temp, name)
    except FileExistsError:
        raise exists_error(name, func) from None
    except OSError:  # no hard links here: check, then rename
        if os.path.lexists(name):
            raise exists_error(name, func) from None
        os.replace(temp, name)
    else:
        os.unlink(temp)


def stale_temps(folder: str, bases: Iterable[str]) -> List[str]:
    """The temporary files :func:`open_temp` names for ``bases`` in ``folder`` (``.BASE.<12 hex
    digits>.tmp``) that exist: what a killed writer left. Other files are never listed."""
    wanted = set(bases)
    pattern = re.compile(r"\.(.+)\.[0-9a-f]{%d}\.tmp" % (2 * _TOKEN_BYTES))
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match and match.group(1) in wanted and os.path.isfile(os.path.join(folder, name)):
            found.append(os.path.join(folder, name))
    return found
