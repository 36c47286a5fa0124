"""The outputs of ``Dreamer.stream`` (no flow) recorded from main's code before optical flow came in
(main at 9402291, with the scale-free step), so that ``tests/test_flow.py`` can show that
``flow=False`` is byte-identical to the stream as it was.

The model is per-pixel (``relu(x·scale + shift)`` with fixed random maps): no convolution, whose
float rounding may change with the torch version or the CPU, so the record holds on every torch the
project supports; the jitter still matters (the maps are not shift-invariant). One thread: the
step's per-image mean |g| is reduced per thread. A change of the dream itself (the step, the
jitter, the conversions) changes the record: run ``python -m tests.stream_record`` on main *before*
that change, then with it, and check that only the intended change moved the outputs.
"""
import os

import torch

PATH = os.path.join(os.path.dirname(__file__), "data", "stream_no_flow.pt")
SIZE = (33, 37)
CASES = {"uint8_blend_0.4": (torch.uint8, 0.4), "float_blend_0.3": (torch.float32, 0.3), "uint8_blend_0": (torch.uint8, 0.0)}


class Pixelwise(torch.nn.Module):
    """``relu(x·scale + shift)`` per pixel: Tensor[B, 3, 33, 37] -> Tensor[B, 3, 33, 37]."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.scale = torch.nn.Parameter(torch.randn(1, 3, *SIZE, generator=gen), requires_grad=False)
        self.shift = torch.nn.Parameter(torch.randn(1, 3, *SIZE, generator=gen) * 0.5, requires_grad=False)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(x * self.scale + self.shift)


def dreamer():
    import fastdream

    return fastdream.Dreamer(model=Pixelwise(), layers="relu", octaves=1, iterations=3, jitter=4, step_size=0.05)


def frames():
    gen = torch.Generator().manual_seed(1)
    return [(torch.rand(3, *SIZE, generator=gen) * 255).round().to(torch.uint8) for _ in range(4)]


def run(dreamer, inputs, dtype, blend, **flow):
    inputs = [f if dtype == torch.uint8 else f.float() / 255 for f in inputs]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [out.clone() for out in dreamer.stream(inputs, blend=blend, seed=5, **flow)]
    finally:
        torch.set_num_threads(threads)


def record():
    d, inputs = dreamer(), frames()
    data = {"frames": inputs}
    for name, (dtype, blend) in CASES.items():
        data[name] = run(d, inputs, dtype, blend)
    torch.save(data, PATH)


if __name__ == "__main__":
    record()
    print(PATH)
