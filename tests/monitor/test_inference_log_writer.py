"""The inference log writer against a real store (SQLite and PostgreSQL): sampling, bounded
buffer, redaction before writing, oversized payloads, retention, and labels joined by id."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
from prometheus_client import CollectorRegistry

from modelyard.domain.registry import Endpoint
from modelyard.monitor.inference_log import InferenceLog
from modelyard.store import inference_log as repo
from modelyard.store.db import Database

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def endpoint(sample: float = 1.0, redaction: dict[str, str] | None = None) -> Endpoint:
    return Endpoint("churn", "churn", 1000, "", NOW, NOW, 1, redaction=redaction or {},
                    log_sample=sample)


def offer(log: InferenceLog, ep: Endpoint, request_id: str = "r1", version: str = "churn:1",
          inputs: dict[str, object] | None = None, status: int = 200) -> bool:
    arrays = inputs if inputs is not None else {"x": np.array([[1.0, 2.0]], np.float32)}
    return log.offer(ep, version, request_id, status, 0.0125, 1, arrays,
                     {"label": np.array([1])}, 1.0)


def rows(db: Database, **kwargs: object) -> list[dict[str, object]]:
    with db.transaction() as session:
        return repo.page(session, "churn", limit=1000, **kwargs)  # type: ignore[arg-type]


def test_records_are_written_with_version_request_id_and_payloads(db: Database) -> None:
    log = InferenceLog(db)
    assert offer(log, endpoint())
    assert log.flush() == 1
    [record] = rows(db)
    assert record["version"] == "churn:1" and record["request_id"] == "r1"
    assert record["inputs"] == {"x": [[1.0, 2.0]]} and record["outputs"] == {"label": [1]}
    assert record["latency_ms"] == 12.5 and record["status"] == 200 and record["rows"] == 1


def test_sampling_keeps_about_the_configured_share(db: Database) -> None:
    draws = iter(np.random.default_rng(7).random(2000))
    log = InferenceLog(db, draw=lambda: float(next(draws)))
    kept = sum(offer(log, endpoint(0.25), f"r{i}") for i in range(2000))
    assert 420 <= kept <= 580
    assert not offer(InferenceLog(db), endpoint(0.0))
    log.flush()
    assert len(rows(db)) == kept


def test_a_full_buffer_drops_and_counts_instead_of_waiting(db: Database) -> None:
    registry = CollectorRegistry()
    log = InferenceLog(db, capacity=3, registry=registry)
    kept = [offer(log, endpoint(), f"r{i}") for i in range(5)]
    assert kept == [True, True, True, False, False]
    assert log.dropped == 2
    assert registry.get_sample_value("modelyard_inference_log_records_total",
                                     {"result": "dropped"}) == 2
    assert registry.get_sample_value("modelyard_inference_log_buffered") == 3
    log.flush()
    assert registry.get_sample_value("modelyard_inference_log_records_total",
                                     {"result": "written"}) == 3


def test_redaction_applies_before_anything_is_written(db: Database) -> None:
    log = InferenceLog(db)
    ep = endpoint(redaction={"ssn": "drop", "customer": "hash", "card": "mask"})
    offer(log, ep, inputs={
        "ssn": np.array(["123-45-6789"]), "customer": np.array(["c-42"]),
        "card": np.array(["4111111111111111"]),
        "note": np.array(["write to jane.doe@example.com"])})
    log.flush()
    [record] = rows(db)
    inputs = record["inputs"]
    assert isinstance(inputs, dict)
    assert "ssn" not in inputs
    assert inputs["customer"] == ["sha256:" + hashlib.sha256(b"c-42").hexdigest()]
    assert inputs["card"] == ["************1111"]
    assert "jane.doe@example.com" not in str(inputs["note"])


def test_oversized_payloads_and_nan_are_stored_safely(db: Database) -> None:
    log = InferenceLog(db, max_payload_bytes=1000)
    offer(log, endpoint(), "big", inputs={"x": np.zeros((1, 5000), np.float32)})
    offer(log, endpoint(), "nan", inputs={"x": np.array([[np.nan, 1.0]])})
    log.flush()
    by_id = {r["request_id"]: r for r in rows(db)}
    big = by_id["big"]["inputs"]
    assert isinstance(big, dict) and big["_truncated"] is True and int(big["bytes"]) > 1000
    assert by_id["nan"]["inputs"] == {"x": [[None, 1.0]]}


def test_the_writer_thread_flushes_on_its_own_and_on_stop(db: Database) -> None:
    log = InferenceLog(db, flush_interval_s=0.05)
    log.start()
    try:
        offer(log, endpoint())
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not rows(db) and datetime.now(UTC) < deadline:
            pass
        assert len(rows(db)) == 1
        offer(log, endpoint(), "r2")
    finally:
        log.stop()
    assert len(rows(db)) == 2


def test_retention_deletes_old_records_and_labels_only(db: Database) -> None:
    with db.transaction() as session:
        repo.insert_many(session, [
            {"at": NOW - timedelta(days=age), "endpoint": "churn", "version": "churn:1",
             "request_id": f"r{age}", "status": 200, "latency_ms": 1.0, "rows": 1,
             "inputs": None, "outputs": None, "prediction": None} for age in (1, 40, 41)])
        repo.put_labels(session, "churn", [("r1", 1)])
    log = InferenceLog(db)
    assert log.expire(30, now=NOW) == 2
    assert [r["request_id"] for r in rows(db)] == ["r1"]
    assert log.expire(0, now=NOW) == 0  # 0 keeps everything


def test_labels_join_by_request_id_and_the_latest_label_wins(db: Database) -> None:
    log = InferenceLog(db)
    for i in range(3):
        offer(log, endpoint(), f"r{i}", version=f"churn:{1 + i % 2}")
    log.flush()
    with db.transaction() as session:
        assert repo.put_labels(session, "churn", [("r0", 0), ("r2", 1), ("zz", 1)]) == 3
    with db.transaction() as session:
        repo.put_labels(session, "churn", [("r0", 1)])  # a corrected label
    with db.transaction() as session:
        joined = repo.labelled(session, "churn", NOW - timedelta(days=365),
                               datetime.now(UTC) + timedelta(minutes=1))
        assert [(j["request_id"], j["version"], j["label"]) for j in joined] == [
            ("r0", "churn:1", 1), ("r2", "churn:1", 1)]
        assert repo.version_of(session, "churn", "r1") == "churn:2"
        assert repo.version_of(session, "churn", "zz") is None


def test_pages_filter_by_version_window_and_status(db: Database) -> None:
    log = InferenceLog(db)
    for i in range(5):
        offer(log, endpoint(), f"r{i}", version=f"churn:{1 + i % 2}",
              status=500 if i == 4 else 200)
    log.flush()
    assert len(rows(db, version="churn:1")) == 3
    assert [r["request_id"] for r in rows(db, status="error")] == ["r4"]
    first = rows(db)[:2]
    assert [r["request_id"] for r in first] == ["r4", "r3"]
    older = rows(db, before_id=first[-1]["id"])
    assert [r["request_id"] for r in older] == ["r2", "r1", "r0"]
    with db.transaction() as session:
        summary = {s["version"]: s for s in repo.summary(session, "churn")}
    assert summary["churn:1"]["records"] == 3 and summary["churn:1"]["errors"] == 1
    assert summary["churn:2"]["records"] == 2 and summary["churn:2"]["errors"] == 0


def test_a_rate_cap_shrinks_the_share_uniformly_with_the_traffic(db: Database) -> None:
    now = [1000.0]
    draws = iter(np.random.default_rng(3).random(100_000))
    log = InferenceLog(db, capacity=100_000, max_per_s=100, clock=lambda: now[0],
                       draw=lambda: float(next(draws)))
    kept = []
    for second in range(5):  # 2,000 requests a second, spread over each second
        now[0] = 1000.0 + second
        kept.append(sum(offer(log, endpoint(), f"r{second}-{i}") for i in range(2000)))
    assert kept[0] == 100  # the first second: nothing known yet, the cap holds the burst
    assert all(70 <= k <= 100 for k in kept[1:]), kept  # then about 100 a second, uniformly
    now[0] = 1010.0  # quiet again: a second with no traffic before resets the factor
    assert sum(offer(log, endpoint(), f"q{i}") for i in range(50)) == 50
    # Under the cap, the endpoint's own share is what is sampled.
    half = InferenceLog(db, max_per_s=10_000, clock=lambda: now[0],
                        draw=lambda: float(next(draws)))
    assert sum(offer(half, endpoint(0.5), f"h{i}") for i in range(1000)) in range(430, 570)
