"""Scores add up from the checks: weights, n/a left out, round trips, renderers, the doc."""

from __future__ import annotations

import json
from pathlib import Path

from evidence_support import NOW, endpoint, evidence, version
from rich.console import Console

from modelyard.readiness import CHECKS, doc
from modelyard.readiness.checks import AREAS, CheckResult
from modelyard.readiness.render import html_scorecard, rich_scorecard, rich_summary
from modelyard.readiness.scorecard import Scorecard, build, score

ROOT = Path(__file__).resolve().parents[2]


def _result(area: str, status: str, points: float, most: int = 2) -> CheckResult:
    return CheckResult(f"{area}.x{status}{points}", area, "t", "yard", status,  # type: ignore[arg-type]
                       points, most, "e", "", "r")


def test_points_and_areas_are_explained() -> None:
    results = [_result("architecture", "pass", 2), _result("architecture", "warn", 1),
               _result("architecture", "na", 0, most=5), _result("governance", "fail", 0)]
    card = score(results, None, NOW)
    arch = card.area("architecture")
    assert (arch.points, arch.max_points, arch.score) == (3, 4, 75.0)  # n/a left out
    assert arch.counts == {"pass": 1, "warn": 1, "fail": 0, "na": 1}
    assert card.area("governance").score == 0.0
    assert card.area("lifecycle").score is None  # nothing graded
    assert card.score == 37.5 and card.weakest == "governance"  # mean of 75 and 0


def test_a_good_yard_scores_full_and_a_poor_one_low() -> None:
    good = build(evidence())
    assert good.score == 100.0
    poor_endpoint = endpoint(auth="public", model_ref="churn", monitor=None, loadtests=(),
                             rollouts=(), traffic=None, labels=0, retrain_policy=False,
                             versions=(version(card_missing=("owners",), signed=False),))
    poor = build(evidence(poor_endpoint, grpc_port=0, database="sqlite"))
    assert poor.score is not None and poor.score < 70
    assert poor.result("gov.auth", "endpoint:churn").status == "fail"
    assert {r.id for r in poor.failing()} >= {"gov.auth", "life.aliases", "life.monitor",
                                              "perf.loadtest", "gov.model_cards"}
    # Endpoint checks run per endpoint, yard checks once.
    two = build(evidence(endpoint(), endpoint(name="ltv")))
    assert len([r for r in two.results if r.id == "gov.audit"]) == 1
    assert len([r for r in two.results if r.id == "gov.auth"]) == 2


def test_every_check_is_cited_and_every_area_has_checks() -> None:
    assert {c.area for c in CHECKS} == set(AREAS)
    for check in CHECKS:
        assert check.reference and check.fix and check.evidence, check.id


def test_json_round_trip() -> None:
    card = build(evidence(endpoint(auth="public")))
    data = json.loads(json.dumps(card.to_dict()))
    again = Scorecard.from_dict(data)
    assert again == card


def test_renderers_show_every_check_and_escape() -> None:
    card = build(evidence(endpoint(name="x<script>", auth="public")))
    page = html_scorecard(card)
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page
    assert "x&lt;script&gt;" in page and "http" not in page.split("<body>")[0]
    for check in CHECKS:
        assert check.id in page
    console = Console(record=True, width=140)
    console.print(rich_scorecard(card))
    text = console.export_text()
    assert "gov.auth" in text and "FAIL" in text and "fix:" in text
    console = Console(record=True, width=140)
    console.print(rich_scorecard(card, show_passed=False))
    assert "gov.audit" not in console.export_text()
    console = Console(record=True, width=140)
    console.print(rich_summary(card))
    summary = console.export_text()
    assert "Governance & security" in summary and "gov.auth" not in summary


def test_docs_page_is_up_to_date() -> None:
    page = ROOT / "docs" / "readiness.md"
    assert page.read_text() == doc.render(), \
        "docs/readiness.md is stale: run python -m modelyard.readiness.doc"
    for check in CHECKS:
        assert f"`{check.id}`" in page.read_text()
