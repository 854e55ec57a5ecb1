"""S3 for the tests: moto's standalone S3 server on a free 127.0.0.1 port, once per session,
with one bucket; each test gets a prefix of its own. The artifact store reaches it through
the settings: ``artifacts_url = s3://BUCKET/PREFIX`` and ``artifacts_options`` (a JSON object
of s3fs options: the endpoint and moto's placeholder credentials)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from modelyard.serving.server import free_port

BUCKET = "modelyard-test"


@dataclass(frozen=True)
class S3Place:
    endpoint: str
    url: str  # s3://BUCKET/PREFIX
    options: dict[str, Any]  # s3fs storage options

    @property
    def options_json(self) -> str:
        return json.dumps(self.options)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self) -> list[str]:
        prefix = self.url.split("/", 3)[3]
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/")
        return sorted(o["Key"][len(prefix) + 1:] for page in pages
                      for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server (``ThreadedMotoServer``) on 127.0.0.1, with the test bucket."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # the dev extra installs moto[server]
        if os.environ.get("CI"):
            pytest.fail(f"moto[server] is required in CI: {exc}")
        pytest.skip(f"moto[server] is not installed: {exc}")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        S3Place(endpoint, "", {}).client().create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> S3Place:
    """A fresh prefix in the test bucket, and the options that reach it."""
    return S3Place(s3_endpoint, f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}",
                   {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing",
                    "client_kwargs": {"region_name": "us-east-1"}})
