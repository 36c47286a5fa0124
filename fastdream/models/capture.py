"""The graph of a module's forward, for ``fastdream.models.prepare`` to rewrite (docs/architecture.md,
"Models").

Two tracers, both ``torch.fx`` tracers that keep torch.nn layers and the tapped modules as
``call_module`` leaves, so the graphs they give are the same kind of graph:

- :func:`symbolic_graph`: ``torch.fx`` symbolic tracing, one graph for every input shape. The
  forward's parameters after the input are fixed to their defaults (``forward(x, upto=None,
  *, features=True)``): a dream calls ``forward(x)`` alone, so the defaults are what every call uses.
- :func:`concrete_graph`: tracing with a real input, for forwards that branch on their input's
  shape (``if x.shape[-1] < 8: break``, TF "SAME" padding computed with ``math.ceil`` …). Every
  node is also computed on the real tensors, so shapes, ``len`` and iteration are concrete and the
  Python branches are followed; the graph holds for inputs of that shape only. A branch on tensor
  *values* (``if y.mean() > 0``) raises :class:`BranchOnValues`: no single graph computes it.

Why not ``torch.export`` or dynamo: both give ATen-level or inlined graphs in which the tapped layers
are no longer modules (their hooks are how the taps are read), both specialise to the traced shapes
too, and neither captures a branch on tensor values as one graph (dynamo breaks the graph there,
export needs ``torch.cond`` written into the module).
"""
from __future__ import annotations

import inspect
import os
import warnings
from typing import Dict, Iterator, Set

import torch
import torch.fx as fx
import torch.nn as nn

_CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


class BranchOnValues(Exception):
    """The forward's Python control flow reads a tensor's values; ``where`` is the line doing it."""

    def __init__(self, where: str):
        super().__init__(f"its forward branches on tensor values ({where})")
        self.where = where


def is_torch_layer(module: nn.Module) -> bool:
    """A torch.nn layer or a subclass of one (a convolution with its own padding …): a leaf."""
    if isinstance(module, fx.GraphModule):
        return False
    for cls in type(module).__mro__:
        if cls in _CONTAINERS or cls is object:
            continue
        if cls.__module__.startswith(("torch.nn.", "torch.ao.nn.")):
            return True
    return False


class _Tracer(fx.Tracer):
    """Traces through containers and user modules; torch.nn layers and tapped modules are leaves."""

    def __init__(self, taps: Set[str]):
        super().__init__()
        self.taps = taps

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.taps:
            return True
        if any(t.startswith(qualname + ".") for t in self.taps):
            return False  # a tapped layer is inside: its node must exist
        return is_torch_layer(m)


def default_arguments(module: nn.Module) -> Dict[str, object]:
    """The defaults of ``module.forward``'s parameters after the first (the input): what a call
    ``module(x)`` uses. A parameter without a default, ``*args`` or ``**kwargs`` is left out."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters[1:]
            if p.default is not inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def symbolic_graph(module: nn.Module, taps: Set[str], at_defaults: bool) -> fx.Graph:
    """``torch.fx``'s graph of ``module``; ``at_defaults``: its forward's extra parameters fixed
    at their defaults (for the dreamed module, which is called with the input alone)."""
    if not at_defaults:
        return _Tracer(taps).trace(module)
    with warnings.catch_warnings():  # fx's "was not able to add assertion" for specialised defaults
        warnings.simplefilter("ignore")
        return _plain_inputs(_Tracer(taps).trace(module, concrete_args=default_arguments(module) or None))


def _plain_inputs(graph: fx.Graph) -> fx.Graph:
    """``graph`` with fx's code generation for plain arguments: defaults fixed as tuples or dicts
    make fx flatten them with a pytree code generator whose code does not compile once the
    graph returns other outputs."""
    graph.set_codegen(fx.graph.CodeGen())
    return graph


def concrete_graph(module: nn.Module, taps: Set[str], example: torch.Tensor) -> fx.Graph:
    """The graph of ``module``'s forward on ``example`` (Tensor[B, C, H, W]) up to the last of the
    tapped modules' calls, Python branches followed as that input takes them; valid for inputs of
    ``example``'s shape, dtype and device. Runs the forward that far once (without gradients) on
    a copy of ``example``; its output node returns ``None`` when the trace stopped at the taps.
    Raises :class:`BranchOnValues` where the forward branches on tensor values before that."""
    tracer = _ConcreteTracer(taps, example.detach().clone())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _plain_inputs(tracer.trace(module, concrete_args=default_arguments(module) or None))
        except _TapsReached:
            tracer.graph.output(None)
            return _plain_inputs(tracer.graph)


# --- tracing with real values ---------------------------------------------------------------------

# What a tensor says about its shape, type and place: concrete while tracing with a real input (the
# graph is made for that shape), so Python code may compute and branch on them.
_METADATA = frozenset({
    "shape", "ndim", "dtype", "device", "is_cuda", "layout", "size", "dim", "numel", "nelement",
    "get_device", "is_floating_point", "is_complex", "element_size", "is_contiguous",
})


class _ConcreteProxy(fx.Proxy):
    """A proxy whose node also has a real value (``tracer.values``): its metadata are concrete."""

    def __getattr__(self, name: str):
        if name in _METADATA:
            value = self.tracer.values.get(self.node)
            if isinstance(value, torch.Tensor):
                return getattr(value, name)
        return super().__getattr__(name)

    def __len__(self) -> int:  # a tensor's first dimension, or the length of a tuple output
        return len(self.tracer.values[self.node])


class _TapsReached(Exception):
    """Every tapped module has been called: the rest of the forward is not needed."""


class _ConcreteTracer(_Tracer):
    """:class:`_Tracer` that runs each node on real tensors as it records it (``values``), and
    stops once every tapped module has been called."""

    def __init__(self, taps: Set[str], example: torch.Tensor):
        super().__init__(taps)
        self.example = example
        self.values: Dict[fx.Node, object] = {}
        self._inputs = 0
        self._running = False
        self._waiting = {t for t in taps if not any(t.startswith(o + ".") for o in taps)}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        value = self._run(kind, target, args, kwargs)
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        self.values[proxy.node] = value
        if kind == "call_module" and target in self._waiting:
            self._waiting.discard(target)
            if not self._waiting:
                raise _TapsReached
        return proxy

    # While a node runs on real tensors, the module calls and parameter reads it makes are real
    # ones: fx patches ``nn.Module.__call__`` and ``__getattr__`` for the whole trace.
    def call_module(self, m, forward, args, kwargs):
        return forward(*args, **kwargs) if self._running else super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self._running else super().getattr(attr, attr_val, parameter_proxy_cache)

    def _value(self, arg):
        return self.values[arg.node] if isinstance(arg, fx.Proxy) else arg

    def _run(self, kind: str, target, args, kwargs):
        args = fx.node.map_aggregate(args, self._value)
        kwargs = fx.node.map_aggregate(kwargs, self._value)
        self._running = True
        try:
            return self._run_on(kind, target, args, kwargs)
        finally:
            self._running = False

    def _run_on(self, kind: str, target, args, kwargs):
        if kind == "placeholder":
            self._inputs += 1
            if self._inputs == 1:
                return self.example
            return args[0] if args else None  # a parameter fixed to its default
        if kind == "get_attr":
            value = self.root
            for part in target.split("."):
                value = getattr(value, part)
            return value
        if kind == "call_module":
            return self.root.get_submodule(target)(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        return target(*args, **kwargs)

    def to_bool(self, obj: fx.Proxy) -> bool:
        raise BranchOnValues(_user_line())

    def iter(self, obj: fx.Proxy) -> Iterator:
        return iter([obj[i] for i in range(len(self.values[obj.node]))])


def _user_line() -> str:
    """``file.py:line`` of the innermost frame outside torch and this file: the module's code."""
    here = os.path.abspath(__file__)
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    frame = inspect.currentframe()
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if filename != here and not filename.startswith(torch_dir):
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return "unknown line"
