"""Redaction where payloads can leak: per-endpoint field rules and the server's logs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from modelyard import Client, Yard
from modelyard.domain.errors import ValidationFailed
from modelyard.governance.redaction import redact, redact_logs

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def echo(yard: Yard) -> Yard:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    return yard


def test_endpoints_keep_their_field_rules(echo: Yard) -> None:
    rules = {"ssn": "drop", "email": "hash", "card": "mask"}
    endpoint = echo.create_endpoint("api", "echo", redaction=rules)
    assert echo.endpoint("api").redaction == rules == endpoint.to_dict()["redaction"]
    payload = {"ssn": "123-45-6789", "email": "jane@example.com", "card": "4111111111111111",
               "note": "call +1 415 555 0100"}
    cleaned = redact(payload, echo.endpoint("api").redaction)
    assert "ssn" not in cleaned and cleaned["email"].startswith("sha256:")
    assert cleaned["card"].endswith("1111") and "4111" not in cleaned["card"]
    assert "555" not in cleaned["note"]
    with pytest.raises(ValidationFailed) as bad:
        echo.update_endpoint("api", redaction={"ssn": "shred"})
    assert bad.value.field == "redaction.ssn"
    assert echo.endpoint("api").redaction == rules  # nothing changed
    echo.update_endpoint("api", redaction={})
    assert echo.endpoint("api").redaction == {}


def test_field_rules_over_http(echo: Yard, client: Client) -> None:
    client.create_endpoint("api", "echo", redaction={"email": "hash"})
    assert client.endpoint("api")["redaction"] == {"email": "hash"}
    response = client._http.patch("/api/v1/endpoints/api", json={"redaction": {"a": 3}})
    assert response.status_code == 422
    response = client._http.patch("/api/v1/endpoints/api", json={"redaction": {"a": "x"}})
    assert response.status_code == 422 and response.json()["field"] == "redaction.a"
    assert client.endpoint("api")["redaction"] == {"email": "hash"}


def test_server_logs_leave_without_pii(caplog: pytest.LogCaptureFixture) -> None:
    redact_logs("modelyard.http")
    log = logging.getLogger("modelyard.http")
    with caplog.at_level(logging.ERROR, logger="modelyard.http"):
        log.error("model failed on %s", "jane@example.com, card 4111 1111 1111 1111")
        try:
            raise ValueError("bad row for SSN 123-45-6789")
        except ValueError:
            log.exception("unhandled")
    text = caplog.text
    assert "jane@example.com" not in text and "4111 1111 1111 1111" not in text
    assert "123-45-6789" not in text and "model failed on" in text
    assert "ValueError" in text  # the traceback stays, redacted


def test_field_rules_from_the_cli(echo: Yard) -> None:
    from typer.testing import CliRunner

    from modelyard.cli.main import app

    runner = CliRunner()
    home = ["--yard", str(echo.settings.home)]
    made = runner.invoke(app, [*home, "endpoints", "create", "api", "--model", "echo",
                               "--redact", "email=hash", "--redact", "ssn=drop"])
    assert made.exit_code == 0, made.output
    assert echo.endpoint("api").redaction == {"email": "hash", "ssn": "drop"}
    bad = runner.invoke(app, [*home, "endpoints", "update", "api", "--redact", "email"])
    assert bad.exit_code != 0 and "FIELD=RULE" in bad.output
    cleared = runner.invoke(app, [*home, "endpoints", "update", "api", "--redact", "none"])
    assert cleared.exit_code == 0, cleared.output
    assert echo.endpoint("api").redaction == {}
