"""The audit chain hashes what the store keeps: values the JSON column changes on the way
(NaN becomes null) no longer make a valid record look altered. Lineage metrics must be
finite numbers, and the outbound guard can judge a URL whose name does not resolve yet."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard import Yard
from modelyard.domain.errors import ValidationFailed
from modelyard.governance.outbound import OutboundRefused, check_url
from modelyard.governance.redaction import redact_text


def test_params_the_store_rewrites_keep_the_audit_chain_valid(
        yard: Yard, classifier: object, tabular: tuple[np.ndarray, ...]) -> None:
    # e.g. SimpleImputer().get_params(): missing_values=nan
    yard.register("churn", classifier, sample=tabular[0][:3],
                  params={"missing_values": float("nan"), "ids": np.arange(3)})
    assert yard.audit_verify()["ok"], yard.audit_verify()
    record = yard.audit_records()[-1]
    assert record["after"]["lineage"]["params"] == {"missing_values": None, "ids": [0, 1, 2]}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "high", True])
def test_a_metric_that_is_not_a_finite_number_is_refused(
        yard: Yard, classifier: object, tabular: tuple[np.ndarray, ...], value: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        yard.register("churn", classifier, sample=tabular[0][:3],
                      metrics={"auc": 0.9, "acc": value})
    assert caught.value.field == "metrics.acc"
    assert yard.audit_records() == []
    assert yard.audit_verify()["ok"]


def test_a_name_that_does_not_resolve_passes_only_when_asked() -> None:
    url = "https://alerts.example.invalid/hook"
    with pytest.raises(OutboundRefused):
        check_url(url)
    assert check_url(url, unresolved_ok=True).addresses == ()
    with pytest.raises(OutboundRefused):  # numeric hosts always resolve, so always judged
        check_url("http://0x7f.1/", unresolved_ok=True)


@pytest.mark.timeout(120)  # the old e-mail pattern was quadratic: this took hours
def test_redaction_is_linear_in_long_runs_of_text() -> None:
    tail = " write to john.doe+x@mail.example.com"
    for run in ("d" * 2_000_000, "a@" * 500_000, "a@" + "a." * 500_000, "x1-" * 400_000):
        assert redact_text(run + tail).endswith(" write to [EMAIL]")
