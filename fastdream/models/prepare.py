"""Making a model ready and fast to dream with, whatever its architecture (docs/architecture.md).

:func:`prepare_for_dreaming` gets a graph of any module (``fastdream.models.capture``) and
rewrites it:

- the tapped layers stay modules (``call_module`` nodes, so hooks fire on them) under their own
  qualified names; a tapped module with submodules is itself prepared the same way;
- everything the tapped outputs do not need is dropped (docs/architecture.md, "Models": the truncation);
- eval mode is baked in: dropout and identities are removed, an eval BatchNorm right after a
  convolution whose output nothing else reads is folded into a new convolution (running
  statistics; exact up to float rounding);
- every in-place op of the module is first made out-of-place (readers after it get its result, so
  the module computes what it computed, but no tapped output is overwritten any more); then ReLU,
  ReLU6 and ``+=`` run in place wherever the value they overwrite is fresh (made by a convolution,
  BatchNorm, linear, pooling, addition …), read by nothing else and not tapped;
- 4-D inputs are turned to channels_last once, and the folded weights are made channels_last.

The result shares the module's parameters (folded weights and biases are the only new tensors) and
the module itself is never modified. Its forward returns the tapped outputs; use it through
:class:`fastdream.models.LayerTap`. The graph comes from the first of (the fallback chain):

1. ``torch.fx`` symbolic tracing, the forward's extra parameters at their defaults: one graph;
2. where that fails (Python branches on shapes …), tracing with the real input of each new shape
   (:class:`ShapeGraphs`: a graph per input shape, made at its first call);
3. where the forward branches on tensor values, or its graph cannot be rewritten soundly, no graph:
   a copy of the module runs its own forward on prepared submodules (each through 1 where it
   traces, else the same way in turn) and ``LayerTap`` stops it after the deepest layer; said once.

A module with hooks (they must run) is returned as it is, said once. Tracing runs the forward once
(on ``torch.fx`` proxies, or on the real input as far as the deepest layer), in eval mode: Python
side effects of a forward (appending to a list …) happen then, not at every call.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import operator
import threading
import warnings
import weakref
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Set

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .capture import BranchOnValues, concrete_graph, is_torch_layer, symbolic_graph


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients, and no in-place ReLUs (so any layer's output can be kept).

    For models fastdream built itself (it changes ``model`` in place).
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)) and m.inplace:
            m.inplace = False
    return model


# --- in-place activations whose backward reads the output ----------------------------------------


class _ReLU6Inplace(torch.autograd.Function):
    """ReLU6 in place whose backward reads the output: autograd's own ``hardtanh_`` keeps a copy
    of the input for its backward, which costs a full pass over every activation."""

    @staticmethod
    def forward(ctx, x):
        x.clamp_(0.0, 6.0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        # 0 < y < 6 exactly where 0 < x < 6: the output carries the mask.
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)


def relu6_(x: torch.Tensor) -> torch.Tensor:
    """``F.relu6(x)`` written into ``x``; its backward needs no copy of the input."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _ReLU6Inplace.apply(x)
    return x.clamp_(0.0, 6.0)


def channels_last(x):
    """A 4-D tensor in channels_last layout (no copy if it already is); anything else as it is."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


# --- what the graph rewriting knows about ops ----------------------------------------------------

_INPLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
# Ops whose output is a new tensor that their own backward does not read: overwriting it in place
# (once nothing else reads it) cannot disturb autograd.
_FRESH_MODULES = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.Linear, nn.GroupNorm, nn.LayerNorm,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
)
_FRESH_FUNCTIONS = {
    F.conv1d, F.conv2d, F.conv3d, torch.conv2d, F.linear, F.batch_norm, F.max_pool2d, F.avg_pool2d,
    F.adaptive_avg_pool2d, F.interpolate, torch.cat, torch.add, operator.add, operator.sub, torch.sub,
    operator.mul, torch.mul, operator.iadd,
}
_FRESH_METHODS = {"add", "sub", "mul", "add_"}
# Ops whose output may share memory with their input.
_VIEW_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.narrow, torch.transpose, torch.permute,
    torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.unbind, torch.select, torch.t,
    torch.movedim, torch.swapaxes, torch.detach,
}
_VIEW_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "transpose", "permute", "squeeze",
    "unsqueeze", "narrow", "expand", "expand_as", "t", "select", "chunk", "split", "unbind",
    "unflatten", "movedim", "swapaxes", "detach", "contiguous", "as_strided", "unfold", "diagonal",
    "__getitem__", "real", "imag", "type_as", "to", "float", "half", "bfloat16", "type",
}


class _NotPrepared(Exception):
    """The graph holds something the rewriting does not handle soundly: use the module eagerly."""


def _frozen_copy(module: nn.Module, tensors: Optional[Dict[str, torch.Tensor]] = None,
                 keep_inplace: bool = False) -> nn.Module:
    """A new module object sharing ``module``'s tensors (``tensors`` replace some of its
    parameters), with no hooks, in eval mode, not in place unless ``keep_inplace`` (in a graph, the
    graph says where overwriting is safe); ``module`` is left as it was."""
    new = copy.copy(module)
    for key, value in module.__dict__.items():
        if isinstance(value, dict):
            new.__dict__[key] = type(value)() if "hook" in key else type(value)(value)
        elif isinstance(value, set):
            new.__dict__[key] = set(value)
    for name, value in (tensors or {}).items():
        new._parameters[name] = nn.Parameter(value, requires_grad=False)
    new.training = False
    if getattr(new, "inplace", None) is True and not keep_inplace:
        new.inplace = False
    return new


# --- the entry point: the fallback chain ----------------------------------------------------------


def prepare_for_dreaming(module: nn.Module, layers: Sequence[str]) -> nn.Module:
    """``module`` ready to dream at ``layers``: traced, truncated, BatchNorm folded, activations in
    place where no kept output is affected, channels_last (see the module docstring).

    Args:
        module: any ``nn.Module`` taking Tensor[B, C, H, W]; never modified.
        layers: qualified ``named_modules()`` names (already resolved) whose outputs are kept.

    Returns a module on which every name of ``layers`` is a submodule (for ``LayerTap``'s hooks),
    the first of: the fx graph of the module; a :class:`ShapeGraphs` (one graph per input shape)
    where fx cannot trace it; the eager fallback (its own forward on prepared submodules, said
    once) where no graph can be had; ``module`` itself where it has hooks (said once).
    """
    taps = list(dict.fromkeys(layers))
    if _has_hooks(module):  # the user's hooks are code that must run, on the module's own calls
        notice(module, "runs as it is, eagerly (stopped after the deepest dreamed layer)",
               "it has hooks, which must run on its own calls")
        return module
    with _eval_mode(module):  # trace the eval branches (GoogLeNet's aux heads, dropout …)
        try:
            graph = symbolic_graph(module, set(taps), at_defaults=True)
        except Exception:  # noqa: BLE001 - Python control flow fx cannot follow
            return ShapeGraphs(module, taps)
        try:
            return _prepare(module, taps, top=True, graph=graph)
        except Exception as exc:  # noqa: BLE001 - a graph the rewriting does not handle soundly
            return _eager_fallback(module, taps, {}, exc)


class ShapeGraphs(nn.Module):
    """A module whose forward fx cannot trace, prepared once per input shape: Tensor[B, C, H, W] →
    the tapped outputs, like the fx graph (``capture.concrete_graph`` traces it on the first input
    of each shape, following its Python branches).

    The tapped modules are its submodules under their own names, shared by every shape's graph,
    so ``LayerTap``'s hooks fire whichever graph runs. Graphs are kept for the last ``MAX_SHAPES``
    input shapes (a dream uses one per octave, or per tile size). Where the forward branches on
    tensor values, the first call says so once and the eager fallback runs from then on.
    ``parameters()`` and ``buffers()`` are the module's own, which every graph shares.
    """

    # A tiled dream's windows come in many shapes (30 for 448² in 128-px tiles, 2 octaves × 6): with
    # 16 kept, each call traced most of them again (1.43× the built-in's time; 1.0× with 64+).
    # A graph costs little memory: it shares the module's tensors and the folded convolutions.
    MAX_SHAPES = 128

    def __init__(self, module: nn.Module, taps: List[str]):
        super().__init__()
        # Plain attributes, not submodules: only the taps are named (and hooked) here.
        # The module weakly: a memo of this prepared module (fastdream.dream_cache) must not keep it alive.
        self.__dict__.update(_source=weakref.ref(module), eager=None, graphs=OrderedDict(), cache={})
        self.taps = taps
        for tap in _outermost(taps):
            _set_submodule(self, tap, _tap_module(module, tap, taps, self.cache, "", structured=True))

    @property
    def source(self) -> nn.Module:
        module = self._source()
        if module is None:  # only a memo held this; nothing can call it any more
            raise ReferenceError("the module these graphs were prepared from is gone")
        return module

    def parameters(self, recurse: bool = True):
        return self.source.parameters(recurse)

    def buffers(self, recurse: bool = True):
        return self.source.buffers(recurse)

    def forward(self, x: torch.Tensor):
        if self.eager is None:
            key = (tuple(x.shape), x.dtype, x.device)
            graph = self.graphs.get(key)
            if graph is None:
                graph = self._capture(x, key)
            else:
                self.graphs.move_to_end(key)
            if graph is not None:
                return graph(x)
        return self.eager(x)

    def _capture(self, x: torch.Tensor, key) -> Optional[nn.Module]:
        with _eval_mode(self.source):
            try:
                graph = concrete_graph(self.source, set(self.taps), x)
                prepared = _prepare(self.source, self.taps, top=True, graph=graph, cache=self.cache)
            except Exception as exc:  # noqa: BLE001 - no graph for this forward: eager from now on
                self.eager = _eager_fallback(self.source, self.taps, self.cache, exc)
                return None
        self.graphs[key] = prepared
        while len(self.graphs) > self.MAX_SHAPES:
            self.graphs.popitem(last=False)
        return prepared


def _eager_fallback(module: nn.Module, taps: List[str], cache: dict, exc: Exception) -> nn.Module:
    notice(module, "runs its own forward eagerly (stopped after the deepest dreamed layer, its "
           "submodules prepared where they trace)", _reason(exc))
    new = _structured(module, taps, cache, own_graph=False)
    if any(isinstance(m, nn.Conv2d) for m in new.modules()):  # as a graph's first node does
        new.forward = _ChannelsLastFirst(new.forward)
    return new


class _ChannelsLastFirst:
    """A forward given its 4-D input in channels_last (1.3× faster on the CPU for
    EfficientNet-Lite0's own forward); a forward whose ``view`` needs the default layout gets that
    from its first failure on."""

    def __init__(self, forward):
        self.forward, self.enabled = forward, True

    def __call__(self, x, *args, **kwargs):
        if self.enabled:
            try:
                return self.forward(channels_last(x), *args, **kwargs)
            except RuntimeError as exc:
                if "view" not in str(exc):
                    raise
                self.enabled = False
        return self.forward(x, *args, **kwargs)


def _structured(module: nn.Module, taps: List[str], cache: dict, prefix: str = "", own_graph: bool = True) -> nn.Module:
    """A hook-free eval copy of ``module`` (named ``prefix`` in the dreamed module; ``taps``
    relative to it) keeping its structure, for a forward of the user's own that calls, iterates or
    reaches into its children: each child made the same way in turn (a tapped one once per
    ``cache``, a torch.nn layer a hook-free copy, in place as it was: the forward may count on it),
    and its forward the fx graph of its own (BatchNorm folded, in place, whole output kept) where
    ``own_graph`` and fx traces it, else its own code. ``LayerTap`` stops it after the deepest tap."""
    new = _frozen_copy(module, keep_inplace=True)
    for name, child in module.named_children():
        inner = [t[len(name) + 1:] for t in taps if t.startswith(name + ".")]
        if name in taps:
            new._modules[name] = _tap_module(module, name, taps, cache, prefix, structured=True)
        elif is_torch_layer(child) and not inner:
            new._modules[name] = _frozen_copy(child, keep_inplace=True)
        else:
            new._modules[name] = _structured(child, inner, cache, prefix + name + ".")
    if own_graph:
        try:
            graph = _prepare(module, taps, top=False, cache=cache, prefix=prefix)
        except Exception:  # noqa: BLE001 - its own code, on its prepared children
            return new
        new.forward = graph.forward  # the children stay, for forwards that reach into them
    return new


def _tap_module(module: nn.Module, target: str, taps: List[str], cache: dict, prefix: str,
                structured: bool) -> nn.Module:
    """The prepared tapped submodule ``target`` of ``module`` (``taps`` relative to ``module``),
    made once per ``cache``, so every graph and fallback of one dream calls (and ``LayerTap``
    hooks) the same; ``structured``: keeping its structure (``_structured``), for code of the
    user's that may reach into it, else its graph alone where it traces."""
    key = ("tap", prefix + target)
    if key not in cache:
        sub = module.get_submodule(target)
        inner = [t[len(target) + 1:] for t in taps if t.startswith(target + ".")]
        if is_torch_layer(sub) and not inner:
            cache[key] = _frozen_copy(sub)
        elif structured:
            cache[key] = _structured(sub, inner, cache, prefix + target + ".")
        else:
            try:
                cache[key] = _prepare(sub, inner, top=False, prefix=prefix + target + ".")
            except Exception:  # noqa: BLE001 - its own code, on its prepared children
                cache[key] = _structured(sub, inner, cache, prefix + target + ".", own_graph=False)
    return cache[key]


def _outermost(taps: List[str]) -> List[str]:
    """The taps not inside another tapped module (those are that module's business)."""
    return [t for t in taps if not any(t.startswith(o + ".") for o in taps)]


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """``root.get_submodule(path)`` becomes ``module``, with plain ``nn.Module`` holders between."""
    *parents, name = path.split(".")
    for part in parents:
        if part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    root.add_module(name, module)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """``module`` and its submodules in eval mode for the block; their own flags come back."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


_NOTICED: "weakref.WeakKeyDictionary[type, Set[str]]" = weakref.WeakKeyDictionary()
_NOTICED_LOCK = threading.Lock()


def notice(module: nn.Module, how: str, why: str) -> None:
    """Say once per module class and reason (a ``RuntimeWarning``) that ``module`` runs unprepared."""
    with _NOTICED_LOCK:
        seen = _NOTICED.setdefault(type(module), set())
        if why in seen:
            return
        seen.add(why)
    warnings.warn(f"fastdream: {type(module).__name__} {how}: {why}", RuntimeWarning, stacklevel=2)


def _reason(exc: Exception) -> str:
    """Why a module gets no graph, in a few words (the first line of the error)."""
    if isinstance(exc, BranchOnValues):
        return str(exc)
    text = (str(exc).strip().splitlines() or [""])[0][:160]
    if isinstance(exc, _NotPrepared):
        return f"its graph cannot be rewritten soundly ({text})"
    return f"torch.fx cannot trace it ({type(exc).__name__}: {text})"


def _has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule has hooks (a graph of hook-free copies would skip them)."""
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(m, name, None) for m in module.modules() for name in names)


def _prepare(module: nn.Module, taps: List[str], top: bool, graph: Optional[fx.Graph] = None,
             cache: Optional[dict] = None, prefix: str = "") -> nn.Module:
    """The rewritten graph of ``module`` (``graph``: its trace, else fx's). ``top``: the dreamed
    module itself (the graph returns the taps; else it returns the module's own output and must not
    overwrite its inputs). ``cache``: modules shared with other graphs of the same dream, keyed by
    their names in it (``prefix``: this module's)."""
    graph = symbolic_graph(module, set(taps), at_defaults=False) if graph is None else graph
    shared = cache is not None  # its tapped modules are other graphs' or code's too
    cache = {} if cache is None else cache
    modules = dict(module.named_modules())
    calls = _module_calls(graph)
    outer = _outermost(taps)
    if any(t not in calls for t in outer):
        raise _NotPrepared("a tapped layer is not called by the forward")
    tapped = {node for t in outer for node in calls[t]}
    if not top and any(_mutates(n, modules) and n.args[0].op in ("placeholder", "get_attr") for n in graph.nodes):
        raise _NotPrepared("the forward overwrites its input")  # its caller would see that

    _functionalize(graph, modules, tapped)
    if top:  # the forward returns the taps (the first output of each): the rest is dead code
        output = next(n for n in graph.nodes if n.op == "output")
        output.args = (tuple(calls[t][0] for t in outer),)
    _eliminate_dead_code(graph)
    if top:  # the forward's extra parameters, fixed at their defaults, are no longer read
        for node in [n for n in graph.nodes if n.op == "placeholder"][1:]:
            if not node.users:
                graph.erase_node(node)
    _bypass_identities(graph, modules, tapped)

    root: Dict[str, object] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            root[node.target] = _attribute(module, node.target)
        elif node.op == "call_module" and node.target not in root:
            if node.target in outer:
                root[node.target] = _tap_module(module, node.target, taps, cache, prefix, structured=shared)
            else:  # hook-free and in eval mode, whatever the module's own flags
                key = ("copy", prefix + node.target)
                root[node.target] = cache.get(key) or cache.setdefault(key, _frozen_copy(modules[node.target]))
    _fold_batchnorm(graph, root, _module_calls(graph), tapped, cache, prefix, fold_tapped=not shared)
    _inplace_where_safe(graph, root, tapped)
    convs = (m for r in root.values() if isinstance(r, nn.Module) for m in r.modules())
    if top and any(isinstance(m, nn.Conv2d) for m in convs):
        placeholder = next((n for n in graph.nodes if n.op == "placeholder"), None)
        if placeholder is not None:
            with graph.inserting_after(placeholder):
                converted = graph.call_function(channels_last, (placeholder,))
            placeholder.replace_all_uses_with(converted, delete_user_cb=lambda user: user is not converted)
    graph.lint()
    name = f"DreamReady{type(module).__name__}" if top else type(module).__name__
    return fx.GraphModule(root, graph, class_name=name)


def _module_calls(graph: fx.Graph) -> Dict[str, List[fx.Node]]:
    """The ``call_module`` nodes of each module name, in graph order."""
    calls: Dict[str, List[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    return calls


def _attribute(module: nn.Module, target: str):
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


# --- passes ---------------------------------------------------------------------------------------


def _mutates(node: fx.Node, modules: Dict[str, nn.Module]) -> bool:
    """Whether ``node`` overwrites its first argument."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_function":
        target = node.target
        if target in _INPLACE_OPERATORS or target is operator.setitem:
            return True
        if _inplace_flag(node) is True:
            return True
        name = getattr(target, "__name__", "")
        return name.endswith("_") and not name.endswith("__")
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_module":
        return getattr(modules.get(node.target), "inplace", False) is True
    return False


def _inplace_flag(node: fx.Node) -> Optional[bool]:
    """The ``inplace=`` argument of a torch.nn.functional call, ``None`` if it has none."""
    target = node.target
    if getattr(target, "__module__", None) != "torch.nn.functional":
        return None
    try:
        bound = inspect.signature(target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return None
    if "inplace" not in inspect.signature(target).parameters:
        return None
    return bool(bound.arguments.get("inplace", False))


def _functionalize(graph: fx.Graph, modules: Dict[str, nn.Module], tapped: Set[fx.Node]) -> None:
    """Make every in-place op out-of-place; nodes reading the overwritten value after it read its
    result instead, so the module computes what it computed and no kept output is overwritten.
    ReLU and ReLU6, in every spelling, become ``torch.relu`` / ``F.relu6`` calls."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        _canonical_activation(node, modules, tapped, order)
        if not _mutates(node, modules):
            continue
        if node.target is operator.setitem:
            raise _NotPrepared("item assignment")
        value = node.args[0]
        _read_result_after(node, value, order)
        if node.op == "call_module":
            continue  # an inplace=False copy replaces the module (see _prepare)
        if node.op == "call_function" and node.target in _INPLACE_OPERATORS:
            node.meta["fd_inplace"] = node.target
            node.target = _INPLACE_OPERATORS[node.target]
        elif node.op == "call_function" and _inplace_flag(node):
            node.kwargs = {**_bound_arguments(node), "inplace": False}
            node.args = ()
        elif node.op == "call_function" and callable(getattr(torch, node.target.__name__[:-1], None)):
            node.target = getattr(torch, node.target.__name__[:-1])
        elif node.op == "call_method" and callable(getattr(torch.Tensor, node.target[:-1], None)):
            node.meta["fd_inplace"] = node.target if node.target == "add_" else None
            node.target = node.target[:-1]
        else:  # no out-of-place twin: overwrite a copy
            with graph.inserting_before(node):
                clone = graph.call_method("clone", (value,))
            node.args = (clone,) + tuple(node.args[1:])


def _read_result_after(node: fx.Node, value: fx.Node, order: Dict[fx.Node, int]) -> None:
    """``node`` overwrites ``value``: the nodes reading ``value`` after it read ``node`` instead."""
    if _is_view(value) or any(_is_view(u) for u in value.users if u is not node):
        raise _NotPrepared("an in-place op on a view: other views would see the change")
    for user in list(value.users):
        if user is not node and order.get(user, -1) > order[node]:
            user.replace_input_with(value, node)


def _bound_arguments(node: fx.Node) -> dict:
    bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    return dict(bound.arguments)


def _canonical_activation(node: fx.Node, modules, tapped: Set[fx.Node], order: Dict[fx.Node, int]) -> None:
    """Untapped ReLU / ReLU6 (module, functional, method, in place or not) → out-of-place call."""
    kind = None
    if node.op == "call_module" and node not in tapped:
        module = modules.get(node.target)
        kind = {nn.ReLU: "relu", nn.ReLU6: "relu6"}.get(type(module))
    elif node.op == "call_function" and node.target in (F.relu, torch.relu, torch.relu_):
        kind = "relu"
    elif node.op == "call_function" and node.target is F.relu6:
        kind = "relu6"
    elif node.op == "call_method" and node.target in ("relu", "relu_"):
        kind = "relu"
    if kind is None or not node.args or not isinstance(node.args[0], fx.Node):
        return
    value = node.args[0]
    was_inplace = _mutates(node, modules)
    if was_inplace:
        _read_result_after(node, value, order)
    node.op = "call_function"
    node.target = torch.relu if kind == "relu" else F.relu6
    node.args, node.kwargs = (value,), {}
    node.meta["fd_inplace"] = torch.relu_ if kind == "relu" else relu6_


def _is_view(node) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_function":
        return node.target in _VIEW_FUNCTIONS
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    return False


def _eliminate_dead_code(graph: fx.Graph) -> None:
    """Remove every node the output does not depend on (in-place ops were made explicit before)."""
    live: Set[fx.Node] = set()
    stack = [n for n in graph.nodes if n.op in ("output", "placeholder")]
    while stack:
        node = stack.pop()
        if node in live:
            continue
        live.add(node)
        stack.extend(node.all_input_nodes)
    for node in reversed(list(graph.nodes)):
        if node not in live:
            graph.erase_node(node)


def _bypass_identities(graph: fx.Graph, modules, tapped: Set[fx.Node]) -> None:
    """Untapped ``nn.Identity`` and dropout (eval: the identity) are dropped from the graph."""
    dropouts = (nn.Identity, nn.modules.dropout._DropoutNd)
    functional = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
    for node in list(graph.nodes):
        identity = False
        if node.op == "call_module" and node not in tapped:
            identity = isinstance(modules.get(node.target), dropouts)
        elif node.op == "call_function" and node.target in functional:
            arguments = _bound_arguments(node)
            identity = arguments.get("training", True) is False and arguments.get("inplace", False) is False
        if identity and node.args and isinstance(node.args[0], fx.Node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


@torch.no_grad()
def _folded_conv(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A new convolution computing ``bn(conv(x))`` with ``bn``'s running statistics."""
    # In the weights' own dtype, as the unfolded BatchNorm computes: folding in float64 was no
    # closer in float32 and flipped a few ReLU6 masks of a one-step dream (1e-3 on some pixels).
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    scale = bn.weight * inv_std if bn.affine else inv_std
    shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
    weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    if weight.dim() == 4:
        weight = weight.contiguous(memory_format=torch.channels_last)
    return _frozen_copy(conv, {"weight": weight, "bias": bias})


def _on_cpu_float32(module: nn.Module):
    """``module``'s forward run with CPU float32 copies of its floating-point tensors; ``module``
    and its tensors are left as they are (``functional_call`` on a shallow copy)."""
    state = {name: t.detach().to("cpu", torch.float32) if t.is_floating_point() else t.detach().cpu()
             for name, t in [*module.named_parameters(), *module.named_buffers()]}
    copy_ = _frozen_copy(module)
    return lambda x: torch.func.functional_call(copy_, state, (x,))


def _folding_is_exact(conv: nn.Module, bn: nn.Module, folded: nn.Module) -> bool:
    """For convolution subclasses (their forward is theirs): compare on a small random input.

    On the CPU in float32: cuDNN's default TF32 convolutions miss the bound on most folds of
    EfficientNet-Lite0 (simulated: 32 of 47), which would leave a GPU model mostly unfolded and
    different from the CPU one."""
    if type(conv) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and conv.padding_mode == "zeros":
        return True
    spatial = [(k - 1) * d + 1 + 2 * s for k, d, s in zip(conv.kernel_size, conv.dilation, conv.stride)]
    x = torch.randn(1, conv.in_channels, *spatial, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _on_cpu_float32(bn)(_on_cpu_float32(conv)(x))
        got = _on_cpu_float32(folded)(x)
    if got.shape != expected.shape:
        return False
    return bool((got - expected).abs().max() <= 1e-4 * (1.0 + expected.abs().max()))


def _fold_batchnorm(graph: fx.Graph, root: Dict[str, object], calls, tapped: Set[fx.Node], cache: dict,
                    prefix: str, fold_tapped: bool) -> None:
    """Fold each eval BatchNorm that follows a convolution nothing else reads into that convolution.

    The convolution (called once) is replaced by a folded copy (made once per ``cache``); the
    BatchNorm node is removed, or, when tapped and ``fold_tapped`` (no other graph shares the tapped
    module), its module becomes ``nn.Identity`` so its hooks still see the same output.
    """
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn, conv_node = root[node.target], node.args[0]
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_var is None:
            continue
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module"):
            continue
        conv = root[conv_node.target]
        if not isinstance(conv, nn.modules.conv._ConvNd) or conv.transposed or conv.out_channels != bn.num_features:
            continue
        if conv_node in tapped or len(conv_node.users) != 1 or len(calls[conv_node.target]) != 1:
            continue
        if node in tapped and (len(calls[node.target]) != 1 or not fold_tapped):
            continue
        key = ("fold", prefix + conv_node.target, prefix + node.target)
        if key not in cache:
            folded = _folded_conv(conv, bn)
            cache[key] = folded if _folding_is_exact(conv, bn, folded) else None
        folded = cache[key]
        if folded is None:
            continue
        root[conv_node.target] = folded
        if node in tapped:
            root[node.target] = nn.Identity()
        else:
            node.replace_all_uses_with(conv_node)
            graph.erase_node(node)


def _is_fresh(node, root: Dict[str, object], tapped: Set[fx.Node]) -> bool:
    """A new tensor that its own backward does not read, and that nothing but one op reads."""
    if not isinstance(node, fx.Node) or node in tapped or len(node.users) != 1:
        return False
    if node.op == "call_module":
        return isinstance(root.get(node.target), _FRESH_MODULES)
    if node.op == "call_function":
        return node.target in _FRESH_FUNCTIONS
    if node.op == "call_method":
        return node.target in _FRESH_METHODS
    return False


def _inplace_where_safe(graph: fx.Graph, root: Dict[str, object], tapped: Set[fx.Node]) -> None:
    """ReLU, ReLU6 and the module's own ``+=`` overwrite their input where it is fresh."""
    for node in graph.nodes:
        inplace = node.meta.get("fd_inplace")
        if inplace is None or not _is_fresh(node.args[0], root, tapped):
            continue
        node.target = inplace
