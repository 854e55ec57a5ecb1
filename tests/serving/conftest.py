"""Fixtures for the data-plane tests: the real server with a served classifier."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client
from modelyard.serving.server import BackgroundServer


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[httpx.Client]:
    """A plain HTTP client with no API key: the data plane needs none."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def churn(client: Client, classifier: LogisticRegression,
          tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> str:
    """``churn:1`` (skops) registered over HTTP and served, ready, by endpoint ``churn``."""
    x, _, _ = tabular
    version = client.register("churn", classifier, sample=x[:5])
    assert version["version"] == 1
    client.create_endpoint("churn", "churn:1")
    client.wait_ready("churn", timeout_s=30)
    return "churn"
