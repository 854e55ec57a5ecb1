"""Governance and security: who may call, who holds which keys, whether the audit chain
holds, and what a served version must carry (card, signature) and must not leak (PII)."""

from __future__ import annotations

from modelyard.readiness.checks import references as ref
from modelyard.readiness.checks.base import (
    Check,
    Finding,
    failed,
    not_applicable,
    passed,
    plural,
    warned,
)
from modelyard.readiness.evidence import EndpointFacts, Evidence, KeyFacts

MAX_ADMIN_KEYS = 2
STALE_KEY_DAYS = 90
ROTATE_KEY_DAYS = 365


def auth(_: Evidence, ep: EndpointFacts) -> Finding:
    if ep.auth == "public":
        return failed("auth is public: anyone who can reach the server may call it, with no "
                      "rate limit or quota per caller",
                      f"modelyard endpoints update {ep.name} --auth key (or jwt)")
    how = "an API key with the predictor role" if ep.auth == "key" else "an OIDC token"
    return passed(f"auth is {ep.auth}: every call needs {how} in project {ep.project!r}")


def _holds(key: KeyFacts, roles: set[str], project: str | None = None) -> bool:
    for grant in key.roles:
        role, _, scope = grant.partition("@")
        if role in roles and (not scope or scope == project):
            return True
    return False


def least_privilege(ev: Evidence) -> Finding:
    keys = ev.yard.keys
    if not keys:
        return not_applicable("no active API keys" + (" (OIDC tokens only)" if ev.yard.jwt
                                                      else ""))
    admins = [k for k in keys if _holds(k, {"admin"})]
    # Only control-plane calls record last use, so predictor-only keys are not judged stale.
    control = [k for k in keys if set(r.partition("@")[0] for r in k.roles) - {"predictor"}]
    stale = [k for k in control if (ev.now - (k.last_used_at or k.created_at)).days
             >= STALE_KEY_DAYS]
    old = [k for k in keys if (ev.now - k.created_at).days >= ROTATE_KEY_DAYS]
    problems, fixes = [], []
    if len(admins) > MAX_ADMIN_KEYS:
        problems.append(f"{len(admins)} admin keys ({', '.join(k.prefix for k in admins)})")
        fixes.append("give services and people the narrowest role (predictor, developer, "
                     "operator...), scoped to a project (role@project), and revoke spare "
                     "admin keys")
    if stale:
        problems.append(f"{plural(len(stale), 'key')} unused for {STALE_KEY_DAYS}+ days "
                        f"({', '.join(k.prefix for k in stale)})")
        fixes.append("revoke unused keys (modelyard keys revoke PREFIX)")
    if old:
        problems.append(f"{plural(len(old), 'key')} older than {ROTATE_KEY_DAYS} days "
                        f"({', '.join(k.prefix for k in old)})")
        fixes.append("rotate old keys (modelyard keys rotate PREFIX)")
    summary = f"{plural(len(keys), 'active key')}, {len(admins)} with admin"
    if problems:
        return warned(f"{summary}: {'; '.join(problems)}", "; ".join(fixes))
    return passed(f"{summary}; control-plane keys used within {STALE_KEY_DAYS} days; none "
                  f"older than {ROTATE_KEY_DAYS} days")


def audit_chain(ev: Evidence) -> Finding:
    audit = ev.yard.audit
    if not audit.ok:
        return failed(f"the audit chain does not verify: {audit.problem}",
                      "find out who changed the records (modelyard audit verify; restore "
                      "the audit_log table from a backup) and treat it as an incident")
    return passed(f"the audit chain verifies ({plural(audit.records, 'record')}, hash-linked)")


def approvals(ev: Evidence, ep: EndpointFacts) -> Finding:
    policy = ev.policy(ep.project)
    if policy.approvals_required == 0:
        return warned(f"project {ep.project!r} needs no approvals: one person can move "
                      "production and promote rollouts alone",
                      f"modelyard projects update {ep.project} --approvals 1 "
                      "--approval-actions alias:production,rollout:promote")
    needed = policy.approvals_required
    people = {k.owner.strip().lower() for k in ev.yard.keys
              if _holds(k, {"admin", "approver"}, ep.project)}
    actions = ", ".join(policy.approval_actions)
    if len(people) < needed:
        text = (f"{needed} approvals required ({actions}) but only "
                f"{plural(len(people), 'person', 'people')} with approver or admin keys")
        fix = "give more people the approver role in this project " \
              f"(modelyard keys create --owner NAME --role approver@{ep.project})"
        if ev.yard.jwt:
            return warned(text + " (OIDC users are not counted)", fix)
        return failed(text + ": held-back changes can never be approved", fix)
    return passed(f"{needed} approvals required for {actions}; "
                  f"{plural(len(people), 'person', 'people')} can approve")


def model_cards(ev: Evidence, ep: EndpointFacts) -> Finding:
    if not ep.versions:
        return not_applicable("no version is served yet")
    lacking = [f"{v.ref} lacks {', '.join(v.card_missing)}" for v in ep.versions
               if v.card_missing]
    if lacking:
        first = ep.versions[0].ref
        return failed(f"incomplete model cards: {'; '.join(lacking)}",
                      f"modelyard models card {first} --set intended_use=... --set "
                      "owners=... --set risk_level=... --set limitations=...")
    return passed(f"{plural(len(ep.versions), 'served version')} with complete cards "
                  "(the project's required fields)")


def redaction(_: Evidence, ep: EndpointFacts) -> Finding:
    if ep.log_sample <= 0:
        return passed("log_sample is 0: no payload is stored")
    text_inputs = sorted({s.name for v in ep.versions for s in v.signature.inputs
                          if s.dtype == "string"})
    detectors = ("payloads stored at log_sample "
                 f"{ep.log_sample:g} pass the PII detectors (e-mail, phone, card, IBAN, SSN, "
                 "IP)")
    if ep.redaction:
        rules = ", ".join(f"{k}: {v}" for k, v in sorted(ep.redaction.items()))
        return passed(f"{detectors} and field rules ({rules})")
    if text_inputs:
        return warned(f"{detectors}, but text inputs ({', '.join(text_inputs)}) have no "
                      "field rule: names and addresses in free text are not patterns the "
                      "detectors find",
                      f"modelyard endpoints update {ep.name} --redact "
                      f"{text_inputs[0]}=hash (or mask/drop), or lower log_sample")
    return passed(f"{detectors}; numeric inputs only")


def signatures(ev: Evidence, ep: EndpointFacts) -> Finding:
    if not ep.versions:
        return not_applicable("no version is served yet")
    policy = ev.policy(ep.project)
    if not policy.signatures_required:
        return warned(f"project {ep.project!r} does not require signed versions: any "
                      "artifact registered in it can be served",
                      f"modelyard projects update {ep.project} --require-signatures "
                      "--trust-key KEY.pub, then modelyard models sign REF --key KEY")
    unsigned = [v.ref for v in ep.versions if not v.signed]
    if unsigned:
        return failed(f"signatures are required but {', '.join(unsigned)} has none that "
                      "verifies with a trusted key (it will not load)",
                      f"modelyard models sign {unsigned[0]} --key KEY")
    return passed(f"signatures required; {plural(len(ep.versions), 'served version')} "
                  "signed by a trusted Ed25519 key")


CHECKS = (
    Check("gov.auth", "governance", "Authentication required", 3, ref.OWASP_API2,
          "require keys or tokens", "the endpoint's auth mode", endpoint=auth),
    Check("gov.least_privilege", "governance", "Keys least-privilege", 2, ref.NIST_AC6,
          "narrow, revoke and rotate keys", f"active keys: more than {MAX_ADMIN_KEYS} admin "
          f"keys, control-plane keys unused for {STALE_KEY_DAYS} days, keys older than "
          f"{ROTATE_KEY_DAYS} days", yard=least_privilege),
    Check("gov.audit", "governance", "Audit chain verifies", 3, ref.NIST_AU9,
          "investigate the broken record", "the audit chain walked from its first record",
          yard=audit_chain),
    Check("gov.approvals", "governance", "Four-eyes on production changes", 1, ref.NIST_AC5,
          "require approvals and name enough approvers", "the project's approvals policy "
          "and the people holding approver or admin keys there", endpoint=approvals),
    Check("gov.model_cards", "governance", "Model cards complete", 2, ref.MODEL_CARDS,
          "fill in the model cards", "served versions' cards against the project's (or the "
          "yard's) required fields", endpoint=model_cards),
    Check("gov.redaction", "governance", "PII redaction", 2, ref.DATA_5,
          "add field redaction rules", "log_sample, field rules, text inputs of the served "
          "versions", endpoint=redaction),
    Check("gov.signatures", "governance", "Signed versions required", 2, ref.SSDF_PS2,
          "require and add signatures", "the project's signatures_required and whether each "
          "served version's signature verifies with a trusted key", endpoint=signatures),
)
