"""Reading an iterable ahead on a worker thread (decode the next images while a batch dreams)."""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator


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
        iterator = iter(items)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - handed over in the item's place
                item = exc
            if not put(item):
                return
        put(done)

    thread = threading.Thread(target=work, name="fastdream-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            yield item
    finally:
        stop.set()
