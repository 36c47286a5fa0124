"""Reading an iterable ahead on a worker thread (decode the next images while a batch dreams), or
in place, a read error handed over as an item either way."""
from __future__ import annotations

import queue
import sys
import threading
from typing import Iterable, Iterator


def items_or_errors(items: Iterable) -> Iterator:
    """``items`` with an exception raised while reading one handed over in its place (the
    consumer decides), on the caller's thread."""
    iterator = iter(items)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - handed over in the item's place
            item = exc
        yield item


def prefetched(items: Iterable, depth: int) -> Iterator:
    """Iterate ``items`` on a worker thread, up to ``depth`` ahead. An exception raised while
    reading an item is handed over in its place (the consumer decides); the worker stops when the
    consumer does."""
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        for item in items_or_errors(items):
            if not put(item):
                return
        put(done)

    torch = sys.modules.get("torch")
    ready = threading.Event()

    def start():
        if torch is not None:
            # One torch thread here: a second live thread with a parallel (OpenMP) pool of its
            # own slows every parallel op of the dreaming thread (dream_many 1.3x slower on 2 cores).
            torch.get_num_threads()  # this thread's lazy init now, or it would re-read the restored default
            torch.set_num_threads(1)
        ready.set()
        work()

    threads = torch.get_num_threads() if torch is not None else None
    thread = threading.Thread(target=start, name="fastdream-prefetch", daemon=True)
    thread.start()
    if torch is not None:
        ready.wait()
        torch.set_num_threads(threads)  # the process-wide default that new threads start from, as it was
    try:
        while True:
            item = q.get()
            if item is done:
                return
            yield item
    finally:
        stop.set()
