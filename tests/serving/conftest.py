"""Fixtures for the data-plane tests.

Most data-plane tests only read: they share, per module and per database, one yard with
``churn:1`` (a scikit-learn classifier saved with skops) served by endpoint ``churn`` on the
real server. Tests that change state use the function-scoped fixtures of tests/conftest.py.
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
        yard.register("churn", classifier, sample=tabular[0][:5])
        yard.create_endpoint("churn", "churn:1", auth="public")
        # The server loads every endpoint before it accepts traffic.
        with BackgroundServer(yard) as srv:
            yield Shared(shared_settings, yard, key, srv)
    finally:
        yard.close()


@pytest.fixture(scope="module")
def http(shared: Shared) -> Iterator[httpx.Client]:
    """A plain HTTP client with no API key: the data plane needs none."""
    with httpx.Client(base_url=shared.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def churn(shared: Shared, http: httpx.Client) -> str:
    """The name of the ready endpoint serving ``churn:1``."""
    assert http.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}
    return "churn"
