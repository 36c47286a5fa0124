"""benchmarks/gpu_session.sh dry-run on the CPU (DRY_RUN=1): its paths, its gate and its failures.

The heavy commands (install, build, pytest, sanitizer, benchmarks) are printed, not run; the gate
(benchmarks/cuda_live.py) runs for real in one case: without a GPU the stage must stop there. The
other cases replace the gate with ``true`` / ``false`` to walk both branches cheaply.
"""
import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_session.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def session(tmp_path, stage, live_check=None, timeout=120):
    env = dict(os.environ, DRY_RUN="1", OUT=str(tmp_path), PATH=os.environ.get("PATH", ""))
    if live_check is not None:
        env["LIVE_CHECK"] = live_check
    result = subprocess.run(["bash", str(SCRIPT), stage], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=timeout)
    logs = list(tmp_path.glob(f"{stage}-*.log"))
    return result, (logs[0].read_text() if logs else "")


def commands(log: str):
    return [line[2:] for line in log.splitlines() if line.startswith("+ ")]


def test_without_a_live_cuda_backend_the_stage_stops(tmp_path):
    result, log = session(tmp_path, "tests")  # the real gate, on this machine without a GPU
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT LIVE: torch sees no CUDA device" in log and "STAGE tests FAILED" in log
    assert not any("pytest" in c for c in commands(log))  # no CUDA test ran "successfully"


def test_the_build_is_strict_and_the_tests_stage_runs_the_unmarked_gpu_tests(tmp_path):
    result, log = session(tmp_path, "tests", live_check="true")
    assert result.returncode == 0, log
    assert "FASTDREAM_BUILD_EXT=1 FASTDREAM_BUILD_CUDA=1 FASTDREAM_CUDA_ARCHS=90" in log
    run = commands(log)
    assert "python3 setup.py -q build_ext --inplace" in run
    assert any("-m cuda tests/" in c for c in run)
    # within one 10-minute call: the build (~1-2 min) and the gate leave this much to the tests
    assert sum(int(c.split()[1]) for c in run if c.startswith("timeout ")) <= 450
    assert any("test_extension_is_loaded_when_it_was_built" in c for c in run)
    assert list(tmp_path.glob("cuda-tests-no-gpu-*.json"))
    # a log written under $OUT as it goes, nothing copied into the repository on a dry run
    assert list(tmp_path.glob("tests-no-gpu-*.log"))


def test_a_failed_gate_stops_every_stage(tmp_path):
    for stage in ("memcheck", "bench", "scale"):
        result, log = session(tmp_path, stage, live_check="false")
        assert result.returncode == 1 and "FAILED: the CUDA backend is not live" in log
        assert not [c for c in commands(log) if "benchmarks." in c or "compute-sanitizer" in c]


def test_memcheck_checks_our_kernels_without_the_caching_allocator(tmp_path):
    result, log = session(tmp_path, "memcheck", live_check="true")
    (sanitizer,) = [c for c in commands(log) if "compute-sanitizer" in c]
    assert sanitizer.startswith("env PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 540 compute-sanitizer --tool memcheck")
    assert "tests/test_ops.py tests/test_scratch.py tests/test_resize.py" in sanitizer
    assert "test_graphs" not in sanitizer and "-m cuda" in sanitizer


def test_bench_reads_nothing_from_an_earlier_call(tmp_path):
    (tmp_path / "cuda-counts-no-gpu-2026-01-01.txt").write_text("99,0\n")  # what an old script left
    (tmp_path / "cuda-tests-no-gpu-2026-01-01.json").write_text('{"passed_failed": "99,0"}')
    result, log = session(tmp_path, "bench", live_check="true")
    assert result.returncode == 0, log
    (e2e,) = [c for c in commands(log) if "benchmarks.e2e" in c]
    assert "--cuda-tests" not in e2e
    result, log = session(tmp_path, "all", live_check="true")  # the tests ran in this call: recorded
    (e2e,) = [c for c in commands(log) if "benchmarks.e2e" in c]
    assert "--cuda-tests 0,0" in e2e


def test_usage(tmp_path):
    result, _ = session(tmp_path, "everything", live_check="true")
    assert result.returncode == 2 and "usage:" in result.stderr
