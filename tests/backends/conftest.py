"""A local Ray instance for the ray backend's tests: one per test session (Ray started again
in a process that shut it down once is not dependable), Serve shut down after each module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    """Ray with 2 CPUs in a temporary folder (short: Ray's socket paths are length-limited)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelyard[ray]')")

    from modelyard.backends import ray as ray_backend  # noqa: F401  (sets Serve's flags first)

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    # address="local": a new instance of its own, never one found running on the machine
    # (ray.init() joins any Ray started with 'ray start' by default).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp, namespace="modelyard-tests")
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_instance(_ray_session: None) -> Iterator[None]:
    """The session's Ray; the module's Serve applications are gone after it."""
    from ray import serve

    try:
        yield
    finally:
        serve.shutdown()
