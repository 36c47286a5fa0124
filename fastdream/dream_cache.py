"""What ``fastdream.dream()`` keeps between calls, so that the one-line API is as fast as a ``Dreamer``
built once (docs/architecture.md, "Data flow").

    >>> DREAMERS.get(options)          # the Dreamer of these options: built on the first call only

* :class:`DreamerCache`: the last few ``Dreamer`` objects of built-in models, least recently used
  first out, keyed by the options that shape them (:func:`options_key`). Thread-safe; two threads
  asking for one key get one Dreamer (calls on it then run one at a time, as on any Dreamer).
* :data:`PREPARED_GRAPHS`: for a module of yours, its prepared graph per tapped layers, keyed weakly
  by the module: a Dreamer of your module would keep the module alive, so none is cached; the graph
  (which shares the module's parameters but not the module object) goes when the module goes.
  Every Dreamer of that module uses the one graph, so a call holds its :func:`call_lock`.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional, Tuple

import torch
import torch.nn as nn

from .options import Options

CACHE_SIZE = 4
"""Dreamers ``dream()`` keeps (each holds its model: a few MB to a few hundred MB)."""


def _key_of(value) -> Hashable:
    """A hashable stand-in for one canonical option value. Objects (a guide tensor, a custom
    objective) count by identity, which the cached Dreamer keeps unique by holding them; a tensor
    also by its version counter, so an in-place change is a new key."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return ("dict",) + tuple((k, _key_of(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return ("seq",) + tuple(_key_of(v) for v in value)
    if isinstance(value, torch.device):
        return ("device", str(value))
    if isinstance(value, torch.Tensor):
        # An inference tensor has no version counter, and cannot be changed in place outside
        # inference mode anyway.
        return ("tensor", id(value), None if value.is_inference() else value._version)
    return ("object", id(value))


def options_key(options: Options) -> Tuple[Hashable, ...]:
    """The cache key of canonical options: every field, in order."""
    return tuple((name, _key_of(value)) for name, value in options.as_dict().items())


class DreamerCache:
    """The last ``size`` Dreamers of built-in models by :func:`options_key`; ``build(options)`` makes
    a missing one. ``hits`` and ``misses`` count the lookups."""

    def __init__(self, build: Callable[[Options], Any], size: int = CACHE_SIZE):
        self._build = build
        self._size = size
        self._entries: "OrderedDict[Hashable, Any]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, options: Options):
        key = options_key(options)
        with self._lock:  # a build runs under it too: one Dreamer per key, even when threads race
            dreamer = self._entries.get(key)
            if dreamer is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return dreamer
            self.misses += 1
            dreamer = self._build(options)
            self._entries[key] = dreamer
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
            return dreamer

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


class PreparedGraphs:
    """``prepare(module, tapped)`` memoised per module (weakly: the entry dies with the module) and per
    tapped layers and parameter state (addresses and version counters: a module trained in place,
    or moved, is prepared again). A module that does not trace is not memoised (its "graph" is the
    module itself, which the entry would keep alive)."""

    def __init__(self):
        self._per_module: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @staticmethod
    def _state(module: nn.Module) -> Tuple[Hashable, ...]:
        tensors = list(module.parameters()) + list(module.buffers())
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def get(self, module: nn.Module, tapped, prepare: Callable[[nn.Module, list], nn.Module]) -> nn.Module:
        key = (tuple(tapped), self._state(module))
        with self._lock:
            graph: Optional[nn.Module] = self._per_module.get(module, {}).get(key)
            if graph is None:
                graph = prepare(module, list(tapped))
                if graph is not module:
                    self._per_module[module] = {key: graph}  # the latest state only
            return graph

    def __len__(self) -> int:
        return len(self._per_module)


PREPARED_GRAPHS = PreparedGraphs()

_CALL_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_CALL_LOCKS_LOCK = threading.Lock()


def call_lock(model: nn.Module) -> threading.Lock:
    """The lock a call holds while it runs the prepared ``model``: Dreamers of one module of yours
    share its prepared graph, and a call's ``LayerTap`` hooks on the shared tapped layers must not
    fire in another thread's forward."""
    with _CALL_LOCKS_LOCK:
        lock = _CALL_LOCKS.get(model)
        if lock is None:
            lock = _CALL_LOCKS[model] = threading.Lock()
        return lock
