"""Kill the job worker mid-training: the job resumes and registers exactly one version.

``modelyard worker`` runs as a real subprocess with a short lease. The job is a trusted
project function (a module on PYTHONPATH in a temporary folder) that registers a model
version inside ``ctx.step`` and then keeps "training" until the test lets it finish. The first
worker is SIGKILLed after the step; a second worker takes the job over once the lease expires,
gets the step's stored result instead of registering again, and finishes the job.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from worker_support import Start, worker_processes

from modelyard import Yard

pytestmark = pytest.mark.slow

HANDLER = '''
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression


def train(ctx, model, release):
    def register():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 3)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
        found = ctx.yard.register(model, LogisticRegression().fit(x, y), sample=x[:4],
                                  tags={"job": str(ctx.id)})
        return found.version

    version = ctx.step("register", register)
    ctx.log(f"registered {model}:{version}; training goes on")
    while not Path(release).exists():
        ctx.check_cancelled()
        time.sleep(0.05)
    return {"version": version, "attempt": ctx.attempt}
'''


def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def workers(yard: Yard, tmp_path: Path) -> Iterator[Start]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "kill_test_training.py").write_text(textwrap.dedent(HANDLER))
    with worker_processes(yard, tmp_path, code) as start:
        yield start


def test_killed_worker_job_resumes_and_registers_exactly_one_version(
        yard: Yard, workers: Callable[[str], subprocess.Popen[bytes]], tmp_path: Path) -> None:
    release = tmp_path / "release"
    job = yard.enqueue_job("call", {"function": "kill_test_training:train", "trusted": True,
                                    "args": {"model": "churn", "release": str(release)}})
    first = workers("first")
    until(lambda: "register" in yard.job(job.id).steps, 90, "the register step")
    assert [v.version for v in yard.versions("churn")] == [1]
    assert yard.job(job.id).state == "running"

    first.send_signal(signal.SIGKILL)  # mid-training, after the step
    assert first.wait(timeout=30) == -signal.SIGKILL
    second = workers("second")
    until(lambda: yard.job(job.id).attempt == 2, 60, "the second worker to take over")
    release.touch()
    done = yard.wait_job(job.id, timeout_s=60)

    assert done.state == "succeeded", done
    assert done.result == {"version": 1, "attempt": 2}
    assert [v.version for v in yard.versions("churn")] == [1]  # exactly one version
    lines = [line.line for line in yard.job_logs(job.id)]
    assert any("expired on attempt 1" in line for line in lines), lines
    assert any("step register: done by an earlier attempt" in line for line in lines), lines

    second.send_signal(signal.SIGTERM)  # a clean stop
    assert second.wait(timeout=30) == 0
    assert "worker stopped" in (tmp_path / "second.log").read_text()
