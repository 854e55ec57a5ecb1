"""Projects: role@project grants, four-eyes approvals and required signatures, over HTTP
with real keys; every refusal leaves the registry, the aliases and the audit chain intact."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import update

from modelyard import Client, Yard
from modelyard.governance import signing
from modelyard.serving.server import BackgroundServer
from modelyard.store.tables import ApprovalRow
from support import assert_problem

X = np.arange(8, dtype=np.float32).reshape(2, 4)
ECHO = "modelyard.testing.models:Echo"


class Team:
    """Keys of several people, each an HTTP client against the server."""

    def __init__(self, server: BackgroundServer, admin: Client) -> None:
        self.server, self.admin = server, admin
        self.http: dict[str, httpx.Client] = {}
        self.keys: dict[str, str] = {}

    def add(self, who: str, *roles: str, owner: str | None = None) -> httpx.Client:
        key = self.admin.create_key(owner or who, list(roles))["key"]
        self.keys[who] = key
        self.http[who] = httpx.Client(base_url=self.server.url, timeout=30,
                                      headers={"authorization": f"Bearer {key}"})
        return self.http[who]

    def sdk(self, who: str) -> Client:
        return Client(self.server.url, self.keys[who])

    def close(self) -> None:
        for http in self.http.values():
            http.close()


@pytest.fixture
def team(server: BackgroundServer, client: Client, yard: Yard) -> Iterator[Team]:
    client.create_project("fraud", "fraud detection")
    yard.register("echo", ECHO, flavor="python", trusted=True, sample=X, project="fraud")
    yard.register("other", ECHO, flavor="python", trusted=True, sample=X)
    t = Team(server, client)
    yield t
    t.close()


def chain_ok(yard: Yard) -> bool:
    return bool(yard.audit_verify()["ok"])


# -- scoped roles ----------------------------------------------------------------------------

def test_a_project_developer_works_in_their_project_only(team: Team, yard: Yard) -> None:
    dev = team.add("dana", "developer@fraud")
    assert [m["name"] for m in dev.get("/api/v1/models").json()] == ["echo"]
    assert dev.get("/api/v1/models/echo").status_code == 200
    assert_problem(dev.get("/api/v1/models/other"), 403, "forbidden")
    assert dev.put("/api/v1/models/echo/aliases/staging", json={"version": 1}).status_code == 200
    assert_problem(dev.put("/api/v1/models/other/aliases/staging", json={"version": 1}),
                   403, "forbidden")
    assert "staging" not in yard.model("other").aliases
    created = dev.post("/api/v1/endpoints", json={"name": "fraud-api", "model": "echo"})
    assert created.status_code == 201 and created.json()["project"] == "fraud"
    assert created.json()["auth"] == "key"  # the default: no anonymous access
    assert_problem(dev.post("/api/v1/endpoints", json={"name": "x", "model": "other"}),
                   403, "forbidden")
    assert [e["name"] for e in dev.get("/api/v1/endpoints").json()] == ["fraud-api"]
    assert chain_ok(yard)


def test_registration_goes_to_the_asked_project_and_never_moves(team: Team, yard: Yard,
                                                                 client: Client) -> None:
    sdk = team.sdk("dana") if team.add("dana", "developer@fraud") else None
    assert sdk is not None
    with sdk:
        v = sdk.register("scorer", ECHO, flavor="python", trusted=True, sample=X,
                         project="fraud")
        assert v["project"] == "fraud"
        with pytest.raises(Exception) as refused:  # not allowed in the default project
            sdk.register("elsewhere", ECHO, flavor="python", trusted=True, sample=X)
        assert getattr(refused.value, "status", None) == 403
    with pytest.raises(Exception) as moved:
        client.register("scorer", ECHO, flavor="python", trusted=True, sample=X,
                        project="default")
    assert getattr(moved.value, "field", None) == "project"
    with pytest.raises(Exception) as unknown:
        client.register("lost", ECHO, flavor="python", trusted=True, sample=X,
                        project="no-such-project")
    assert getattr(unknown.value, "code", None) == "project_not_found"
    assert [v.version for v in yard.versions("scorer")] == [1]
    assert "lost" not in [m.name for m in yard.models()]


def test_only_an_admin_makes_an_endpoint_public(team: Team, yard: Yard) -> None:
    dev = team.add("dana", "developer@fraud")
    team.add("fran", "admin@fraud")
    assert_problem(dev.post("/api/v1/endpoints", json={"name": "open", "model": "echo",
                                                        "auth": "public"}), 403, "forbidden")
    assert dev.post("/api/v1/endpoints", json={"name": "closed", "model": "echo"}
                    ).status_code == 201
    assert_problem(dev.patch("/api/v1/endpoints/closed", json={"auth": "public"}),
                   403, "forbidden")
    assert yard.endpoint("closed").auth == "key"
    made = team.http["fran"].patch("/api/v1/endpoints/closed", json={"auth": "public"})
    assert made.status_code == 200 and made.json()["auth"] == "public"


def test_predictor_keys_are_scoped_to_their_project(team: Team, client: Client) -> None:
    client.create_endpoint("fraud-api", "echo")
    client.create_endpoint("other-api", "other")
    client.wait_ready("fraud-api")
    client.wait_ready("other-api")
    caller = team.add("svc", "predictor@fraud")
    body = {"inputs": X.tolist()}
    assert caller.post("/endpoints/fraud-api/predict", json=body).status_code == 200
    assert_problem(caller.post("/endpoints/other-api/predict", json=body), 403, "forbidden")
    with httpx.Client(base_url=team.server.url) as anonymous:
        assert_problem(anonymous.post("/endpoints/fraud-api/predict", json=body), 401,
                       "unauthenticated")


def test_data_plane_refusals_reach_the_audit_chain(team: Team, client: Client, yard: Yard,
                                                   server: BackgroundServer) -> None:
    client.create_endpoint("other-api", "other")
    client.wait_ready("other-api")
    caller = team.add("svc", "predictor@fraud")
    for _ in range(3):
        caller.post("/endpoints/other-api/predict", json={"inputs": X.tolist()})
    server.server.config.app.state.backend.reconcile()  # refusals are flushed per reconcile
    denied = [r for r in yard.audit_records() if r["action"] == "predict"
              and r["outcome"] == "denied"]
    assert len(denied) == 1 and denied[0]["after"]["calls"] == 3
    assert denied[0]["target"] == "endpoint:other-api" and "svc" in denied[0]["actor"]
    assert chain_ok(yard)


def test_keys_carry_only_grants_their_creator_holds(team: Team) -> None:
    team.add("fran", "admin@fraud")
    fran = team.http["fran"]
    # keys are yard-wide administration: a project admin cannot create them at all
    assert_problem(fran.post("/api/v1/keys", json={"owner": "x", "roles": ["viewer@fraud"]}),
                   403, "forbidden")
    admin = team.admin
    with pytest.raises(Exception) as bad:
        admin.create_key("x", ["wizard@fraud"])
    assert getattr(bad.value, "field", None) == "roles"
    with pytest.raises(Exception) as bad_scope:
        admin.create_key("x", ["viewer@"])
    assert getattr(bad_scope.value, "field", None) == "roles"


def test_project_policy_changes_need_a_yard_wide_admin(team: Team, yard: Yard) -> None:
    fran = team.add("fran", "admin@fraud")
    assert_problem(fran.patch("/api/v1/projects/fraud",
                              json={"policy": {"approvals_required": 0}}), 403, "forbidden")
    assert_problem(team.admin._http.patch(
        "/api/v1/projects/fraud", json={"policy": {"approvals_required": 99}}),
        422, "validation_failed", "policy.approvals_required")
    assert_problem(team.admin._http.patch(
        "/api/v1/projects/fraud", json={"policy": {"approval_actions": ["keys:write"]}}),
        422, "validation_failed", "policy.approval_actions")
    assert_problem(team.admin._http.patch(
        "/api/v1/projects/fraud", json={"policy": {"surprise": 1}}),
        422, "validation_failed", "policy.surprise")
    assert yard.project("fraud").policy.approvals_required == 0
    assert chain_ok(yard)


# -- four-eyes approvals ---------------------------------------------------------------------

@pytest.fixture
def guarded(team: Team, client: Client) -> Team:
    client.update_project("fraud", policy={"approvals_required": 2, "card_required": []})
    team.add("dana", "developer@fraud")
    team.add("dana2", "approver@fraud", owner="dana")  # the same person, another key
    team.add("alex", "approver@fraud")
    team.add("blair", "approver")
    team.add("vic", "viewer@fraud")
    return team


def request_production(team: Team, version: int = 1) -> dict[str, Any]:
    asked = team.http["dana"].put("/api/v1/models/echo/aliases/production",
                                  json={"version": version})
    assert asked.status_code == 202, asked.text
    assert asked.headers["location"] == f"/api/v1/approvals/{asked.json()['id']}"
    return dict(asked.json())


def test_production_waits_for_two_other_approvers(guarded: Team, yard: Yard) -> None:
    pending = request_production(guarded)
    assert pending["status"] == "pending" and pending["required"] == 2
    assert "production" not in yard.model("echo").aliases
    url = f"/api/v1/approvals/{pending['id']}"
    # four eyes: the requester, under any key of theirs, cannot approve
    assert_problem(guarded.http["dana2"].post(url + "/approve"), 403, "self_approval")
    assert_problem(guarded.http["vic"].post(url + "/approve"), 403, "forbidden")
    one = guarded.http["alex"].post(url + "/approve", json={"comment": "metrics ok"})
    assert one.status_code == 200 and one.json()["status"] == "pending"
    assert_problem(guarded.http["alex"].post(url + "/approve"), 409, "conflict")
    assert "production" not in yard.model("echo").aliases
    two = guarded.http["blair"].post(url + "/approve")
    assert two.status_code == 200 and two.json()["status"] == "executed"
    assert two.json()["approvals"] == 2
    assert yard.model("echo").aliases["production"] == 1
    assert_problem(guarded.http["blair"].post(url + "/approve"), 409, "approval_closed")
    actions = [r["action"] for r in yard.audit_records()]
    for expected in ("approval.request", "approval.approve", "approval.execute", "alias.set"):
        assert expected in actions
    moved = [r for r in yard.audit_records() if r["action"] == "alias.set"]
    assert moved[-1]["actor"].startswith("key:dana:")  # executed as the requester's change
    assert chain_ok(yard)


def test_a_rejection_closes_the_request(guarded: Team, yard: Yard) -> None:
    pending = request_production(guarded)
    url = f"/api/v1/approvals/{pending['id']}"
    rejected = guarded.http["alex"].post(url + "/reject", json={"comment": "no card"})
    assert rejected.json()["status"] == "rejected"
    assert_problem(guarded.http["blair"].post(url + "/approve"), 409, "approval_closed")
    assert "production" not in yard.model("echo").aliases


def test_an_expired_request_cannot_be_approved(guarded: Team, yard: Yard) -> None:
    pending = request_production(guarded)
    with yard.db.transaction() as session:
        session.execute(update(ApprovalRow).where(ApprovalRow.id == pending["id"])
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    url = f"/api/v1/approvals/{pending['id']}"
    assert guarded.http["alex"].get(url).json()["status"] == "expired"
    assert_problem(guarded.http["alex"].post(url + "/approve"), 409, "approval_closed")
    assert_problem(guarded.http["blair"].post(url + "/approve"), 409, "approval_closed")
    assert "production" not in yard.model("echo").aliases
    assert any(r["action"] == "approval.expire" for r in yard.audit_records())
    assert chain_ok(yard)


def test_the_requester_can_cancel(guarded: Team, yard: Yard) -> None:
    pending = request_production(guarded)
    url = f"/api/v1/approvals/{pending['id']}"
    assert_problem(guarded.http["alex"].post(url + "/cancel"), 403, "self_approval")
    assert guarded.http["dana"].post(url + "/cancel").json()["status"] == "cancelled"
    assert_problem(guarded.http["alex"].post(url + "/approve"), 409, "approval_closed")


def test_the_last_approvals_racing_execute_exactly_once(guarded: Team, client: Client,
                                                        yard: Yard) -> None:
    client.update_project("fraud", policy={"approvals_required": 1})
    pending = request_production(guarded)
    url = f"/api/v1/approvals/{pending['id']}/approve"
    start = threading.Barrier(2)
    answers: dict[str, int] = {}

    def approve(who: str) -> None:
        start.wait()
        answers[who] = guarded.http[who].post(url).status_code

    threads = [threading.Thread(target=approve, args=(w,)) for w in ("alex", "blair")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers.values()) == [200, 409], answers
    moves = [e for e in yard.registry.alias_history(yard.principal, "echo")
             if e["alias"] == "production"]
    assert len(moves) == 1
    executions = [r for r in yard.audit_records() if r["action"] == "approval.execute"]
    assert len(executions) == 1 and chain_ok(yard)


def test_a_change_that_became_impossible_fails_without_effect(guarded: Team, client: Client,
                                                              yard: Yard) -> None:
    client.update_project("fraud", policy={"approvals_required": 1})
    yard.register("echo", ECHO, flavor="python", trusted=True, sample=X)  # version 2
    pending = request_production(guarded, version=2)
    yard.archive("echo", 2)  # meanwhile
    decided = guarded.http["alex"].post(f"/api/v1/approvals/{pending['id']}/approve").json()
    assert decided["status"] == "failed" and "archived" in decided["reason"]
    assert "production" not in yard.model("echo").aliases
    assert chain_ok(yard)


def test_endpoint_auth_changes_wait_for_approval(guarded: Team, client: Client,
                                                 yard: Yard) -> None:
    client.update_project("fraud", policy={"approvals_required": 1,
                                           "approval_actions": ["endpoint:auth"]})
    client.create_endpoint("fraud-api", "echo")
    asked = guarded.http["dana"].patch("/api/v1/endpoints/fraud-api",
                                       json={"auth": "jwt", "description": "now"})
    assert asked.status_code == 202 and asked.json()["action"] == "endpoint:auth"
    current = yard.endpoint("fraud-api")
    assert current.auth == "key" and current.description == "now"  # the rest applied
    done = guarded.http["alex"].post(f"/api/v1/approvals/{asked.json()['id']}/approve")
    assert done.json()["status"] == "executed"
    assert yard.endpoint("fraud-api").auth == "jwt"
    # production moves are not held back by this policy
    assert guarded.http["dana"].put("/api/v1/models/echo/aliases/production",
                                    json={"version": 1}).status_code == 200


def test_approvals_are_listed_per_project(guarded: Team) -> None:
    request_production(guarded)
    mine = guarded.http["vic"].get("/api/v1/approvals", params={"status": "pending"}).json()
    assert [a["target"] for a in mine] == ["echo@production"]
    guarded.admin.create_project("elsewhere")  # a grant names a project that exists
    outsider = guarded.add("olga", "viewer@elsewhere")
    assert outsider.get("/api/v1/approvals").json() == []
    assert_problem(outsider.get(f"/api/v1/approvals/{mine[0]['id']}"), 403, "forbidden")
    assert_problem(guarded.http["vic"].get("/api/v1/approvals", params={"status": "odd"}),
                   422, "validation_failed", "status")


# -- signatures ------------------------------------------------------------------------------

def _status(client: Client, name: str, until: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = dict(client.endpoint(name)["status"])
        if status["status"] == until or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_a_project_requiring_signatures_serves_only_signed_versions(
        team: Team, client: Client, yard: Yard, tmp_path: Any) -> None:
    private, public = signing.generate_keypair()
    stranger_private, _ = signing.generate_keypair()
    assert_problem(team.admin._http.patch(
        "/api/v1/projects/fraud", json={"policy": {"signatures_required": True}}),
        422, "validation_failed", "policy.trusted_keys")
    client.update_project("fraud", policy={"signatures_required": True,
                                           "trusted_keys": [public.decode()]})
    client.create_endpoint("fraud-api", "echo")
    failed = _status(client, "fraud-api", "failed")
    assert failed["status"] == "failed" and "signature" in failed["error"]
    with pytest.raises(Exception) as untrusted:
        client.sign("echo", 1, stranger_private)
    assert getattr(untrusted.value, "field", None) == "signature"
    forged = signing.sign(private, "other", yard.version("echo:1").artifact_digest)
    assert_problem(team.admin._http.post("/api/v1/models/echo/versions/1/signatures",
                                         json=forged), 422, "validation_failed", "signature")
    assert client.signatures("echo", 1) == []
    key_file = tmp_path / "signing.key"
    key_file.write_bytes(private)
    signed = client.sign("echo", 1, key_file)
    assert signed["key_id"] == signing.key_id(public)
    assert _status(client, "fraud-api", "ready")["status"] == "ready"
    assert any(r["action"] == "version.sign" for r in yard.audit_records())
    assert chain_ok(yard)


def test_revoking_the_requesters_key_withdraws_the_change(guarded: Team, client: Client,
                                                          yard: Yard) -> None:
    client.update_project("fraud", policy={"approvals_required": 1})
    pending = request_production(guarded)
    prefix = guarded.keys["dana"].partition(".")[0]
    client.revoke_key(prefix)
    decided = guarded.http["alex"].post(f"/api/v1/approvals/{pending['id']}/approve").json()
    assert decided["status"] == "failed" and "revoked" in decided["reason"]
    assert "production" not in yard.model("echo").aliases
    assert chain_ok(yard)
