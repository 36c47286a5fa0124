"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, no dashboard) for every test that needs it, shut down at the end."""
    ray = pytest.importorskip("ray")  # a guard for users without the [ray] extra; CI installs it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()
