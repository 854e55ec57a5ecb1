"""Many models per process: 20 lazily loaded versions under a budget for 5, over HTTP."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard import Yard
from modelyard.serving.residency import MiB, resident_bytes
from modelyard.serving.server import BackgroundServer
from modelyard.testing.models import Weighted
from support import assert_problem

MODELS = 20
MODEL_BYTES = 8 * MiB
FACTOR = 1.25  # the estimate before a first load: 10 MiB for an 8 MiB artifact


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition."""
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.fixture
def many(yard: Yard, tmp_path: Path) -> Iterator[tuple[Yard, int]]:
    """20 endpoints ``m0``..``m19``, each its own 8 MiB version (scale i + 1), lazy."""
    for i in range(MODELS):
        folder = Weighted.save(tmp_path / f"m{i}", scale=i + 1.0, size_bytes=MODEL_BYTES)
        yard.register(f"m{i}", path=folder, flavor="python", trusted=True,
                      sample=np.ones((1, 4), dtype=np.float32))
        yard.create_endpoint(f"m{i}", f"m{i}:1", auth="public",
                             deployment={"load": "lazy", "max_batch_size": 8})
    # Room for five models at their measured size, and for four at the first-load estimate.
    budget = int(5.5 * MODEL_BYTES)
    limited = Yard(settings=yard.settings.with_(model_memory_budget_mb=budget / MiB,
                                                model_memory_factor=FACTOR))
    try:
        yield limited, budget
    finally:
        limited.close()


def test_twenty_lazy_models_share_a_budget_for_five(many: tuple[Yard, int],
                                                    admin_key: str) -> None:
    yard, budget = many
    rng = random.Random(3)
    # Skewed: a few hot models and a long tail, as with many small per-tenant models.
    plan = [min(MODELS - 1, int(rng.expovariate(0.25))) for _ in range(400)]
    plan[:MODELS] = list(range(MODELS))  # every model answers at least once
    rng.shuffle(plan)
    wrong: list[tuple[int, int, str]] = []
    peak_rss = [0]
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            peak_rss[0] = max(peak_rss[0], resident_bytes() or 0)
            time.sleep(0.005)

    with BackgroundServer(yard) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        residency = srv.server.config.app.state.backend.residency
        start_rss = resident_bytes() or 0
        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()

        def call(i: int) -> None:
            x = [[1.0, 2.0, 3.0, float(i)]]
            for _ in range(20):  # 503 (all five in use) asks to come back: do so, bounded
                response = http.post(f"/endpoints/m{i}/predict", json={"inputs": x},
                                     headers={"modelyard-timeout-ms": "20000"})
                if response.status_code != 503:
                    break
                assert_problem(response, 503, "over_memory_budget")
                assert response.headers["retry-after"] == "1"
                time.sleep(0.05)
            body = response.json() if response.status_code == 200 else response.text
            if response.status_code != 200 or \
                    body["outputs"]["output"] != [(6.0 + i) * (i + 1)]:
                wrong.append((i, response.status_code, str(body)))

        with ThreadPoolExecutor(4) as pool:  # at most four models in use at once
            list(pool.map(call, plan))
        stop.set()
        sampler.join()
        text = http.get("/metrics", headers={"authorization": f"Bearer {admin_key}"}).text

    assert not wrong, wrong[:5]
    loads, unloads = metric(text, "modelyard_model_loads_total"), \
        metric(text, "modelyard_model_unloads_total")
    loaded = metric(text, "modelyard_models_loaded")
    print(f"\n400 requests over {MODELS} models: {loads:.0f} loads, {unloads:.0f} unloads, "
          f"{loaded:.0f} loaded at the end, peak accounted "
          f"{residency.peak_bytes / MiB:.1f} MiB of {budget / MiB:.1f} MiB, "
          f"RSS grew at most {(peak_rss[0] - start_rss) / MiB:.1f} MiB")
    assert loads >= MODELS and unloads >= MODELS - 5  # each loaded once; most evicted
    assert loads - unloads == loaded <= 5
    assert metric(text, "modelyard_model_memory_bytes") <= budget
    assert metric(text, "modelyard_model_memory_budget_bytes") == budget
    assert residency.peak_bytes <= budget
    # Real memory: all 20 would be 160 MiB (154 MiB measured without trimming the heap after
    # unloads). Loading and unloading leaves allocator overhead that stays flat after the
    # first few cycles (measured: 91 MiB peak growth for this 44 MiB budget; 42 MiB with
    # five models and no unloads at all; 99-109 MiB in full-suite runs, where the test
    # process has more threads and arenas); the bound allows 80 MiB for it, still well below
    # the 154-160 MiB that keeping every model would take.
    assert peak_rss[0] - start_rss <= budget + 80 * MiB


def test_a_model_larger_than_the_budget_is_refused_with_retry_after(
        yard: Yard, tmp_path: Path) -> None:
    folder = Weighted.save(tmp_path / "big", scale=1.0, size_bytes=4 * MiB)
    yard.register("big", path=folder, flavor="python", trusted=True,
                  sample=np.ones((1, 4), dtype=np.float32))
    yard.create_endpoint("big", "big:1", auth="public", deployment={"load": "lazy"})
    small = Yard(settings=yard.settings.with_(model_memory_budget_mb=2.0))
    try:
        with BackgroundServer(small) as srv, httpx.Client(base_url=srv.url, timeout=30) as h:
            assert h.get("/v2/models/big/ready").json()["ready"] is True  # loads on use
            response = h.post("/endpoints/big/predict", json={"inputs": [[1, 2, 3, 4]]})
            body = assert_problem(response, 503, "over_memory_budget")
            assert "more than the whole model memory budget" in body["detail"]
            assert response.headers["retry-after"] == "1"
    finally:
        small.close()


def test_eager_models_take_their_share_first_and_graph_nodes_can_be_lazy(
        yard: Yard, tmp_path: Path) -> None:
    """Budget 24 MiB, factor 1: an eager 12 MiB model leaves 12 MiB to the lazy ones, so an
    8 MiB lazy graph node loads on first use, and a second 8 MiB lazy model (a split's
    version) must wait until the node is idle and can be unloaded."""
    for name, size in (("eager", 12), ("node", 8), ("member", 8)):
        folder = Weighted.save(tmp_path / name, scale=1.0, size_bytes=size * MiB)
        yard.register(name, path=folder, flavor="python", trusted=True,
                      sample=np.ones((1, 4), dtype=np.float32))
    yard.register("member", path=Weighted.save(tmp_path / "member2", scale=2.0,
                                               size_bytes=8 * MiB),
                  flavor="python", trusted=True, sample=np.ones((1, 4), dtype=np.float32))
    yard.create_endpoint("eager", "eager:1", auth="public")
    yard.create_endpoint("graph", auth="public", graph={
        "graph": "graph", "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
        "nodes": {"n": {"kind": "model", "model": "node:1", "inputs": {"input": "inputs.x"},
                        "deployment": {"load": "lazy"}}},
        "outputs": {"y": "n.output"}})
    yard.create_endpoint("split", "member:1", auth="public", deployment={"load": "lazy"})
    yard.set_traffic("split", {"split": [{"model": "member:1", "weight": 50},
                                         {"model": "member:2", "weight": 50}]})
    limited = Yard(settings=yard.settings.with_(model_memory_budget_mb=24,
                                                model_memory_factor=1.0, public_metrics=True))
    try:
        with BackgroundServer(limited) as srv, \
                httpx.Client(base_url=srv.url, timeout=30) as http:
            text = http.get("/metrics").text
            assert metric(text, "modelyard_model_memory_pinned_bytes") >= 12 * MiB
            assert metric(text, "modelyard_models_loaded") == 0  # the lazy ones wait
            ok = http.post("/endpoints/graph/predict", json={"inputs": [[1, 2, 3, 4]]})
            assert ok.status_code == 200, ok.text
            assert metric(http.get("/metrics").text, "modelyard_models_loaded") == 1
            # Either split version: it needs the node's room, and the node is idle now.
            answer = http.post("/endpoints/split/predict", json={"inputs": [[1, 2, 3, 4]]})
            assert answer.status_code == 200, answer.text
            text = http.get("/metrics").text
            assert metric(text, "modelyard_models_loaded") == 1
            assert metric(text, "modelyard_model_unloads_total") >= 1
    finally:
        limited.close()
