"""Kill the job worker mid-training: the cycle resumes on another worker and registers
exactly one version.

``modelyard worker`` runs as a real subprocess with a short lease; the policy's entrypoint
trains slowly on its first attempt (until the test lets it go). The first worker is SIGKILLed
while training; a second takes the job over once the lease expires, trains, registers one
version and carries the cycle to its canary. A second test covers the narrowest window: a
registration that committed while the step's memo did not (the cycle's tag finds it).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from retrain_support import champion, generated, log_labelled, policy, write_entrypoint
from sklearn.linear_model import LogisticRegression
from worker_support import Start, worker_processes

from modelyard import Yard
from modelyard.jobs.worker import Worker

pytestmark = pytest.mark.slow


def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    folder = tmp_path / "code"
    ref = write_entrypoint(folder, "kill_test_retraining")
    monkeypatch.syspath_prepend(str(folder))
    return folder, ref


@pytest.fixture
def workers(yard: Yard, tmp_path: Path, code: tuple[Path, str]) -> Iterator[Start]:
    with worker_processes(yard, tmp_path, code[0]) as start:
        yield start


def test_killed_mid_training_the_cycle_resumes_and_registers_one_version(
        yard: Yard, workers: Callable[[str], subprocess.Popen[bytes]],
        code: tuple[Path, str], tmp_path: Path) -> None:
    champion(yard)
    log_labelled(yard, "churn", 300, seed=9)
    release = tmp_path / "release"
    yard.set_retrain_policy("churn", policy(code[1], params={"release": str(release)}))
    cycle = yard.retrain("churn", "kill test")

    first = workers("first")
    until(lambda: any("training slowly" in line.line
                      for line in yard.job_logs(cycle["job_id"])), 90, "training to start")
    assert yard.retrain_cycle(cycle["id"])["state"] == "training"
    first.send_signal(signal.SIGKILL)  # mid-training
    assert first.wait(timeout=30) == -signal.SIGKILL
    assert [v.version for v in yard.versions("churn")] == [1]

    second = workers("second")
    until(lambda: yard.job(cycle["job_id"]).attempt == 2, 60, "the second worker")
    done = yard.wait_job(cycle["job_id"], timeout_s=90)
    assert done.state == "succeeded", (done, (tmp_path / "second.log").read_text())
    assert [v.version for v in yard.versions("churn")] == [1, 2]  # exactly one new version
    finished = yard.retrain_cycle(cycle["id"])
    assert finished["state"] == "rolling_out" and finished["challenger"] == "churn:2"
    assert yard.version("churn:2").lineage.tags["retrain_job"] == str(cycle["job_id"])
    lines = [line.line for line in yard.job_logs(cycle["job_id"])]
    assert any("expired on attempt 1" in line for line in lines), lines
    assert len(yard.rollouts_of("churn")) == 1
    assert yard.audit_verify()["ok"]

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0


def test_a_registration_whose_memo_was_lost_is_found_by_the_cycle_tag(
        yard: Yard, code: tuple[Path, str]) -> None:
    """The worker died between the registration's commit and the step memo's: the next
    attempt finds the version by its ``retrain_cycle`` tag and registers nothing."""
    champion(yard)
    log_labelled(yard, "churn", 300, seed=10)
    yard.set_retrain_policy("churn", policy(code[1]))
    cycle = yard.retrain("churn")
    x, y = generated(200, seed=12)
    yard.register("churn", LogisticRegression().fit(x, y), sample=x[:4],
                  tags={"retrain_cycle": str(cycle["id"])})  # the earlier attempt's version
    worker = Worker(yard, schedules=False)
    assert worker.run_once()
    assert [v.version for v in yard.versions("churn")] == [1, 2]
    done = yard.retrain_cycle(cycle["id"])
    assert done["challenger"] == "churn:2" and done["state"] == "rolling_out", done
    assert any("registered for this cycle already" in line.line
               for line in yard.job_logs(done["job_id"]))
