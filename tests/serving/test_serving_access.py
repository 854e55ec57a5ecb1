"""Per-endpoint data-plane access: public endpoints answer anyone; key endpoints need an API
key whose roles allow predict, on the plain route, OIP infer and model metadata alike; a
revoked key stops at once when revoked through this server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard import Client, Yard
from modelyard.serving.server import BackgroundServer
from support import assert_problem

X = np.arange(8, dtype=np.float32).reshape(2, 4)
BODY = {"inputs": X.tolist()}
OIP = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                   "data": X.reshape(-1).tolist()}]}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def served(yard: Yard, server: BackgroundServer, client: Client) -> Iterator[httpx.Client]:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    client.create_endpoint("open", "echo", auth="public")
    client.create_endpoint("closed", "echo", auth="key")
    client.wait_ready("open")
    client.wait_ready("closed")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_public_endpoints_need_nothing(served: httpx.Client) -> None:
    assert served.post("/endpoints/open/predict", json=BODY).status_code == 200


def test_key_endpoints_refuse_without_a_good_key(served: httpx.Client) -> None:
    r = served.post("/endpoints/closed/predict", json=BODY)
    assert_problem(r, 401, "unauthenticated", "authorization")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(served.post("/v2/models/closed/infer", json=OIP), 401, "unauthenticated")
    assert_problem(served.get("/v2/models/closed"), 401, "unauthenticated")
    bad = served.post("/endpoints/closed/predict", json=BODY,
                      headers=auth("my_000000000000.wrong"))
    assert_problem(bad, 401, "unauthenticated")


def test_predictor_keys_call_and_other_roles_are_refused(served: httpx.Client,
                                                         client: Client) -> None:
    created = client.create_key("app", ["predictor"])
    predictor = created["key"]
    for path, body in (("/endpoints/closed/predict", BODY), ("/v2/models/closed/infer", OIP)):
        assert served.post(path, json=body, headers=auth(predictor)).status_code == 200
    assert served.get("/v2/models/closed", headers=auth(predictor)).status_code == 200
    operator = client.create_key("ops", ["operator"])["key"]  # read roles may predict too
    r = served.post("/endpoints/closed/predict", json=BODY, headers=auth(operator))
    assert r.status_code == 200
    client.revoke_key(created["prefix"])
    assert_problem(served.post("/endpoints/closed/predict", json=BODY,
                               headers=auth(predictor)), 401, "unauthenticated")


def test_auth_mode_is_validated_and_changeable(served: httpx.Client, client: Client) -> None:
    with pytest.raises(Exception) as bad:
        client.create_endpoint("x", "echo", auth="password")
    assert getattr(bad.value, "field", None) == "auth"
    client.update_endpoint("closed", auth="public")
    client.wait_ready("closed")
    assert served.post("/endpoints/closed/predict", json=BODY).status_code == 200


def test_jwt_endpoints_refuse_when_no_jwks_is_configured(served: httpx.Client,
                                                         client: Client) -> None:
    client.create_endpoint("tokens", "echo", auth="jwt")
    client.wait_ready("tokens")
    r = served.post("/endpoints/tokens/predict", json=BODY, headers=auth("eyJ.x.y"))
    assert_problem(r, 401, "unauthenticated")


def test_rate_limit_and_daily_quota_answer_429_and_survive_a_restart(
        served: httpx.Client, client: Client, yard: Yard, server: BackgroundServer) -> None:
    limited = client.create_key("burst", ["predictor"], rate_per_s=1)["key"]
    codes = [served.post("/endpoints/closed/predict", json=BODY, headers=auth(limited))
             for _ in range(4)]
    assert codes[0].status_code == 200
    refused = next(r for r in codes if r.status_code == 429)
    assert_problem(refused, 429, "rate_limited", "authorization")
    assert int(refused.headers["retry-after"]) >= 1

    quota = client.create_key("trial", ["predictor"], daily_quota=2)
    for _ in range(2):
        assert served.post("/endpoints/closed/predict", json=BODY,
                           headers=auth(quota["key"])).status_code == 200
    over = served.post("/endpoints/closed/predict", json=BODY, headers=auth(quota["key"]))
    assert_problem(over, 429, "quota_exceeded")
    # The count is in the store: a fresh access snapshot (as after a restart) still refuses.
    from modelyard.serving.access import DataPlaneAccess

    server.server.config.app.state.backend.reconcile()  # a reconcile flushes the counts
    restarted = DataPlaneAccess(yard.db, None)
    restarted.refresh()
    with pytest.raises(Exception) as again:
        restarted.check(yard.endpoint("closed"), f"Bearer {quota['key']}".encode())
    assert getattr(again.value, "code", None) == "quota_exceeded"
