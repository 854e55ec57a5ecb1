"""Property-based API testing with schemathesis against the live OpenAPI document: with an
admin key, no generated request (valid or not) may produce a server error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelyard import Yard
from modelyard.serving.app import create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402


def fuzz(operation: Any, key: str, failures: list[str]) -> Callable[[], None]:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {key}"})
        if response.status_code >= 500:
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")

    return check  # type: ignore[no-any-return]


def test_no_server_errors_anywhere_in_the_api(tmp_path: Path) -> None:
    yard, key = Yard.init(tmp_path / "yard")
    assert key is not None
    schema = schemathesis.openapi.from_asgi("/openapi.json",
                                            create_app(yard, start_reconciler=False))
    failures: list[str] = []
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        fuzz(operation, key, failures)()
    yard.close()
    assert not failures, "\n".join(failures[:10])
