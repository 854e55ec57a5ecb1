"""Evidence read from a real yard (SQLite and PostgreSQL): graphs re-validated against the
versions their aliases point at now, the inference log's availability and p99, labels,
signatures verified, the version to roll back to, and key prefixes only for key readers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from modelyard import Graph, Yard
from modelyard.governance import signing
from modelyard.governance.policy import Principal
from modelyard.store import inference_log


def _log(yard: Yard, endpoint: str, version: str, statuses: list[int],
         latencies: list[float]) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    records = [{"at": now, "endpoint": endpoint, "version": version, "request_id": f"r{i}",
                "status": s, "latency_ms": ms, "rows": 1, "inputs": None, "outputs": None,
                "prediction": None} for i, (s, ms) in enumerate(zip(statuses, latencies,
                                                                      strict=True))]
    with yard.db.transaction() as session:
        inference_log.insert_many(session, records)
        inference_log.put_labels(session, endpoint, [("r0", 1), ("r1", 0)])


def test_graph_revalidated_against_moved_aliases(yard: Yard, classifier: Any,
                                                 tabular: Any) -> None:
    x, label, _ = tabular
    yard.register("clf", classifier, sample=x[:5], to_onnx=True)
    yard.set_alias("clf", "champion", 1)
    graph = (Graph("g").input("x", "float32", (-1, 4))
             .model("a", "clf@champion", inputs={"input": "inputs.x"})
             .output("label", "a.label"))
    yard.create_endpoint("g", graph=graph)
    card = yard.readiness("g")
    assert card.result("arch.graph_valid").status == "pass"
    assert card.result("life.aliases").status == "pass"
    assert card.result("life.retraining").status == "na"  # a graph: per model
    # A new version with three inputs takes the alias: the stored graph no longer fits.
    narrow = LogisticRegression().fit(x[:, :3], label)
    yard.register("clf", narrow, sample=x[:5, :3], to_onnx=True)
    yard.set_alias("clf", "champion", 2)
    moved = yard.readiness("g").result("arch.graph_valid")
    assert moved.status == "fail" and "nodes.a" in moved.evidence, moved.evidence


def test_traffic_labels_rollback_and_signatures(yard: Yard, classifier: Any,
                                                tabular: Any) -> None:
    x, _, _ = tabular
    private, public = signing.generate_keypair()
    yard.create_project("secure", policy={"signatures_required": True,
                                          "trusted_keys": [public.decode()]})
    yard.register("clf", classifier, sample=x[:5], to_onnx=True, project="secure")
    second = yard.register("clf", classifier, sample=x[:5], to_onnx=True, data=x)
    yard.set_alias("clf", "prod", 2)
    yard.create_endpoint("s", "clf@prod")
    yard.set_monitor("s", {"slo": 0.99, "alerts": [{"name": "p99", "kind": "latency_p99",
                                                    "threshold": 50}]})
    statuses = [200] * 95 + [503] * 5  # 95% available against a 99% objective
    latencies = [float(v) for v in np.linspace(1, 100, 100)]
    _log(yard, "s", second.ref, statuses, latencies)
    card = yard.readiness("s")
    met = card.result("perf.slo_met")
    assert met.status == "fail" and "availability 95.0000%" in met.evidence, met.evidence
    assert "100 logged requests" in met.evidence
    assert card.result("life.feedback").status == "pass"
    assert "2 labels" in card.result("life.feedback").evidence
    # Its profile could not be computed (an unsigned version does not load to predict).
    unprofiled = card.result("life.monitor")
    assert unprofiled.status == "warn" and "clf:2 has no reference profile" in \
        unprofiled.evidence
    unsigned = card.result("gov.signatures")
    assert unsigned.status == "fail" and "clf:2" in unsigned.evidence
    yard.sign("clf", 2, private)
    assert yard.readiness("s").result("gov.signatures").status == "pass"
    assert yard.readiness("s").result("life.rollback").status == "pass"
    yard.archive("clf", 1)
    assert yard.readiness("s").result("life.rollback").status == "fail"


def test_key_prefixes_only_for_those_who_may_list_keys(yard: Yard) -> None:
    for i in range(3):
        yard.create_key(f"ops{i}", ["admin"])
    shown = yard.readiness().result("gov.least_privilege")
    assert shown.status == "warn" and "my_" in shown.evidence
    viewer = Principal("key:v:my_v", frozenset({"viewer"}))
    hidden = yard.readiness_service.scorecard(viewer).result("gov.least_privilege")
    assert hidden.status == "warn" and "my_" not in hidden.evidence
    assert "key #1" in hidden.evidence
