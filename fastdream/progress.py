"""The optional tqdm progress bar of a call (``progress=True``): over steps, images or frames."""
from __future__ import annotations

import contextlib
from typing import Optional


@contextlib.contextmanager
def progress_bar(enabled, desc: str, unit: str, total: Optional[int] = None, leave: bool = True):
    """A tqdm bar's ``update`` while the block runs (``None`` when not ``enabled``). ``enabled`` may
    be a callable of the caller's instead: called as ``enabled(n)`` with the units done since its
    last call (an exception it raises stops the call: a cancel button, a deadline)."""
    if callable(enabled):
        yield lambda n=1: enabled(n)
        return
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm  # noqa: PLC0415 - only when a bar is asked for

    bar = tqdm(total=total, desc=desc, unit=unit, leave=leave)
    try:
        yield bar.update
    finally:
        bar.close()
