"""Jobs on Ray: a retraining cycle trains its challenger as a Ray task with the policy's
resources, and cancelling a job cancels the Ray task it is waiting for."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelyard[ray]')")

from modelyard import Yard  # noqa: E402
from modelyard.backends import ray as ray_backend  # noqa: E402  (sets Serve's flags first)
from modelyard.jobs.worker import JobContext, Worker  # noqa: E402
from modelyard.settings import Settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from retrain_support import champion, log_labelled, policy, write_entrypoint  # noqa: E402

# Trains in a Ray task and says where: the entrypoint module is written at test time, and
# its functions travel by value (Ray's workers cannot import it).
TRAINING = '''
import os

import ray
from sklearn.linear_model import LogisticRegression


def train(ctx):
    model = LogisticRegression().fit(ctx.x, ctx.y)
    where = {"pid": os.getpid(), "resources": ray.get_runtime_context().get_assigned_resources()}
    ctx.log(f"trained in process {where['pid']} with {where['resources']}")
    return {"model": model, "params": {"pid": where["pid"]}}
'''


def _sleeper(started: str, finished: str) -> int:
    """A Ray task that would run for a minute: writes its pid when it starts."""
    Path(started).write_text(str(os.getpid()))
    time.sleep(60)
    Path(finished).write_text("finished")
    return 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_retraining_cycle_trains_as_a_ray_task(ray_instance: None, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "code"
    ref = write_entrypoint(code, "ray_cycle_training")
    (code / "ray_cycle_training.py").write_text(TRAINING)
    monkeypatch.syspath_prepend(str(code))
    module = importlib.import_module("ray_cycle_training")
    ray.cloudpickle.register_pickle_by_value(module)
    yard, _ = Yard.init(settings=Settings.load(tmp_path / "yard", env={}))
    try:
        champion(yard)
        log_labelled(yard, "churn", 400, seed=5)
        yard.set_retrain_policy("churn", policy(ref, resources={"num_cpus": 0.5}))
        assert yard.retrain_policy("churn")["policy"]["resources"] == {"num_cpus": 0.5}
        cycle = yard.retrain("churn", "on ray")
        worker = Worker(yard, schedules=False, lease_s=30,
                        offload=ray_backend.RayBackend.offload)
        while worker.run_once():
            pass
        done = yard.retrain_cycle(cycle["id"])
        assert done["challenger"] == "churn:2" and done["verdict"] == "pass", done
        trained_in = int(yard.version("churn:2").lineage.params["pid"])
        assert trained_in != os.getpid()  # in a Ray worker process
        logs = [entry.line for entry in yard.job_logs(done["job_id"])]
        assert any("as a Ray task with {'num_cpus': 0.5}" in line for line in logs), logs
        assert any(line.startswith(f"training: trained in process {trained_in} with "
                                   "{'CPU': 0.5}") for line in logs), logs
    finally:
        yard.close()


def test_cancelling_a_job_cancels_its_ray_task(ray_instance: None, tmp_path: Path) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yard, _ = Yard.init(settings=Settings.load(tmp_path / "yard", env={}))
    started, finished = tmp_path / "started", tmp_path / "finished"

    def handler(ctx: JobContext, payload: dict[str, Any]) -> Any:
        return ctx.elsewhere(_sleeper, str(started), str(finished))

    yard.jobs.handlers.register("sleep", handler)
    job = yard.enqueue_job("sleep", {"resources": {"num_cpus": 0.1}})
    # A short lease: heartbeats (which bring the cancellation) every second.
    worker = Worker(yard, poll_s=0.05, schedules=False, lease_s=3,
                    offload=ray_backend.RayBackend.offload)
    runner = threading.Thread(target=worker.run_once)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline, "the Ray task did not start"
            time.sleep(0.1)
        pid = int(started.read_text())
        assert _alive(pid)
        yard.cancel_job(job.id)
        runner.join(20)
        assert not runner.is_alive(), "the worker still waits for the task"
        assert yard.job(job.id).state == "cancelled"
        deadline = time.monotonic() + 20
        while _alive(pid):  # Ray killed the task's worker process
            assert time.monotonic() < deadline, "the task's process still runs"
            time.sleep(0.2)
        assert not finished.exists()
    finally:
        runner.join(60)
        yard.close()


def test_a_worker_process_offloads_to_ray(ray_instance: None, tmp_path: Path) -> None:
    """``modelyard worker --ray-address``: a separate worker process joins the cluster and
    runs its jobs' offloaded work as Ray tasks with the job's resources."""
    import subprocess

    home = tmp_path / "yard"
    yard, _ = Yard.init(settings=Settings.load(home, env={}))
    job = yard.enqueue_job("call", {"function": "modelyard.testing.jobs:offloaded",
                                    "trusted": True, "resources": {"num_cpus": 0.25}})
    env = {**os.environ, "MODELYARD_HOME": str(home)}
    address = ray.get_runtime_context().gcs_address
    worker = subprocess.Popen([sys.executable, "-m", "modelyard", "worker", "--ray-address",
                               address, "--poll-s", "0.1", "--no-schedules"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while yard.job(job.id).state not in ("succeeded", "failed"):
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            assert time.monotonic() < deadline, "the worker did not finish the job"
            time.sleep(0.2)
        done = yard.job(job.id)
        assert done.state == "succeeded", done
        ran = done.result
        assert ran["worker"] == worker.pid
        assert ran["offloaded"]["pid"] not in (worker.pid, os.getpid())  # a Ray worker
        assert ran["offloaded"]["resources"] == {"CPU": 0.25}
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0].decode()
        yard.close()
    assert "offloaded work runs as Ray tasks on" in output, output
    assert worker.returncode == 0, output
