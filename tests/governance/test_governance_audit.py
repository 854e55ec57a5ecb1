"""The audit chain: written with every change and refusal, and tampering is detected (edit,
delete, reorder, truncate) directly in SQLite and in PostgreSQL."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.serving.server import BackgroundServer


def history(yard: Yard, client: Client, server: BackgroundServer, classifier: object,
            x: np.ndarray) -> str:
    """A little life: register, alias, endpoint, a key, a refused change. Returns the key."""
    client.register("churn", classifier, sample=x[:3])
    client.set_alias("churn", "champion", 1)
    client.create_endpoint("churn", "churn@champion", auth="public")
    viewer = client.create_key("dashboard", ["viewer"])["key"]
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {viewer}",
                                                    "x-request-id": "req-42"}) as http:
        assert http.delete("/api/v1/endpoints/churn").status_code == 403
    return viewer


def test_every_change_and_refusal_is_chained(yard: Yard, client: Client,
                                             server: BackgroundServer, classifier: object,
                                             tabular: tuple[np.ndarray, ...]) -> None:
    secret = history(yard, client, server, classifier, tabular[0])
    records = yard.audit_records()
    actions = [(r["action"], r["outcome"]) for r in records]
    assert actions == [("model.register", "ok"), ("alias.set", "ok"),
                       ("endpoint.create", "ok"), ("key.create", "ok"),
                       ("endpoints:delete", "denied")]
    denied = records[-1]
    assert denied["request_id"] == "req-42" and denied["actor"].startswith("key:dashboard")
    assert records[1]["before"] == {"version": None} and records[1]["after"] == {"version": 1}
    assert secret not in json.dumps(records)
    assert records[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))
    assert yard.audit_verify() == {"ok": True, "records": 5, "first_bad_seq": None,
                                   "problem": None}
    assert client.audit_verify()["ok"]


def test_a_bad_key_is_recorded_without_the_key(yard: Yard, server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        bad = "my_000000000000.not-a-real-secret"
        assert http.get("/api/v1/models", headers={"authorization": f"Bearer {bad}"}
                        ).status_code == 401
    (record,) = yard.audit_records()
    assert (record["action"], record["outcome"], record["actor"]) == \
        ("auth.failed", "denied", "anonymous")
    assert "not-a-real-secret" not in json.dumps(record)


TAMPERING = {
    "edit": ("UPDATE audit_log SET after = :doc WHERE seq = 2", 2, "altered"),
    "delete": ("DELETE FROM audit_log WHERE seq = 3", 3, "missing"),
    "reorder": ("(three statements below)", 2, "follow"),
    "truncate": ("DELETE FROM audit_log WHERE seq = 5", 5, "removed"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_tampering_is_detected(kind: str, yard: Yard, client: Client,
                               server: BackgroundServer, classifier: object,
                               tabular: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    history(yard, client, server, classifier, tabular[0])
    assert yard.audit_verify()["ok"]
    sql, first_bad, word = TAMPERING[kind]
    with yard.db.engine.begin() as conn:
        if kind == "reorder":
            # seq is unique and checked per row: swap through a free value.
            conn.execute(text("UPDATE audit_log SET seq = -2 WHERE seq = 2"))
            conn.execute(text("UPDATE audit_log SET seq = 2 WHERE seq = 3"))
            conn.execute(text("UPDATE audit_log SET seq = 3 WHERE seq = -2"))
        else:
            conn.execute(text(sql), {"doc": json.dumps({"version": 99})})
    verdict = yard.audit_verify()
    assert not verdict["ok"]
    assert verdict["first_bad_seq"] == first_bad
    assert word in verdict["problem"]


def test_cli_verify_and_export(yard: Yard, client: Client, server: BackgroundServer,
                               classifier: object, tabular: tuple[np.ndarray, ...],
                               tmp_path: Path) -> None:
    history(yard, client, server, classifier, tabular[0])
    runner = CliRunner()
    home = str(yard.settings.home)
    env = {"MODELYARD_DATABASE_URL": yard.settings.database_url}
    ok = runner.invoke(app, ["--yard", home, "audit", "verify"], env=env)
    assert ok.exit_code == 0 and "5 records" in ok.output, ok.output
    out = tmp_path / "audit.jsonl"
    exported = runner.invoke(app, ["--yard", home, "audit", "export", "-o", str(out)], env=env)
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4, 5]
    with yard.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 1"))
    broken = runner.invoke(app, ["--yard", home, "audit", "verify"], env=env)
    assert broken.exit_code == 1 and "record 1" in broken.output
