"""Shared test setup: the ``cuda`` marker skips without a CUDA device, the ``device`` parameter
(CPU, and CUDA where there is one), a process that pretends the compiled extension is missing, one
local Ray, ``run`` (the command line in-process; test modules import it: ``from conftest
import run``) and the model helpers of the preparation tests (``randomise_batchnorm``,
``eager_reference``)."""
import copy

import pytest
import torch
import torch.nn as nn

from fastdream import _extension, cli, ops


def run(capsys, *args):
    """``fastdream ARGS`` in this process -> ``(exit code, stdout, stderr)``."""
    code = cli.main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pytest_collection_modifyitems(config, items):
    """Tests (or parameters) marked ``cuda`` are skipped on machines without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    """Each device the kernels run on: ``"cpu"``, and ``"cuda"`` (marked ``cuda``)."""
    return request.param


@pytest.fixture
def no_extension(monkeypatch):
    """``fastdream._C`` as if it had failed to import, with the once-per-process warnings unsaid."""
    monkeypatch.setattr(_extension, "_loaded", True)
    monkeypatch.setattr(_extension, "_module", None)
    monkeypatch.setattr(_extension, "_error", "ImportError: pretend the build failed")
    monkeypatch.setattr(ops, "_warned", set())


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, no dashboard) for every test that needs it, shut down at the end."""
    pytest.importorskip("ray")  # a guard for users without the [ray] extra; CI installs it
    from fastdream.ray_support import init_ray

    ray = init_ray(num_cpus=2)  # workers import this process's fastdream, whatever the working directory
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture
def hide_import(monkeypatch):
    """``hide_import("cv2")``: importing that top-level module raises ``ImportError`` for the rest
    of the test, as where an optional package is not installed."""
    import builtins

    real_import = builtins.__import__

    def hide(module: str) -> None:
        def fake(name, *args, **kwargs):
            if name == module or name.startswith(module + "."):
                raise ImportError(f"No module named {module!r}")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", fake)

    return hide


def randomise_batchnorm(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


def eager_reference(model: nn.Module) -> nn.Module:
    """The module as it dreams, as its layers compute: an eval copy whose in-place activations do
    not overwrite a tapped output (torchvision's ReLU(inplace=True) after a tapped conv would)."""
    ref = copy.deepcopy(model).eval()
    for m in ref.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return ref
