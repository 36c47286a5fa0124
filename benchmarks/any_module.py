"""Users' own modules, written the ways users write them, vs the built-in model vs the eager loop.

Each case is a network fastdream also has built in, written as a user would, in a way that
``torch.fx`` alone cannot trace or that needs its forward's keyword arguments fixed:

- ``hostile-efficientnet``: EfficientNet-Lite0 (the packaged weights) with ``forward(x, upto=None)``,
  a check of the input's rank and a loop over its blocks that can stop early: a graph per input
  shape (``ShapeGraphs``).
- ``guarded-efficientnet``: the same with a guard on tensor values in its forward
  (``if x.abs().amax() > 1e4``): no graph; its own forward runs on its prepared blocks.
- ``loop-resnet50``: torchvision's ResNet-50 modules (random weights) with a Python loop over its
  stages that checks the feature size after each: a graph per input shape.
- ``kwargs-dict-googlenet``: torchvision's GoogLeNet modules with ``forward(x, *, outputs=(...),
  transform_input=True)`` returning a dict of features: fx with the defaults fixed.

Contenders, interleaved in one run (``repeats`` times each after a warm-up, medians and best
runs): ``eager``, the seed algorithm in plain eager float32 PyTorch (``fastdream._reference``) on the
user's module as it is (eval mode), stopped after the layer by ``LayerTap`` (the way peers write
it); ``user``, ``fastdream.Dreamer(module, layer, normalize=...)``; ``builtin``,
``fastdream.Dreamer("<name>", layer)``; ``floor``, the built-in's own prepared forward + backward to
the input at the same octave sizes and iterations, nothing else. Ratios: ``speedup = eager / user``
(goal >= 1.6), ``user_vs_builtin = user / builtin`` (goal <= 1.1), ``user_vs_floor``. All fp32.

    python -m benchmarks.any_module                   # 256², 4 octaves × 10, 2 threads; JSON to benchmarks/results/
    python -m benchmarks.any_module --quick           # 128², 1 octave × 2 iterations, 1 repeat
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fastdream
from fastdream._reference import dream_reference
from fastdream.models import LayerTap, get_spec
from fastdream.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0_weights_path
from fastdream.models.prepare import ShapeGraphs
from fastdream.objectives import layer_terms, weighted_sum
from fastdream.octaves import octave_sizes, shift_table

from .e2e import _commit, _sync, device_name
from .results_io import write_results

# --- the users' modules ----------------------------------------------------------------------------


class HostileEfficientNet(EfficientNetLite0):
    """EfficientNet-Lite0 with ``forward(x, upto=None)``: a check of the input's rank and a loop
    over its blocks (a list) that can stop early."""

    def __init__(self):
        super().__init__()
        self._blocks = nn.ModuleList(self._blocks)

    def forward(self, x, upto=None):
        if x.dim() != 4:
            raise ValueError("expected a batch of images")
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if upto is not None and i == upto:
                return x
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


class GuardedEfficientNet(HostileEfficientNet):
    """The same with a guard on tensor values: no graph holds it."""

    def forward(self, x, upto=None):
        if x.abs().amax() > 1e4:
            raise ValueError("input out of range")
        return super().forward(x, upto)


class LoopResNet(nn.Module):
    """A ResNet as a stem and a Python loop over stages that checks the feature size."""

    def __init__(self, resnet: nn.Module, min_side: int = 1):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.stages = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        self.fc = resnet.fc
        self.min_side = min_side

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            if min(x.shape[-2:]) < self.min_side:
                break
            x = stage(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class FeatureGoogLeNet(nn.Module):
    """GoogLeNet's modules behind keyword arguments and a dict of features."""

    ORDER = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b"]

    def __init__(self, googlenet: nn.Module):
        super().__init__()
        self.net = googlenet

    def forward(self, x, *, outputs=("inception4c",), transform_input=True):
        if transform_input:  # torchvision's: ImageNet normalisation → the (x - 0.5) / 0.5 it was trained on
            x = torch.cat([x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                           x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                           x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
        features = {}
        for name in self.ORDER:
            x = getattr(self.net, name)(x)
            if name in outputs:
                features[name] = x
            if len(features) == len(outputs):
                break
        return features


def _lite0_weights(module: nn.Module) -> nn.Module:
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module


def _torchvision(name: str) -> nn.Module:
    torch.manual_seed(0)
    return get_spec(name).build(None)


# (case, the user's module, its layer, built-in name, built-in layer, built-in weights)
CASES: List[tuple] = [
    ("hostile-efficientnet", lambda: _lite0_weights(HostileEfficientNet()), "_blocks.10",
     "efficientnet_lite0", "_blocks.10", "default"),
    ("guarded-efficientnet", lambda: _lite0_weights(GuardedEfficientNet()), "_blocks.10",
     "efficientnet_lite0", "_blocks.10", "default"),
    ("loop-resnet50", lambda: LoopResNet(_torchvision("resnet50")), "stages.2", "resnet50", "layer3", None),
    ("kwargs-dict-googlenet", lambda: FeatureGoogLeNet(_torchvision("googlenet")), "net.inception4c",
     "googlenet", "inception4c", None),
]


def capture_path(prepared: nn.Module) -> str:
    """How fastdream ran the module: ``fx``, ``per-shape graphs`` or ``eager fallback``."""
    if isinstance(prepared, fx.GraphModule):
        return "fx"
    if isinstance(prepared, ShapeGraphs):
        return "eager fallback" if prepared.eager is not None else f"per-shape graphs ({len(prepared.graphs)})"
    return "unprepared"


def _load() -> float:
    return os.getloadavg()[0]


def run_case(case: str, build: Callable[[], nn.Module], layer: str, builtin_name: str, builtin_layer: str,
             weights, size: int, device: torch.device, repeats: int, octaves: int = 4,
             iterations: int = 10) -> Dict[str, object]:
    spec = get_spec(builtin_name)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    options = dict(octaves=octaves, iterations=iterations, device=device, precision="fp32")
    module = build().to(device).eval()
    builtin = fastdream.Dreamer(builtin_name, builtin_layer, weights=weights, **options)
    user = fastdream.Dreamer(module, layer, normalize=(spec.mean, spec.std), **options)

    tap = LayerTap(module, [layer])  # the peers' loop: the module as it is, eval mode
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    objective = weighted_sum(layer_terms("l2", {layer: 1.0}))
    sizes = octave_sizes(size, size, octaves, builtin.octave_scale, builtin.min_size)

    def eager():
        gen = torch.Generator().manual_seed(0)
        tables = [shift_table(iterations, 1, builtin.jitter, gen) for _ in sizes]
        return dream_reference(image, lambda v: tap((v - mean) / std), objective, sizes, tables, builtin.step_size)

    inputs = [torch.rand(1, 3, h, w, device=device) for h, w in sizes]

    def floor():
        for x in inputs:
            for _ in range(iterations):
                x_in = x.detach().requires_grad_(True)
                torch.autograd.grad(builtin.loss(x_in), x_in)

    runs = {"eager": eager, "user": lambda: user(image, seed=0), "builtin": lambda: builtin(image, seed=0),
            "floor": floor}
    for fn in runs.values():  # warm-up: preparation, per-shape capture, oneDNN primitive caches
        fn()
    times: Dict[str, List[float]] = {k: [] for k in runs}
    load_before = _load()
    for _ in range(repeats):  # interleaved: a load change on the machine hits all alike
        for key, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    result: Dict[str, object] = {
        "case": case, "user_layer": layer, "builtin": builtin_name, "builtin_layer": builtin_layer, "size": size,
        "batch": 1, "octaves": octaves, "iterations": iterations, "precision": "float32", "repeats": repeats,
        "capture": capture_path(user.prepared_model(device)),
        "load_1min_before": round(load_before, 2), "load_1min_after": round(_load(), 2),
    }
    for key, values in times.items():
        result[f"{key}_s"] = statistics.median(values)
        result[f"{key}_min_s"] = min(values)
        result[f"{key}_all_s"] = [round(v, 4) for v in values]
    for suffix in ("_s", "_min_s"):  # medians, and the best runs (least disturbed by other load)
        tag = "" if suffix == "_s" else "_min"
        result[f"speedup{tag}"] = result[f"eager{suffix}"] / result[f"user{suffix}"]
        result[f"user_vs_builtin{tag}"] = result[f"user{suffix}"] / result[f"builtin{suffix}"]
        result[f"builtin_speedup{tag}"] = result[f"eager{suffix}"] / result[f"builtin{suffix}"]
        result[f"user_vs_floor{tag}"] = result[f"user{suffix}"] / result[f"floor{suffix}"]
    return result


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--octaves", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", default="2", help="torch.set_num_threads values (CPU), each a run of every case")
    parser.add_argument("--cases", default=None, help="comma-separated subset of " + ",".join(c[0] for c in CASES))
    parser.add_argument("--quick", action="store_true", help="1 octave × 2 iterations at 128², 1 repeat")
    parser.add_argument("--json", help="output file (default: benchmarks/results/any-module-<device>-<date>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    threads = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [torch.get_num_threads()]
    meta = {"device": device_name(device), "torch": torch.__version__, "commit": _commit(),
            "date": datetime.date.today().isoformat()}
    extra = dict(octaves=1, iterations=2) if args.quick else dict(octaves=args.octaves, iterations=args.iterations)
    size, repeats = (128, 1) if args.quick else (args.size, args.repeats)
    print(f"# {meta['device']}  torch {meta['torch']}  commit {meta['commit'][:10]}  load {_load():.1f}  "
          "(medians; best runs in brackets)")
    print(f"{'case':22s} {'thr':>3s} {'eager':>14s} {'user':>14s} {'builtin':>14s} {'floor':>14s} "
          f"{'eager/user':>12s} {'user/builtin':>13s}  capture")
    results, path = [], None
    for count in threads:
        torch.set_num_threads(count)
        for case, build, layer, name, builtin_layer, weights in CASES:
            if args.cases and case not in args.cases.split(","):
                continue
            r = run_case(case, build, layer, name, builtin_layer, weights, size, device, repeats, **extra)
            r.update(meta, threads=torch.get_num_threads())
            results.append(r)
            cells = " ".join(f"{r[k + '_s']:5.2f}s [{r[k + '_min_s']:5.2f}]" for k in ("eager", "user", "builtin", "floor"))
            print(f"{case:22s} {count:3d} {cells} {r['speedup']:5.2f}× [{r['speedup_min']:4.2f}] "
                  f"{r['user_vs_builtin']:5.2f}× [{r['user_vs_builtin_min']:4.2f}]  {r['capture']}", flush=True)
            # after each case: a run stopped early keeps what it measured
            path = write_results(results, "any-module", "cpu" if device.type == "cpu" else meta["device"],
                                 args.json or path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
