"""Governance and security checks over hand-built evidence."""

from __future__ import annotations

from datetime import timedelta

from evidence_support import GOOD_POLICY, NOW, endpoint, evidence, version, yard

from modelyard.domain.projects import ProjectPolicy
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.readiness.checks import governance as gov
from modelyard.readiness.evidence import AuditFacts, KeyFacts


def test_auth() -> None:
    assert gov.auth(evidence(), endpoint()).status == "pass"
    public = gov.auth(evidence(), endpoint(auth="public"))
    assert public.status == "fail" and public.fix is not None and "--auth key" in public.fix


def _key(prefix: str, roles: tuple[str, ...], age_days: int = 10,
         used_days_ago: int | None = 1, owner: str = "someone") -> KeyFacts:
    return KeyFacts(prefix, owner, roles, NOW - timedelta(days=age_days),
                    None if used_days_ago is None else NOW - timedelta(days=used_days_ago))


def test_least_privilege() -> None:
    assert gov.least_privilege(evidence()).status == "pass"
    admins = tuple(_key(f"my_a{i}", ("admin",)) for i in range(3))
    many = gov.least_privilege(evidence(keys=admins))
    assert many.status == "warn" and "3 admin keys" in many.evidence
    stale = gov.least_privilege(evidence(keys=(_key("my_old", ("developer",), 200, 120),)))
    assert stale.status == "warn" and "unused for 90+ days (my_old)" in stale.evidence
    # Data-plane use records no last use, so a predictor key is not called stale.
    predictor = gov.least_privilege(evidence(keys=(_key("my_p", ("predictor",), 100, None),)))
    assert predictor.status == "pass"
    old = gov.least_privilege(evidence(keys=(_key("my_p", ("predictor",), 400, None),)))
    assert old.status == "warn" and "older than 365 days" in old.evidence
    assert gov.least_privilege(evidence(keys=())).status == "na"


def test_audit_chain() -> None:
    assert gov.audit_chain(evidence()).status == "pass"
    broken = gov.audit_chain(evidence(audit=AuditFacts(False, 40, "record 7 was altered")))
    assert broken.status == "fail" and "record 7 was altered" in broken.evidence


def test_approvals() -> None:
    assert gov.approvals(evidence(), endpoint()).status == "pass"
    assert gov.approvals(evidence(policy=ProjectPolicy()), endpoint()).status == "warn"
    three = ProjectPolicy(approvals_required=3)
    short = gov.approvals(evidence(policy=three), endpoint())  # ops (admin), ana (approver)
    assert short.status == "fail" and "only 2 people" in short.evidence
    scoped = (_key("my_x", ("approver@default",), owner="bo"),
              _key("my_y", ("approver@other",), owner="cy"), *yard().keys)
    assert gov.approvals(evidence(policy=three, keys=scoped), endpoint()).status == "pass"
    other_only = (_key("my_y", ("approver@other",), owner="cy"), *yard().keys)
    assert gov.approvals(evidence(policy=three, keys=other_only), endpoint()
                         ).status == "fail"
    with_oidc = gov.approvals(evidence(policy=three, jwt=True), endpoint())
    assert with_oidc.status == "warn" and "OIDC" in with_oidc.evidence


def test_model_cards() -> None:
    assert gov.model_cards(evidence(), endpoint()).status == "pass"
    lacking = endpoint(versions=(version(card_missing=("owners", "risk_level")),))
    found = gov.model_cards(evidence(), lacking)
    assert found.status == "fail" and "churn:2 lacks owners, risk_level" in found.evidence


def test_redaction() -> None:
    ev = evidence()
    assert gov.redaction(ev, endpoint()).status == "pass"  # numeric inputs only
    text = version(signature=Signature(inputs=(TensorSpec("ticket", "string", (-1,)),),
                                       outputs=(TensorSpec("label", "int64", (-1,)),)))
    bare = gov.redaction(ev, endpoint(versions=(text,)))
    assert bare.status == "warn" and "ticket" in bare.evidence
    assert gov.redaction(ev, endpoint(versions=(text,), redaction={"ticket": "hash"})
                         ).status == "pass"
    assert gov.redaction(ev, endpoint(versions=(text,), log_sample=0.0)).status == "pass"


def test_signatures() -> None:
    signed = endpoint(versions=(version(signed=True),))
    assert gov.signatures(evidence(policy=GOOD_POLICY), signed).status == "pass"
    unsigned = gov.signatures(evidence(policy=GOOD_POLICY),
                              endpoint(versions=(version(signed=False),)))
    assert unsigned.status == "fail" and "churn:2" in unsigned.evidence
    assert gov.signatures(evidence(policy=ProjectPolicy()), signed).status == "warn"
