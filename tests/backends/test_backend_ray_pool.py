"""Many models per Ray replica: lazy endpoints share a pool of replicas that each hold several
versions under a memory budget, loaded on first use, least recently used unloaded, routed by
Ray's multiplexed routing. And applications left by a server that died are collected."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelyard[ray]')")

from ray import serve  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from modelyard import Yard  # noqa: E402
from modelyard.backends import ray as ray_backend  # noqa: E402  (sets Serve's flags first)
from modelyard.backends.ray_pool import pool_key, pool_stats  # noqa: E402
from modelyard.cli.main import app as cli  # noqa: E402
from modelyard.serving.residency import MiB  # noqa: E402
from modelyard.serving.server import BackgroundServer  # noqa: E402
from modelyard.settings import Settings  # noqa: E402
from modelyard.testing.models import Weighted  # noqa: E402

MODELS = 8
MODEL_BYTES = 8 * MiB
# Each pool replica has room for two and a half models: eight need both replicas and unloads.
BUDGET_MB = 2.5 * MODEL_BYTES / MiB
LAZY = {"load": "lazy", "num_cpus": 0.1, "max_batch_size": 8}
ROW = [[1.0, 2.0, 3.0, 4.0]]


@pytest.fixture(scope="module")
def pooled(ray_instance: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, Any]]:
    """Eight lazy endpoints (8 MiB each, scale i + 1) on a ray server whose pool has two
    replicas of 20 MiB each."""
    home = tmp_path_factory.mktemp("yard")
    settings = Settings.load(home, env={})
    yard, key = Yard.init(settings=settings)
    for i in range(MODELS):
        folder = Weighted.save(home / f"w{i}", scale=i + 1.0, size_bytes=MODEL_BYTES)
        yard.register(f"m{i}", path=folder, flavor="python", trusted=True,
                      sample=np.ones((1, 4), dtype=np.float32))
        yard.create_endpoint(f"m{i}", f"m{i}:1", auth="public", deployment=LAZY)
    ray_settings = settings.with_(backend="ray", ray_pool_replicas=2,
                                  model_memory_budget_mb=BUDGET_MB, model_memory_factor=1.25)
    server = BackgroundServer(Yard(settings=ray_settings)).start(300)
    try:
        yield {"yard": yard, "server": server, "key": key}
    finally:
        server.stop()
        yard.close()


def _backend(server: BackgroundServer) -> Any:
    return server.server.config.app.state.backend  # type: ignore[attr-defined]


def _predict(http: httpx.Client, i: int) -> float:
    """m{i}'s answer to ROW, retrying as a 503's Retry-After asks (a pool replica whose
    models are all busy refuses a load rather than queue it)."""
    for _ in range(50):
        response = http.post(f"/endpoints/m{i}/predict", json={"inputs": ROW})
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            return float(response.json()["outputs"]["output"][0])
        assert response.json()["code"] == "over_memory_budget", response.text
        time.sleep(float(response.headers.get("retry-after", "1")))
    raise AssertionError(f"m{i} stayed over the memory budget")


def _totals(stats: dict[str, dict[str, Any]]) -> tuple[int, int]:
    return (sum(s["loads"] for s in stats.values()), sum(s["unloads"] for s in stats.values()))


def test_lazy_endpoints_share_one_pool_application(pooled: dict[str, Any]) -> None:
    backend = _backend(pooled["server"])
    apps = [name for name in serve.status().applications
            if name.startswith(ray_backend.APP_PREFIX + backend.cluster.owner)]
    assert len(apps) == 1 and "-pool-" in apps[0], apps
    for i in range(MODELS):
        state = backend.state(f"m{i}")
        assert state.status == "ready"
        assert isinstance(state.deployment, ray_backend.PooledDeployment)
        assert state.deployment.app_name == apps[0]
    # Nothing is loaded before the first request.
    stats = pool_stats(apps[0])
    assert len(stats) == 2 and all(not s["loaded"] for s in stats.values()), stats


def test_many_models_per_replica_under_the_budget(pooled: dict[str, Any]) -> None:
    backend = _backend(pooled["server"])
    (app,) = set(backend.pools.values())
    rng = random.Random(5)
    plan = [min(MODELS - 1, int(rng.expovariate(0.4))) for _ in range(120)]
    plan[:MODELS] = list(range(MODELS))  # every model answers at least once
    rng.shuffle(plan)
    with httpx.Client(base_url=pooled["server"].url, timeout=60) as http, \
            ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: (i, _predict(http, i)), plan))
    for i, answer in answers:
        assert answer == pytest.approx(10.0 * (i + 1)), i  # the row's sum times the scale
    stats = pool_stats(app)
    assert len(stats) == 2
    budget = int(BUDGET_MB * MiB)
    for replica in stats.values():
        assert replica["budget_bytes"] == budget
        assert replica["peak_bytes"] <= budget, replica  # accounted, after each load
        assert 1 <= len(replica["loaded"]) <= 2, replica
    loads, unloads = _totals(stats)
    assert loads >= MODELS and unloads >= MODELS - 4, stats  # 8 models, room for 4-5


def test_a_model_stays_where_it_is_loaded(pooled: dict[str, Any]) -> None:
    """Ray's multiplexed routing sends a held model's requests to the replica holding it: a
    new model asked 30 times is loaded once, on one replica (random routing over the two
    would have loaded it on both)."""
    yard: Yard = pooled["yard"]
    folder = Weighted.save(Path(yard.settings.home) / "fresh", scale=0.5,
                           size_bytes=MODEL_BYTES)
    yard.register("fresh", path=folder, flavor="python", trusted=True,
                  sample=np.ones((1, 4), dtype=np.float32))
    yard.create_endpoint("fresh", "fresh:1", auth="public", deployment=LAZY)
    backend = _backend(pooled["server"])
    backend.reconcile()
    (app,) = set(backend.pools.values())
    deployment = backend.state("fresh").deployment
    key = pool_key(deployment.version, deployment.spec)
    before = _totals(pool_stats(app))
    with httpx.Client(base_url=pooled["server"].url, timeout=60) as http:
        def fresh() -> float:
            for _ in range(50):
                response = http.post("/endpoints/fresh/predict", json={"inputs": ROW})
                if response.status_code != 503:
                    assert response.status_code == 200, response.text
                    return float(response.json()["outputs"]["output"][0])
                time.sleep(1)
            raise AssertionError("fresh stayed over the memory budget")

        assert fresh() == pytest.approx(5.0)
        time.sleep(1.0)  # the replica's report reaches the routers
        for _ in range(30):
            assert fresh() == pytest.approx(5.0)
    stats = pool_stats(app)
    holders = [s["replica"] for s in stats.values() if key in s["loaded"]]
    assert len(holders) == 1, stats
    assert _totals(stats)[0] - before[0] == 1, (before, stats)
    # The endpoint's status says where it runs.
    status = httpx.get(f"{pooled['server'].url}/api/v1/endpoints/fresh",
                       headers={"Authorization": f"Bearer {pooled['key']}"}).json()["status"]
    assert status["pool"] == {"application": app, "replicas": 2, "loaded_on": 1}, status
    shown = CliRunner().invoke(cli, ["--url", pooled["server"].url, "--key", pooled["key"],
                                     "endpoints", "list"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert "ready (fresh:1), loaded on 1 of 2 pool replicas" in shown.output


def test_a_new_version_of_a_lazy_endpoint_is_served_from_the_pool(
        pooled: dict[str, Any]) -> None:
    yard: Yard = pooled["yard"]
    folder = Weighted.save(Path(yard.settings.home) / "w0b", scale=100.0,
                           size_bytes=MODEL_BYTES)
    yard.register("m0", path=folder, flavor="python", trusted=True,
                  sample=np.ones((1, 4), dtype=np.float32))
    yard.update_endpoint("m0", model="m0:2")
    backend = _backend(pooled["server"])
    backend.reconcile()
    assert backend.state("m0").deployment.version.ref == "m0:2"
    with httpx.Client(base_url=pooled["server"].url, timeout=60) as http:
        assert _predict(http, 0) == pytest.approx(1000.0)
    assert len(set(backend.pools.values())) == 1


def test_applications_of_a_server_that_died_are_collected(
        pooled: dict[str, Any], tmp_path: Path) -> None:
    """A second server joins the same Ray, deploys its endpoint and is killed (SIGKILL: no
    clean-up). Its owner actor dies with it; the first server's sweep deletes its
    applications and keeps its own."""
    home = tmp_path / "other"
    other, _ = Yard.init(settings=Settings.load(home, env={}))
    folder = Weighted.save(home / "w", scale=3.0, size_bytes=1024)
    other.register("solo", path=folder, flavor="python", trusted=True,
                   sample=np.ones((1, 4), dtype=np.float32))
    other.create_endpoint("solo", "solo:1", auth="public", deployment={"num_cpus": 0.1})
    other.close()
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "MODELYARD_HOME": str(home), "MODELYARD_BACKEND": "ray",
           "MODELYARD_RAY_ADDRESS": address, "MODELYARD_RAY_DIRECT_INGRESS": "false"}
    process = subprocess.Popen([sys.executable, "-m", "modelyard", "serve", "--port", "0"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backend = _backend(pooled["server"])
    mine = {name for name in serve.status().applications
            if name.startswith(ray_backend.APP_PREFIX + backend.cluster.owner)}
    try:
        deadline = time.monotonic() + 240
        theirs: set[str] = set()
        while not theirs:
            assert process.poll() is None, "the second server stopped"
            assert time.monotonic() < deadline, "the second server deployed nothing"
            time.sleep(1)
            theirs = {name for name, app in serve.status().applications.items()
                      if name.startswith(ray_backend.APP_PREFIX) and name not in mine
                      and str(app.status).endswith("RUNNING")}
        assert backend.cluster.collect_orphans() == []  # its server is alive: kept
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    deadline = time.monotonic() + 60
    deleted: list[str] = []
    while set(deleted) != theirs:  # the owner actor's death reaches the GCS shortly after
        assert time.monotonic() < deadline, (deleted, theirs)
        time.sleep(1)
        deleted += backend.cluster.collect_orphans()
    deadline = time.monotonic() + 60
    while theirs & set(serve.status().applications):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert mine <= set(serve.status().applications)
