"""The scorecard end to end on the real server: a poor endpoint made good scores higher
(through the REST API, the SDK and the CLI, whose --min-score gates CI), load tests are
recorded by ``modelyard loadtest``, and the routes are decided by the policy function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.readiness import Scorecard, scorecard_for
from modelyard.serving.server import BackgroundServer
from support import API, assert_problem

runner = CliRunner()
GOOD_MONITOR = {"slo": 0.99, "alerts": [{"name": "p99", "kind": "latency_p99",
                                         "threshold": 5000}]}
CARD = {"intended_use": "churn triage", "owners": ["ana"], "risk_level": "limited",
        "limitations": "synthetic data"}


def cli(server: BackgroundServer, key: str, *args: str) -> Any:
    return runner.invoke(app, ["--url", server.url, "--key", key, *args])


def test_a_poor_endpoint_made_good_scores_higher(
        yard: Yard, server: BackgroundServer, client: Client, admin_key: str,
        classifier: Any, tabular: Any, tmp_path: Path) -> None:
    x, _, _ = tabular
    # Poor: no card, no lineage beyond the data, public, following the latest version,
    # one replica, no monitor, no load test.
    yard.register("churn", classifier, sample=x[:5], to_onnx=True)
    yard.create_endpoint("churn", "churn", auth="public", deployment={"replicas": 1})
    before = scorecard_for(client, "churn")
    assert before.scope == "churn" and before.score is not None
    assert before.result("gov.auth").status == "fail"
    assert before.result("life.aliases").status == "fail"
    assert before.result("life.monitor").status == "fail"
    assert before.result("perf.loadtest").status == "fail"
    assert before.result("gov.model_cards").status == "fail"
    assert before.result("perf.slo_met").status == "na"  # no objective: nothing invented
    gate = before.score + 10
    unknown = cli(server, admin_key, "loadtest", "nope", "--duration", "1")
    assert unknown.exit_code == 1 and "endpoint_not_found" in unknown.output
    failed = cli(server, admin_key, "readiness", "churn", "--min-score", f"{gate:g}")
    assert failed.exit_code == 1, failed.output
    assert f"below the minimum {gate:g}" in failed.output

    # Good: a new version with lineage, a profile and a card behind an alias, key auth,
    # two replicas, a monitor with objectives, a recorded load test, four-eyes approvals.
    v2 = yard.register("churn", classifier, sample=x[:5], to_onnx=True, data=x,
                       code_revision="abc123", params={"C": 1.0}, metrics={"auc": 0.91})
    yard.update_card("churn", v2.version, **CARD)
    yard.set_alias("churn", "champion", v2.version)
    yard.update_endpoint("churn", model="churn@champion", auth="key",
                         deployment={"replicas": 2})
    yard.set_monitor("churn", GOOD_MONITOR)
    client.wait_ready("churn")
    loaded = cli(server, admin_key, "loadtest", "churn", "--duration", "1",
                 "--concurrency", "2")
    assert loaded.exit_code == 0, loaded.output
    assert "recorded as load test" in loaded.output and "p99" in loaded.output
    recorded = client.loadtests("churn")
    assert len(recorded) == 1 and recorded[0]["requests"] > 0
    assert recorded[0]["errors"] == 0, recorded[0]
    yard.update_project("default", policy={"approvals_required": 1})

    after = scorecard_for(client, "churn")
    assert after.score is not None and after.score >= gate, (before.score, after.score)
    for check in ("gov.auth", "life.aliases", "life.monitor", "perf.loadtest",
                  "gov.model_cards", "perf.slo_defined", "deploy.replicas", "life.lineage",
                  "gov.approvals", "life.rollback"):
        assert after.result(check).status == "pass", after.result(check)
    passed = cli(server, admin_key, "readiness", "churn", "--min-score", f"{gate:g}")
    assert passed.exit_code == 0, passed.output
    assert "Readiness of endpoint churn" in passed.output

    # The same scorecard in-process, as JSON, and as a self-contained HTML page.
    local = scorecard_for(yard, "churn")
    assert isinstance(local, Scorecard) and local.score == after.score
    as_json = cli(server, admin_key, "readiness", "churn", "--json")
    assert json.loads(as_json.output)["score"] == after.score
    page = tmp_path / "readiness.html"
    written = cli(server, admin_key, "readiness", "--html", str(page), "--failing")
    assert written.exit_code == 0, written.output
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "perf.loadtest" in text
    assert "src=" not in text and "href=" not in text  # no external assets


def test_routes_follow_the_policy(yard: Yard, server: BackgroundServer, admin_key: str,
                                  classifier: Any, tabular: Any) -> None:
    x, _, _ = tabular
    yard.register("churn", classifier, sample=x[:5], to_onnx=True)
    yard.create_endpoint("churn", "churn")
    keys = {role: yard.create_key(role, [role])["key"]
            for role in ("viewer", "predictor", "developer")}
    body = {"duration_s": 5.0, "concurrency": 2, "requests": 50, "errors": 0, "p50_ms": 1.0,
            "p99_ms": 3.0, "throughput": 10.0, "target": f"{server.url}/v2/models/churn/infer"}
    with httpx.Client(base_url=server.url) as http:
        assert_problem(http.get(f"{API}/readiness"), 401, "unauthenticated")
        assert_problem(http.get(f"{API}/readiness/churn"), 401, "unauthenticated")

        def auth(role: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys[role]}"}

        seen = http.get(f"{API}/readiness", headers=auth("viewer"))
        assert seen.status_code == 200, seen.text
        card = Scorecard.from_dict(seen.json())
        assert card.scope is None and any(r.subject == "endpoint:churn" for r in card.results)
        assert http.get(f"{API}/readiness/churn", headers=auth("viewer")).status_code == 200
        assert_problem(http.get(f"{API}/readiness/churn", headers=auth("predictor")), 403,
                       "forbidden")
        assert_problem(http.get(f"{API}/readiness/nope", headers=auth("viewer")), 404,
                       "endpoint_not_found", "endpoint")

        url = f"{API}/endpoints/churn/loadtests"
        assert_problem(http.post(url, json=body, headers=auth("viewer")), 403, "forbidden")
        assert_problem(http.post(url, json={**body, "errors": 60}, headers=auth("developer")),
                       422, "validation_failed", "errors")
        assert_problem(http.post(url, content=b"{", headers={
            **auth("developer"), "Content-Type": "application/json"}), 400, "invalid_json")
        made = http.post(url, json=body, headers=auth("developer"))
        assert made.status_code == 201, made.text
        assert made.json()["generation"] == 1 and made.json()["error_rate"] == 0.0
        listed = http.get(url, headers=auth("viewer")).json()
        assert [t["id"] for t in listed] == [made.json()["id"]]
    # The record went to the audit chain with the row, and the chain still verifies.
    records = yard.audit_records()
    assert any(r["action"] == "loadtest.record" for r in records)
    assert yard.audit_verify()["ok"]


def test_a_yard_without_endpoints_grades_only_the_yard(yard: Yard) -> None:
    card = yard.readiness()
    assert {r.subject for r in card.results} == {"yard"}
    assert card.result("gov.audit").status == "pass"
    assert np.isfinite(card.score or 0.0)


def test_cli_in_process_reads_the_yard(tmp_path: Path) -> None:
    home = tmp_path / "yard"
    assert runner.invoke(app, ["--yard", str(home), "init"]).exit_code == 0
    shown = runner.invoke(app, ["--yard", str(home), "--json", "readiness"])
    assert shown.exit_code == 0, shown.output
    card = Scorecard.from_dict(json.loads(shown.output))
    assert card.result("gov.audit").status == "pass"
    assert card.result("deploy.scale_out").status == "warn"  # SQLite and a local folder
    gated = runner.invoke(app, ["--yard", str(home), "readiness", "--min-score", "100"])
    assert gated.exit_code == 1 and "below the minimum 100" in gated.output
