"""Retraining cycles in process, on SQLite and PostgreSQL: a better challenger passes the gate
and starts a canary on the endpoint; a worse one stops at the gate with the reason; the cycle
follows its rollout; every step is in the audit chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from retrain_support import champion, log_labelled, policy, write_entrypoint

from modelyard import Yard
from modelyard.domain.errors import Conflict
from modelyard.jobs.worker import Worker


@pytest.fixture
def entrypoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    ref = write_entrypoint(tmp_path / "code", "cycle_test_training")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    return ref


def run_jobs(yard: Yard) -> None:
    worker = Worker(yard, schedules=False, lease_s=30)
    while worker.run_once():
        pass


def actions_of(yard: Yard, since_seq: int) -> list[tuple[str, str, str]]:
    return [(r["actor"], r["action"], r["target"]) for r in yard.audit_records()
            if r["seq"] > since_seq]


def test_better_challenger_starts_a_canary_and_worse_one_stops_at_the_gate(
        yard: Yard, entrypoint: str) -> None:
    champion(yard)
    log_labelled(yard, "churn", 400, seed=5)
    yard.set_retrain_policy("churn", policy(entrypoint))
    start = yard.audit_records()[-1]["seq"]

    cycle = yard.retrain("churn", "weekly refresh")
    assert cycle["state"] == "queued" and cycle["trigger"] == "manual"
    with pytest.raises(Conflict):  # one cycle per model at a time
        yard.retrain("churn")
    assert yard.retraining.trigger("churn", "drift", "alert") is None  # not on_drift
    run_jobs(yard)

    done = yard.retrain_cycle(cycle["id"])
    assert done["state"] == "rolling_out", done
    assert done["verdict"] == "pass" and done["champion"] == "churn:1"
    assert done["challenger"] == "churn:2"
    gate = done["gate"]["result"]
    assert gate["challenger"] > gate["champion"] + 0.05, gate
    assert gate["reason"].startswith("better: accuracy")
    assert {s["group"] for s in gate["slices"]} == {"0.0", "1.0", "2.0"}
    assert done["data"]["train_rows"] == 300 and done["data"]["holdout_rows"] == 100

    version = yard.version("churn:2")
    lineage = version.lineage
    assert lineage.parent == "churn:1"
    assert lineage.data_fingerprint == done["data"]["fingerprint"]
    assert lineage.params == {"kind": "good"}
    assert lineage.metrics["train_accuracy"] > 0.9
    assert lineage.tags["retrain_cycle"] == str(cycle["id"])
    assert lineage.tags["retrain_job"] == str(done["job_id"])
    assert lineage.code_revision and lineage.code_revision.startswith("cycle_test_training@")
    assert yard.model("churn").aliases == {"champion": 1, "challenger": 2}
    # Profiled on its 300 training rows: drift is tested against it once it serves.
    profile = yard.profile("churn:2")
    assert profile["profile"]["rows"] == 300, profile["profile"]

    [rollout] = yard.rollouts_of("churn")
    assert rollout["id"] == done["rollout_id"] and rollout["status"] == "running"
    assert (rollout["baseline"], rollout["target"], rollout["weight"]) == \
        ("churn:1", "churn:2", 10.0)
    assert done["rollout"]["status"] == "running"
    split = yard.endpoint("churn").traffic
    assert split is not None and split["split"] == [{"model": "churn:2", "weight": 10.0},
                                                     {"model": "churn:1", "weight": 90.0}]

    # The canary is rolled back: the cycle says so when read.
    yard.abort_rollout(rollout["id"])
    back = yard.retrain_cycle(cycle["id"])
    assert back["state"] == "rolled_back" and "aborted" in back["error"]

    # Second run: a worse challenger stops at the gate, with the reason.
    yard.set_retrain_policy("churn", policy(entrypoint, params={"kind": "bad"}))
    second = yard.retrain("churn", "try a baseline")
    run_jobs(yard)
    rejected = yard.retrain_cycle(second["id"])
    assert rejected["state"] == "rejected" and rejected["verdict"] == "fail"
    assert rejected["challenger"] == "churn:3"
    assert rejected["gate"]["result"]["reason"].startswith("not better enough: accuracy")
    assert rejected["rollout_id"] is None
    assert len(yard.rollouts_of("churn")) == 1  # no new rollout
    assert yard.version("churn:3").lineage.params == {"kind": "bad"}

    trail = actions_of(yard, start)
    for expected in [("retrain.trigger", f"retrain_cycle:{cycle['id']}"),
                     ("job.enqueue", f"job:{done['job_id']}"),
                     ("model.register", "churn:2"), ("alias.set", "churn@challenger"),
                     ("retrain.gate", f"retrain_cycle:{cycle['id']}"),
                     ("rollout.start", f"rollout:{rollout['id']}"),
                     ("retrain.rollout", f"retrain_cycle:{cycle['id']}"),
                     ("retrain.rolledback", f"retrain_cycle:{cycle['id']}"),
                     ("retrain.trigger", f"retrain_cycle:{second['id']}"),
                     ("model.register", "churn:3"),
                     ("retrain.gate", f"retrain_cycle:{second['id']}")]:
        assert any((a, t) == expected for _, a, t in trail), (expected, trail)
    order = [(a, t) for _, a, t in trail]
    assert order.index(("model.register", "churn:2")) < \
        order.index(("retrain.gate", f"retrain_cycle:{cycle['id']}")) < \
        order.index(("rollout.start", f"rollout:{rollout['id']}"))
    [gate_record] = [r for r in yard.audit_records() if r["action"] == "retrain.gate"
                     and r["target"] == f"retrain_cycle:{second['id']}"]
    assert gate_record["outcome"] == "rejected" and gate_record["actor"] == \
        "modelyard:retraining"
    assert yard.audit_verify()["ok"]


def test_promotion_crowns_the_challenger_and_alerts_start_cycles(
        yard: Yard, entrypoint: str) -> None:
    champion(yard)
    log_labelled(yard, "churn", 300, seed=6, per_request=3)  # three rows per request
    doc = policy(entrypoint, triggers={"on_drift": True, "on_quality_drop": True})
    yard.set_retrain_policy("churn", doc)
    cycle = yard.retraining.trigger("churn", "quality_drop", "alert accuracy: 0.52 < 0.8")
    assert cycle is not None and cycle["created_by"] == "modelyard:quality_drop"
    assert yard.retraining.trigger("churn", "drift", "alert drift") is None  # one at a time
    job = yard.job(cycle["job_id"])
    assert job.created_by == yard.principal.name  # acts as whoever set the policy
    run_jobs(yard)
    assert yard.retrain_cycle(cycle["id"])["state"] == "rolling_out"

    [rollout] = yard.rollouts_of("churn")
    yard.promote_rollout(rollout["id"])
    promoted = yard.retrain_cycle(cycle["id"])
    assert promoted["state"] == "promoted" and promoted["finished_at"]
    assert yard.model("churn").aliases["champion"] == 2  # the endpoint follows it
    crowned = [r for r in yard.audit_records() if r["action"] == "alias.set"
               and r["target"] == "churn@champion"]
    assert crowned[-1]["after"] == {"version": 2}
    assert yard.audit_verify()["ok"]

    listed = yard.retrain_cycles("churn")
    assert [c["id"] for c in listed] == [cycle["id"]]
    assert listed[0]["trigger"] == "quality_drop"
    # An alert about the old champion's last windows starts nothing; one about the new does.
    assert yard.retraining.trigger("churn", "drift", "stale", version="churn:1") is None
    assert yard.retrain_cycles("churn")[0]["id"] == cycle["id"]
    fresh = yard.retraining.trigger("churn", "drift", "alert drift", version="churn:2")
    assert fresh is not None and fresh["trigger"] == "drift"


def test_approval_holds_the_canary_until_a_second_person_approves(
        yard: Yard, entrypoint: str) -> None:
    from modelyard.governance.policy import Principal

    champion(yard)
    log_labelled(yard, "churn", 300, seed=7)
    yard.set_retrain_policy("churn", policy(entrypoint, require_approval=True))
    cycle = yard.retrain("churn")
    run_jobs(yard)
    waiting = yard.retrain_cycle(cycle["id"])
    assert waiting["state"] == "awaiting_approval" and waiting["approval_id"]
    assert yard.rollouts_of("churn") == []

    approver = Principal("key:ana:abc123", frozenset({"approver"}), subject="ana")
    approved = yard.approvals.approve(approver, waiting["approval_id"])
    assert approved.status == "executed", approved
    started = yard.retrain_cycle(cycle["id"])
    assert started["state"] == "rolling_out"
    [rollout] = yard.rollouts_of("churn")
    assert rollout["target"] == "churn:2" and started["rollout_id"] == rollout["id"]


def test_too_few_labels_fails_the_cycle_with_the_reason(yard: Yard, entrypoint: str) -> None:
    champion(yard)
    log_labelled(yard, "churn", 40, seed=8)
    yard.set_retrain_policy("churn", policy(entrypoint))
    cycle = yard.retrain("churn")
    run_jobs(yard)
    failed: dict[str, Any] = yard.retrain_cycle(cycle["id"])
    assert failed["state"] == "failed"
    assert "holds 40 labelled rows" in failed["error"] and "needs 100" in failed["error"]
    assert yard.versions("churn")[-1].version == 1  # nothing registered
    assert yard.job(failed["job_id"]).attempt == 1  # a data problem is not retried
