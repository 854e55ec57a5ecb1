"""Fixtures for the control-plane tests.

Read-only tests share, per module and per database, one yard with ``churn:1`` (alias
``champion``) served by endpoint ``churn`` on the real server. Tests that change state use
the function-scoped ``server`` of tests/conftest.py through ``api`` / ``anon``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from db_support import migrate
from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from support import Shared


@pytest.fixture(scope="module")
def shared(shared_settings: Settings, classifier: LogisticRegression,
           tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Iterator[Shared]:
    migrate(shared_settings.database_url)  # the session's migration, copied
    yard, key = Yard.init(settings=shared_settings)
    assert key is not None
    try:
        yard.register("churn", classifier, sample=tabular[0][:5], tags={"team": "risk"})
        yard.set_alias("churn", "champion", 1)
        yard.create_endpoint("churn", "churn@champion", auth="public")
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
