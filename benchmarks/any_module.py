"""A user's own ``nn.Module`` vs the built-in model vs the plain eager loop, in one run.

- ``eager``: the seed algorithm in plain eager float32 PyTorch (``fastdream._reference``) on the
  user's module as it is (eval mode, NCHW, BatchNorm as trained), stopped after the layer by
  ``LayerTap``: the way peers write it (benchmarks/e2e.py's ``reference``).
- ``builtin``: ``fastdream.Dreamer("<model name>", layer)``.
- ``user``: ``fastdream.Dreamer(module, layer, normalize=...)`` with the same network built by the
  user: EfficientNet-Lite0 from ``fastdream.models`` code with the packaged weights loaded into it,
  torchvision's ``resnet50(weights=None)`` (the built-in uses random weights too: same timing).

The three run interleaved, ``repeats`` times each after a warm-up, at each thread count; medians
and best runs (``*_min``: the least disturbed by other load on a shared machine) are reported:
``user_vs_builtin = user / builtin`` (goal <= 1.1) and ``speedup = eager / user`` (goal >= 1.6).
Everything runs in float32 (``precision="fp32"``), as the eager loop does.

    python -m benchmarks.any_module                 # 2 then 1 threads; JSON to benchmarks/results/any-module-cpu-<date>.json
    python -m benchmarks.any_module --quick         # 1 octave × 2 iterations, smaller images
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time
from typing import Dict, List

import torch
import torch.nn as nn

import fastdream
from fastdream._reference import dream_reference
from fastdream.models import LayerTap, get_spec
from fastdream.models.prepare import prepare_for_dreaming
from fastdream.objectives import layer_terms, weighted_sum
from fastdream.octaves import octave_sizes, shift_table

from .e2e import _commit, _sync, device_name
from .results_io import write_results

CASES = [  # (built-in name, layer, size)
    ("efficientnet_lite0", "_blocks.10", 384),
    ("resnet50", "layer3", 384),
]


def user_module(name: str) -> nn.Module:
    """The network as a user would build it, outside fastdream's registry."""
    if name == "efficientnet_lite0":
        from fastdream.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0_weights_path

        module = EfficientNetLite0()
        module.load_state_dict(torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True))
        return module
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None)


def run_case(name: str, layer: str, size: int, device: torch.device, repeats: int,
             octaves: int = 4, iterations: int = 10) -> Dict[str, object]:
    weights = "default" if name == "efficientnet_lite0" else None
    spec = get_spec(name)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    options = dict(octaves=octaves, iterations=iterations, device=device, precision="fp32")

    module = user_module(name).to(device)
    builtin = fastdream.Dreamer(name, layer, weights=weights, **options)
    user = fastdream.Dreamer(module, layer, normalize=(spec.mean, spec.std), **options)
    traced = prepare_for_dreaming(module, [layer]) is not module

    module.eval()  # the peers' loop: the module as it is, eval mode
    tap = LayerTap(module, [layer])
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    objective = weighted_sum(layer_terms("l2", {layer: 1.0}))
    sizes = octave_sizes(size, size, octaves, builtin.octave_scale, builtin.min_size)

    def eager():
        gen = torch.Generator().manual_seed(0)
        tables = [shift_table(iterations, 1, builtin.jitter, gen) for _ in sizes]
        return dream_reference(image, lambda v: tap((v - mean) / std), objective, sizes, tables, builtin.step_size)

    runs = {"eager": eager, "builtin": lambda: builtin(image, seed=0), "user": lambda: user(image, seed=0)}
    times: Dict[str, List[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up: preparation, oneDNN primitive caches, allocations
        fn()
    for _ in range(repeats):  # interleaved: a load change on the machine hits all three alike
        for key, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    result: Dict[str, object] = {
        "model": name, "layer": layer, "size": size, "batch": 1, "octaves": octaves, "iterations": iterations,
        "precision": "float32", "user_module_traced": traced, "repeats": repeats,
    }
    for key, values in times.items():
        result[f"{key}_s"] = statistics.median(values)
        result[f"{key}_min_s"] = min(values)
        result[f"{key}_all_s"] = [round(v, 4) for v in values]
    for suffix in ("_s", "_min_s"):  # medians, and the best runs (least disturbed by other load)
        tag = "" if suffix == "_s" else "_min"
        result[f"user_vs_builtin{tag}"] = result[f"user{suffix}"] / result[f"builtin{suffix}"]
        result[f"speedup{tag}"] = result[f"eager{suffix}"] / result[f"user{suffix}"]
        result[f"builtin_speedup{tag}"] = result[f"eager{suffix}"] / result[f"builtin{suffix}"]
    return result


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="2,1",
                        help="torch.set_num_threads values (CPU), each a run of every case; default 2,1")
    parser.add_argument("--models", default=None, help="comma-separated subset of the cases' model names")
    parser.add_argument("--resnet-size", type=int, default=None, help="ResNet-50's image size (default 384)")
    parser.add_argument("--quick", action="store_true", help="1 octave × 2 iterations at 128², 1 repeat")
    parser.add_argument("--json", help="output file (default: benchmarks/results/any-module-<device>-<date>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    threads = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [torch.get_num_threads()]
    meta = {
        "device": device_name(device), "torch": torch.__version__, "commit": _commit(),
        "date": datetime.date.today().isoformat(),
    }
    extra = dict(octaves=1, iterations=2) if args.quick else {}
    print(f"# {meta['device']}  torch {meta['torch']}  commit {meta['commit'][:10]}  (medians; best runs in brackets)")
    print(f"{'model':19s} {'layer':10s} {'size':>4s} {'thr':>3s} {'eager':>15s} {'builtin':>15s} {'user':>15s} "
          f"{'user/builtin':>13s} {'eager/user':>13s}")
    results = []
    for count in threads:
        torch.set_num_threads(count)
        for name, layer, size in CASES:
            if args.models and name not in args.models.split(","):
                continue
            if name == "resnet50" and args.resnet_size:
                size = args.resnet_size
            if args.quick:
                size = 128
            r = run_case(name, layer, size, device, 1 if args.quick else args.repeats, **extra)
            r.update(meta, threads=torch.get_num_threads())
            results.append(r)
            cells = " ".join(f"{r[k + '_s']:6.2f}s [{r[k + '_min_s']:5.2f}]" for k in ("eager", "builtin", "user"))
            print(f"{name:19s} {layer:10s} {size:4d} {count:3d} {cells} {r['user_vs_builtin']:5.2f}× "
                  f"[{r['user_vs_builtin_min']:4.2f}] {r['speedup']:5.2f}× [{r['speedup_min']:4.2f}]", flush=True)
    write_results(results, "any-module", "cpu" if device.type == "cpu" else meta["device"], args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
