"""``fastdream dream --ray`` and ``fastdream.cluster`` on a local Ray (2 CPUs, tests/conftest.py): the outputs are the
single-process CLI's byte for byte, bad images are reported while the rest are written, ``--resume``
skips what exists, and a worker killed mid-run loses nothing."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fastdream import cli
from fastdream.cluster import DreamWorker, dream_files, dream_folder, plan_batches
from fastdream.ray_support import require_ray

FAST = ["--octaves", "2", "--iterations", "2", "--seed", "3", "--quiet"]
SIZES = [(64, 80), (72, 96), (64, 80), (64, 80), (72, 96)]


@pytest.fixture
def folder(tmp_path):
    """``in/`` with five noise images of two sizes, one too small and one file that is not an image."""
    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(source / f"img{i}.png")
    (source / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(source / "a_tiny.png")  # too small
    return source


def outputs(folder: pathlib.Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def single_process(source, out, *flags):
    code = cli.main(["dream", str(source), "-o", str(out), *FAST, *flags])
    assert code == 1  # bad.png, a_tiny.png
    return outputs(out)


def test_plan_is_the_single_process_one():
    shapes = [(3, 8, 8), None, (3, 9, 9), (3, 8, 8), (3, 8, 8), (3, 9, 9)]
    assert plan_batches(shapes, 1, 5) == [([0], 5), ([2], 5), ([3], 5), ([4], 5), ([5], 5)]
    # dream_many: windows of 4*N in order, grouped by shape, batch k seeded seed + k
    assert plan_batches(shapes, 2, 5) == [([0, 3], 5), ([4], 6), ([2, 5], 7)]
    assert plan_batches(shapes, 1, 5)[0][1] == 5 and plan_batches(shapes, 2, None)[0][1] is None
    assert plan_batches(shapes * 2, 1, 0)[-1] == ([11], 0)
    many = plan_batches([(3, 8, 8)] * 10, 2, 2**63 - 1)
    assert [b for b, _ in many] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]] and many[1][1] == 0


@pytest.mark.parametrize("batch", ["1", "2"])
def test_ray_matches_single_process(ray_local, folder, tmp_path, capsys, batch):
    expected = single_process(folder, tmp_path / "one", "--batch-size", batch)
    capsys.readouterr()
    code = cli.main(["dream", str(folder), "-o", str(tmp_path / "ray"), *FAST, "--batch-size", batch, "--ray"])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.png" in err and "not a readable image" in err and "dreamed 5 of 7 images, 2 failed" in err
    assert "a_tiny.png: image is 8×8" in err
    got = outputs(tmp_path / "ray")
    assert sorted(got) == [f"img{i}.png" for i in range(5)]
    assert got == expected  # byte for byte


def test_uri_input_to_a_local_folder(ray_local, folder, tmp_path, capsys):
    expected = single_process(folder, tmp_path / "one")
    code = cli.main(["dream", folder.as_uri(), "-o", str(tmp_path / "ray"), *FAST, "--ray"])
    assert code == 1 and "dreamed 5 of 7 images, 2 failed" in capsys.readouterr().err
    assert outputs(tmp_path / "ray") == expected


def test_resume_skips_existing(ray_local, folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (4, 3), (1, 2, 3)).save(out / "img1.png")  # a complete image: kept
    kept = (out / "img1.png").read_bytes()
    code = cli.main(["dream", str(folder), "-o", str(out), *FAST, "--ray", "--resume"])
    assert code == 1
    assert "skipped 1 image" not in capsys.readouterr().err  # --quiet
    assert (out / "img1.png").read_bytes() == kept
    assert sorted(outputs(out)) == [f"img{i}.png" for i in range(5)]
    assert cli.main(["dream", str(folder), "-o", str(out), *FAST, "--ray"]) == 1  # exists, no --resume
    assert "outputs exist" in capsys.readouterr().err


def test_dream_folder_is_the_command_line_run(ray_local, folder, tmp_path):
    expected = single_process(folder, tmp_path / "one")
    out = tmp_path / "ray"
    report = dream_folder(str(folder), str(out), {"octaves": 2, "iterations": 2}, seed=3)
    assert sorted(name for name, _ in report.failed) == [str(folder / "a_tiny.png"), str(folder / "bad.png")]
    assert outputs(out) == expected
    Image.new("RGB", (4, 3), (1, 2, 3)).save(out / "img1.png")
    mine = (out / "img1.png").read_bytes()
    with pytest.raises(FileExistsError, match="outputs exist"):  # before anything is dreamed
        dream_folder(str(folder), str(out), {"octaves": 2, "iterations": 2}, seed=3)
    report = dream_folder(str(folder), str(out), {"octaves": 2, "iterations": 2}, seed=3, resume=True)
    assert report.written == [] and (out / "img1.png").read_bytes() == mine  # kept
    assert len(report.failed) == 2  # bad.png and a_tiny.png have no output: tried again


class CrashOnce(DreamWorker):
    """Kills its own worker process on ``img2.png`` the first time (a marker file remembers)."""

    marker = None

    def load(self, data, source):
        if source.endswith("img2.png") and not os.path.exists(self.marker):
            pathlib.Path(self.marker).touch()
            os._exit(1)
        return super().load(data, source)


def test_killed_worker_loses_nothing(ray_local, folder, tmp_path):
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ships CrashOnce by value
    expected = single_process(folder, tmp_path / "one")
    (folder / "bad.png").unlink()
    (folder / "a_tiny.png").unlink()
    CrashOnce.marker = str(tmp_path / "crashed")
    sources = sorted(str(path) for path in folder.iterdir())
    out = tmp_path / "ray"
    out.mkdir()
    dests = [str(out / pathlib.Path(source).name) for source in sources]
    report = dream_files(sources, dests, {"octaves": 2, "iterations": 2}, seed=3, worker=CrashOnce)
    assert os.path.exists(CrashOnce.marker)  # the worker did die
    assert report.failed == [] and sorted(report.written) == sorted(dests)
    assert outputs(out) == expected


def test_import_fastdream_imports_neither_ray_nor_torch():
    code = "import sys, fastdream; fastdream.dream_folder; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=pathlib.Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]", result.stderr


def test_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "\.\[ray\]"'):
        require_ray()
    code = cli.main(["dream", str(tmp_path), "-o", str(tmp_path / "out"), "--ray"])
    assert code == 1
    assert 'pip install "ray[data,serve]' in capsys.readouterr().err


@pytest.mark.parametrize("source", [["--demo"], ["--noise", "64x64"]])
def test_ray_needs_inputs(tmp_path, capsys, source):
    code = cli.main(["dream", *source, "-o", str(tmp_path / "x.png"), "--ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"fastdream: error: --ray dreams INPUT files/folders on a Ray cluster, not {source[0]}"
    assert not any(tmp_path.iterdir())


def test_workers_import_the_drivers_fastdream(ray_local):
    """The session's Ray was started by fastdream.ray_support.init_ray: its workers import the package
    it shipped (this process's), not ./fastdream of the working directory (a checkout without _C)."""
    from fastdream import ray_support

    ray_support.check_workers(ray_local)  # raises WorkerMismatchError where they differ
    where = ray_local.get(ray_local.remote(num_cpus=0)(ray_support._worker_fastdream).remote())
    assert tuple(where[:3]) == ray_support.fingerprint()
    assert pathlib.Path(where[3]).resolve() != (pathlib.Path.cwd() / "fastdream").resolve()


class _FakeRay:
    """``ray.remote(...)(fn).remote()`` / ``ray.get`` answering with a worker's fingerprint."""

    def __init__(self, answer):
        self.answer = answer

    def remote(self, **options):
        return lambda fn: type("Remote", (), {"remote": staticmethod(lambda: None)})

    def get(self, ref):
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def test_foreign_workers_stop_with_one_line():
    """A Ray someone else started in a source checkout: its workers' fastdream lacks _C (or differs,
    or does not import); the run stops before anything is dreamed."""
    from fastdream import ray_support

    version, digest, extension = ray_support.fingerprint()
    ray_support.check_workers(_FakeRay((version, digest, extension, "/site/fastdream")))  # the same: fine
    with pytest.raises(ray_support.WorkerMismatchError) as info:
        ray_support.check_workers(_FakeRay((version, digest, not extension, "/checkout/fastdream")))
    if extension:
        assert "from /checkout/fastdream" in str(info.value) and "extension does not load" in str(info.value)
    with pytest.raises(ray_support.WorkerMismatchError, match="other code"):
        ray_support.check_workers(_FakeRay((version, "0" * 16, extension, "/old/fastdream")))
    with pytest.raises(ray_support.WorkerMismatchError, match="none that imports"):
        ray_support.check_workers(_FakeRay(ImportError("no module named fastdream.ray_support")))
