"""Fixtures for the control-plane tests.

Read-only tests share, per module and per database, one yard with ``churn:1`` (alias
``champion``) served by endpoint ``churn`` on the real server. Tests that change state use
the function-scoped ``server`` of tests/conftest.py through ``api`` / ``anon``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from control_support import Shared
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings

PG_URL = os.environ.get("MODELYARD_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_settings(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Like tests/conftest.py's ``database_url`` + ``settings``, once per module."""
    home = tmp_path_factory.mktemp("yard")
    if request.param == "sqlite":
        yield Settings.load(home, env={}, database_url=f"sqlite:///{home / 'yard.db'}")
        return
    try:
        import psycopg

        plain = PG_URL.replace("+psycopg", "")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(plain, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # same policy as tests/conftest.py
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable: {exc}")
    try:
        yield Settings.load(home, env={},
                            database_url=f"{PG_URL}?options=-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def shared(shared_settings: Settings, classifier: LogisticRegression,
           tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Iterator[Shared]:
    yard, key = Yard.init(settings=shared_settings)
    assert key is not None
    try:
        yard.register("churn", classifier, sample=tabular[0][:5], tags={"team": "risk"})
        yard.set_alias("churn", "champion", 1)
        yard.create_endpoint("churn", "churn@champion")
        with BackgroundServer(yard) as srv:
            yield Shared(shared_settings, yard, key, srv)
    finally:
        yard.close()


@pytest.fixture(scope="module")
def shared_api(shared: Shared) -> Iterator[httpx.Client]:
    """The shared server, with the admin key."""
    with httpx.Client(base_url=shared.url, timeout=30,
                      headers={"authorization": f"Bearer {shared.admin_key}"}) as c:
        yield c


@pytest.fixture
def api(server: BackgroundServer, admin_key: str) -> Iterator[httpx.Client]:
    """A fresh yard's server, with the admin key."""
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as c:
        yield c


@pytest.fixture
def anon(server: BackgroundServer) -> Iterator[httpx.Client]:
    """A fresh yard's server, without a key."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
