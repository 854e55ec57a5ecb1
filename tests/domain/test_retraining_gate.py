"""The retraining gate and policy, pure: scores from labels and predictions, the verdict with
its numbers and reason, and policies validated field by field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelyard.domain.errors import ValidationFailed
from modelyard.domain.retraining import (
    Gate,
    RetrainPolicy,
    Scores,
    SliceRule,
    SliceScore,
    evaluate_gate,
    score,
    slice_groups,
)


def scores(value: float | None, metric: str = "accuracy", n: int = 200,
           slices: dict[str, float | None] | None = None, feature: str = "region",
           slice_n: int = 50) -> Scores:
    return Scores(metric, value, n, {}, tuple(SliceScore(feature, g, slice_n, v)
                                              for g, v in (slices or {}).items()))


def test_a_challenger_better_by_the_minimum_gain_passes() -> None:
    gate = Gate("accuracy", min_gain=0.02)
    result = evaluate_gate(scores(0.80), scores(0.83), gate)
    assert result.passed and result.gain == pytest.approx(0.03)
    assert result.reason.startswith("better: accuracy 0.83 vs champion 0.8")
    assert (result.champion, result.challenger, result.n) == (0.80, 0.83, 200)

    short = evaluate_gate(scores(0.80), scores(0.81), gate)
    assert not short.passed and short.gain == pytest.approx(0.01)
    assert short.reason.startswith("not better enough: accuracy 0.81 vs champion 0.8")
    assert "at least 0.02 needed" in short.reason
    worse = evaluate_gate(scores(0.80), scores(0.70), Gate("accuracy"))
    assert not worse.passed and worse.gain == pytest.approx(-0.10)
    equal = evaluate_gate(scores(0.80), scores(0.80), Gate("accuracy"))
    assert equal.passed  # min_gain 0: no worse is enough


def test_lower_is_better_metrics_and_relative_gains() -> None:
    gate = Gate("mae", min_gain=0.10, relative=True)
    assert not gate.higher_is_better
    better = evaluate_gate(scores(2.0, "mae"), scores(1.7, "mae"), gate)  # 15% lower
    assert better.passed and better.gain == pytest.approx(0.15)
    assert "lower is better" in better.reason and "+15.00%" in better.reason
    not_enough = evaluate_gate(scores(2.0, "mae"), scores(1.9, "mae"), gate)  # 5% lower
    assert not not_enough.passed and not_enough.gain == pytest.approx(0.05)
    higher = evaluate_gate(scores(2.0, "mae"), scores(2.5, "mae"), Gate("mae"))
    assert not higher.passed and higher.gain == pytest.approx(-0.5)


def test_a_slice_worse_than_allowed_fails_the_gate_however_good_overall() -> None:
    gate = Gate("accuracy", 0.01, slices=(SliceRule("region", max_drop=0.05, min_rows=20),))
    champion = scores(0.80, slices={"north": 0.90, "south": 0.70, "tiny": 0.9})
    challenger = Scores("accuracy", 0.86, 200, {}, (
        SliceScore("region", "north", 50, 0.80),  # 0.10 worse: over 0.05
        SliceScore("region", "south", 50, 0.92),
        SliceScore("region", "tiny", 5, 0.0)))  # too small to judge
    result = evaluate_gate(champion, challenger, gate)
    assert not result.passed
    assert result.reason.startswith("worse on 1 slice group(s), e.g. region=north: "
                                    "accuracy 0.8 vs champion 0.9 (drop 0.1 > 0.05, n=50)")
    verdicts = {v.group: (v.status, v.drop) for v in result.slices}
    assert verdicts["north"][0] == "fail" and verdicts["north"][1] == pytest.approx(0.10)
    assert verdicts["south"][0] == "pass" and verdicts["south"][1] == pytest.approx(-0.22)
    assert verdicts["tiny"] == ("too_small", None)

    loose = Gate("accuracy", 0.01, slices=(SliceRule("region", max_drop=0.15),))
    passed = evaluate_gate(champion, challenger, loose)
    assert passed.passed and "no slice group worse than allowed (3 checked)" in passed.reason
    assert passed.to_dict()["slices"][0]["status"] == "pass"


def test_without_a_champion_and_with_undefined_values() -> None:
    alone = evaluate_gate(None, scores(0.7), Gate("accuracy", 0.5))
    assert alone.passed and alone.champion is None
    assert alone.reason.startswith("no champion to compare with")
    undefined = evaluate_gate(scores(0.8, "roc_auc"), scores(None, "roc_auc"), Gate("roc_auc"))
    assert not undefined.passed and "undefined" in undefined.reason
    with pytest.raises(ValidationFailed):
        evaluate_gate(scores(0.8), scores(0.9, "f1_macro"), Gate("accuracy"))


def test_score_computes_the_metric_overall_and_per_slice_group() -> None:
    y = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    pred = np.array([0, 1, 1, 1, 1, 0, 0, 0])
    region = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    gate = Gate("accuracy", slices=(SliceRule("region"),))
    result = score(gate, y, pred, None, {"region": region})
    assert result.value == pytest.approx(6 / 8) and result.n == 8
    assert result.report["main_metric"] == "accuracy" and result.report["interval"]
    assert [(s.group, s.n, s.value) for s in result.slices] == [("0", 4, 0.75), ("1", 4, 0.75)]
    assert Scores.from_dict(result.to_dict()) == result
    with pytest.raises(ValidationFailed) as missing:
        score(Gate("accuracy", slices=(SliceRule("age"),)), y, pred, None, {"region": region})
    assert missing.value.field == "gate.slices"

    target = np.array([1.0, 2.0, 3.0, 4.0])
    regression = score(Gate("rmse"), target, target + np.array([0.0, 0.0, 0.0, 2.0]))
    assert regression.value == pytest.approx(1.0)


def test_numeric_slices_are_quantile_bins() -> None:
    values = np.arange(100, dtype=np.float64)
    groups = slice_groups(values)
    assert len(groups) == 4 and sum(int(m.sum()) for _, m in groups) == 100
    assert groups[0][0] == "[0, 24.75)" and groups[-1][0].endswith("]")
    assert [g for g, _ in slice_groups(np.array(["b", "a", "b"], dtype=object))] == ["a", "b"]


def valid(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"endpoint": "churn", "entrypoint": "training.churn:train",
                           "trusted": True, "data": {"inference_log": {"since": "7d"}}}
    doc.update(changes)
    return doc


def test_policy_round_trip_and_defaults() -> None:
    policy = RetrainPolicy.from_dict(valid(gate={"metric": "rmse", "min_gain": "2%",
                                                 "slices": [{"feature": "age"}]},
                                           triggers={"schedule": "0 3 * * 1"}), "churn")
    assert policy.model == "churn" and policy.gate.relative and policy.gate.min_gain == 0.02
    assert not policy.gate.higher_is_better and policy.gate.task == "regression"
    assert policy.data.inference_log is not None and policy.data.inference_log.since_s == 7 * 86400
    assert policy.triggers.allows("schedule") and not policy.triggers.allows("drift")
    assert policy.triggers.allows("manual")
    again = RetrainPolicy.from_dict(policy.to_dict())
    assert again == policy
    # The canary judges health, not divergence from the champion, unless the policy asks.
    assert policy.rollout_spec("churn:4") == {"strategy": "canary", "target": "churn:4",
                                              "analysis": {"max_divergence": None}}
    asked = RetrainPolicy.from_dict({**policy.to_dict(), "rollout": {
        "strategy": "canary", "analysis": {"max_divergence": 0.3}}})
    assert asked.rollout_spec("churn:4")["analysis"] == {"max_divergence": 0.3}


@pytest.mark.parametrize(("changes", "field"), [
    ({"trusted": False}, "trusted"),
    ({"entrypoint": "training.churn"}, "entrypoint"),
    ({"entrypoint": "os:_exit"}, "entrypoint"),
    ({"data": {}}, "data"),
    ({"data": {"inference_log": {"since": "yesterday"}}}, "data.inference_log.since"),
    ({"data": {"inference_log": {"min_labels": 0}}}, "data.inference_log.min_labels"),
    ({"data": {"dataset_url": "relative/path.csv"}}, "data.dataset_url"),
    ({"holdout": {"share": 0.9}}, "holdout.share"),
    ({"gate": {"metric": "mape"}}, "gate.metric"),
    ({"gate": {"min_gain": "two"}}, "gate.min_gain"),
    ({"gate": {"metric": "mae", "higher_is_better": True}}, "gate.higher_is_better"),
    ({"gate": {"slices": [{"feature": "age", "max_drop": -1}]}}, "gate.slices[0].max_drop"),
    ({"gate": {"slices": [{"max_drop": 0.1}]}}, "gate.slices[0].feature"),
    ({"triggers": {"schedule": "every day"}}, "triggers.schedule"),
    ({"triggers": {"on_drift": "yes"}}, "triggers.on_drift"),
    ({"rollout": {"strategy": "shadow"}}, "rollout.strategy"),
    ({"rollout": {"target": "churn:3"}}, "rollout.target"),
    ({"rollout": {"steps": [{"weight": 150}]}}, "rollout.steps[0].weight"),
    ({"surprise": 1}, "policy.surprise"),
    ({"model": "other"}, "model"),
])
def test_policy_errors_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        RetrainPolicy.from_dict(valid(**changes), "churn")
    assert refused.value.field == field, refused.value.detail
