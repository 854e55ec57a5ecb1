"""A yard whose artifacts live on S3 (moto's standalone S3 server on 127.0.0.1), with its
metadata on SQLite and on PostgreSQL: register through the real server, serve, predict; a
second node (another cache folder, the same store and bucket) loads the model from S3 once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
from sklearn.linear_model import LogisticRegression

from modelyard import Client, Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from s3_support import S3Place


def test_register_serve_predict_with_artifacts_on_s3(
        tmp_path: Path, database_url: str, s3: S3Place, classifier: LogisticRegression,
        tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x = tabular[0]
    settings = Settings.load(tmp_path / "node1", env={}, database_url=database_url,
                             artifacts_url=s3.url, artifacts_options=s3.options_json)
    yard, key = Yard.init(settings=settings)
    assert key is not None
    try:
        with BackgroundServer(yard) as server, Client(server.url, key) as client:
            version = client.register("churn", classifier, sample=x[:3])
            digest = version["artifact"]["sha256"]
            # The archive is on S3 at its content address, and no upload is left half-way.
            assert s3.keys() == [f"sha256/{digest[:2]}/{digest}.tar"]
            client.create_endpoint("churn", "churn:1")
            deadline = time.monotonic() + 30
            while httpx.get(f"{server.url}/v2/models/churn/ready",
                            headers={"authorization": f"Bearer {key}"}).status_code != 200:
                assert time.monotonic() < deadline, "the endpoint did not load"
                time.sleep(0.05)
            answer = client.predict("churn", {"input": x[:5]})
            assert answer["label"].tolist() == classifier.predict(x[:5]).tolist()
        assert (settings.cache_dir / digest).is_dir()  # the server loaded it via its cache
    finally:
        yard.close()

    # Another node: its own cache folder, the same metadata store and bucket.
    other = Yard(settings=Settings.load(tmp_path / "node2", env={}, database_url=database_url,
                                        artifacts_url=s3.url,
                                        artifacts_options=s3.options_json))
    try:
        assert other.artifacts.fetches == 0
        got = other.predict("churn", {"input": x[:5]})
        assert got["label"].tolist() == classifier.predict(x[:5]).tolist()
        assert other.artifacts.fetches == 1  # downloaded from S3 into node2's cache
        assert (tmp_path / "node2" / "cache" / digest).is_dir()
    finally:
        other.close()
