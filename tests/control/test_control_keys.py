"""API keys over the real server: shown once, stored as a hash, roles enforced, rotation
and revocation take effect on the next request."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from modelyard import Client, Yard
from modelyard.control.keys import check_roles
from modelyard.domain.errors import Forbidden
from modelyard.governance.policy import Principal
from modelyard.serving.server import BackgroundServer
from support import API, assert_problem


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_a_viewer_key_reads_but_cannot_change(client: Client, server: BackgroundServer
                                              ) -> None:
    created = client.create_key("dashboard", ["viewer"])
    secret = created["key"]
    assert created["roles"] == ["viewer"] and secret.startswith(created["prefix"] + ".")
    with httpx.Client(base_url=server.url, headers=bearer(secret)) as viewer:
        assert viewer.get(f"{API}/models").status_code == 200
        r = viewer.post(f"{API}/endpoints", json={"name": "x", "model": "m"})
        assert_problem(r, 403, "forbidden")
        assert_problem(viewer.get(f"{API}/keys"), 403, "forbidden")
    listed = {k["prefix"]: k for k in client.list_keys()}
    assert created["prefix"] in listed
    assert "key" not in listed[created["prefix"]]
    assert all(secret not in str(k) for k in listed.values())


def test_only_the_hash_is_stored(client: Client, yard: Yard) -> None:
    secret = client.create_key("ci", ["developer"])["key"]
    with yard.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT prefix, key_hash FROM api_keys")).all()
    assert rows and all(secret not in (p + h) for p, h in rows)


def test_rotation_and_revocation_take_effect_at_once(client: Client, server: BackgroundServer
                                                     ) -> None:
    old = client.create_key("svc", ["operator"])
    rotated = client.rotate_key(old["prefix"])
    assert rotated["replaces"] == old["prefix"]
    assert (rotated["owner"], rotated["roles"]) == ("svc", ["operator"])
    with httpx.Client(base_url=server.url) as http:
        assert_problem(http.get(f"{API}/models", headers=bearer(old["key"])), 401,
                       "unauthenticated")
        assert http.get(f"{API}/models", headers=bearer(rotated["key"])).status_code == 200
        client.revoke_key(rotated["prefix"])
        assert_problem(http.get(f"{API}/models", headers=bearer(rotated["key"])), 401,
                       "unauthenticated")
    with pytest.raises(Exception) as again:
        client.rotate_key(rotated["prefix"])
    assert getattr(again.value, "status", None) == 409


def test_the_last_admin_key_cannot_be_revoked(client: Client) -> None:
    admins = [k for k in client.list_keys() if "admin" in k["roles"] and not k["revoked_at"]]
    assert len(admins) == 1
    with pytest.raises(Exception) as refused:
        client.revoke_key(admins[0]["prefix"])
    assert getattr(refused.value, "status", None) == 409
    second = client.create_key("backup-admin", ["admin"])
    client.revoke_key(admins[0]["prefix"])  # now allowed: another admin key exists
    with Client(client.url, second["key"]) as backup:
        assert backup.list_keys()


@pytest.mark.parametrize(("body", "field"), [
    ({"owner": "x", "roles": []}, "roles"),
    ({"owner": "x", "roles": ["root"]}, "roles"),
    ({"owner": "bad\nowner", "roles": ["viewer"]}, "owner"),
    ({"owner": "", "roles": ["viewer"]}, "owner"),
])
def test_bad_key_requests_name_the_field(api: httpx.Client, body: dict[str, object],
                                         field: str) -> None:
    before = api.get(f"{API}/keys").json()
    assert_problem(api.post(f"{API}/keys", json=body), 422, "validation_failed", field)
    assert api.get(f"{API}/keys").json() == before


def test_unknown_key_prefix_is_404(api: httpx.Client) -> None:
    assert_problem(api.delete(f"{API}/keys/my_000000000000"), 404, "key_not_found", "prefix")


def test_nobody_grants_roles_they_do_not_hold() -> None:
    developer = Principal("key:dev", frozenset({"developer"}))
    with pytest.raises(Forbidden):
        check_roles(developer, ["admin"])
    assert check_roles(developer, ["developer"]) == ["developer"]
    admin = Principal("key:root", frozenset({"admin"}))
    assert check_roles(admin, ["viewer", "predictor"]) == ["predictor", "viewer"]
