"""Exit 0 only where fastdream's CUDA backend is live: the gate of every GPU stage.

    python -m benchmarks.cuda_live [--json PATH]

A GPU session whose build fell back (C++ or link failure, no nvcc, a stale module) would otherwise
"pass" its CUDA tests by comparing the reference twins with themselves. Checked here:
``backend_info()`` reports the extension loaded with its CUDA kernels, a CUDA device, the ``cuda``
backend for it and CuPy; then both kernels and the CuPy resize run on the device and match their
reference twins (jitter and resize bit for bit, the step to float32 rounding), with no fallback
warning. Prints ``backend_info()`` as JSON and each failure on its own line.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import List


def problems() -> List[str]:
    import torch

    import fastdream
    from fastdream import _reference, ops, resize

    info = fastdream.backend_info()
    print(json.dumps(info, indent=1, default=str))
    found = []
    if not info["extension"]:
        found.append(f"fastdream._C did not load: {info['extension_error']}")
    if not info["cuda_compiled"]:
        found.append(f"fastdream._C has no CUDA kernels: {info['cuda_error']}")
    if not info["cuda_available"]:
        found.append("torch sees no CUDA device")
    elif info["devices"]["cuda"] != "cuda":
        found.append(f"CUDA tensors would run on the {info['devices']['cuda']!r} backend")
    if not info["cupy"]:
        found.append("CuPy is not importable: the octave resize would run on torch")
    if found:
        return found
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, 37, 52, generator=gen)
    grad = torch.randn(3, 3, 37, 52, generator=gen)
    shifts = torch.randint(-100, 100, (3, 2), generator=gen, dtype=torch.int32)
    detail = torch.randn(3, 3, 20, 29, generator=gen)
    cuda = [t.cuda() for t in (img, grad, shifts, detail)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback warns
        try:
            jittered = ops.jitter(cuda[0], cuda[2]).cpu()
            stepped = ops.normalized_step_(cuda[0].clone(), cuda[1], cuda[2], 0.1, 0.0, 1.0).cpu()
            stepped_nhwc = ops.normalized_step_(cuda[0].clone(), cuda[1].contiguous(memory_format=torch.channels_last),
                                                cuda[2], 0.1, 0.0, 1.0).cpu()
            base, x = (t.cpu() for t in resize.resize_add(cuda[0], cuda[3], (45, 61)))
            torch.cuda.synchronize()
        except Exception as error:  # noqa: BLE001 - every failure is reported, none raised
            return [f"a kernel failed on the device: {type(error).__name__}: {error}"]
    if not torch.equal(jittered, _reference.jitter_ref(img, shifts)):
        found.append("ops.jitter on CUDA differs from its twin")
    expected = _reference.normalized_step_ref(img.clone(), grad, shifts, 0.1, 0.0, 1.0)
    for name, got in (("NCHW", stepped), ("NHWC", stepped_nhwc)):
        if not torch.allclose(got, expected, rtol=1e-5, atol=1e-6):
            found.append(f"ops.normalized_step_ ({name} gradient) on CUDA differs from its twin by "
                         f"{float((got - expected).abs().max()):.3g}")
    ref_base, ref_x = _reference.resize_add_ref(img, detail, (45, 61))
    if not (torch.allclose(base, ref_base, atol=1e-6) and torch.allclose(x, ref_x, atol=1e-6)):
        found.append("the CuPy resize_add differs from its twin")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write {live, problems} here")
    args = parser.parse_args(argv)
    try:
        found = problems()
    except Exception as error:  # noqa: BLE001 - an import failure is a failed gate too
        found = [f"{type(error).__name__}: {error}"]
    for line in found:
        print(f"cuda_live: NOT LIVE: {line}", file=sys.stderr)
    if not found:
        print("cuda_live: the CUDA backend is live (extension kernels and CuPy resize match their twins)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"live": not found, "problems": found}, indent=1) + "\n")
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main())
