"""Jobs through the real server on a random 127.0.0.1 port (its own in-process worker runs
them): the SDK, the roles, and the CLI with --url."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.client import ApiError
from modelyard.serving.server import BackgroundServer

MODULE = '''
def report(ctx, rows, fail=False):
    ctx.log(f"reporting on {rows} rows")
    if fail:
        raise ValueError("no data for the report")
    return {"rows": rows, "project": ctx.job.project}
'''


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "api_test_reports.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(folder))
    return "api_test_reports:report"


def test_enqueue_wait_logs_list_and_cancel(client: Client, code: str, yard: Yard) -> None:
    job = client.enqueue_job("call", {"function": code, "args": {"rows": 3},
                                      "trusted": True})
    done = client.wait_job(job["id"], timeout_s=30)
    assert done["state"] == "succeeded" and done["result"] == {"rows": 3,
                                                               "project": "default"}
    lines = [line["line"] for line in client.job_logs(job["id"])]
    assert "reporting on 3 rows" in lines
    after = client.job_logs(job["id"], after=client.job_logs(job["id"])[-1]["id"])
    assert after == []

    failing = client.enqueue_job("call", {"function": code, "args": {"rows": 1, "fail": True},
                                          "trusted": True}, max_attempts=1)
    assert client.wait_job(failing["id"], 30)["error"].startswith("ValueError: no data")
    later = client.enqueue_job("call", {"function": code, "args": {"rows": 1},
                                        "trusted": True}, delay_s=3600)
    assert client.cancel_job(later["id"])["state"] == "cancelled"
    with pytest.raises(ApiError) as finished:
        client.cancel_job(later["id"])
    assert (finished.value.status, finished.value.code) == (409, "job_finished")

    assert [j["id"] for j in client.list_jobs()] == [later["id"], failing["id"], job["id"]]
    assert [j["id"] for j in client.list_jobs(state="failed")] == [failing["id"]]
    assert [j["id"] for j in client.list_jobs(limit=1, before=later["id"])] == [failing["id"]]
    with pytest.raises(ApiError) as missing:
        client.job(999_999)
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")
    with pytest.raises(ApiError) as unknown:
        client.enqueue_job("nope")
    assert (unknown.value.code, unknown.value.problem["field"]) == ("unknown_job_kind", "kind")
    assert yard.audit_verify()["ok"]


def test_roles_and_projects(client: Client, server: BackgroundServer, code: str) -> None:
    client.create_project("fraud")
    payload = {"function": code, "args": {"rows": 1}, "trusted": True}
    theirs = client.enqueue_job("call", payload, project="fraud", delay_s=3600)
    keys = {name: client.create_key(name, roles)["key"] for name, roles in {
        "operator": ["operator"], "dev-default": ["developer@default"],
        "viewer": ["viewer"]}.items()}
    with Client(server.url, keys["operator"]) as operator:
        with pytest.raises(ApiError) as refused:  # runs project code: developers and admins
            operator.enqueue_job("call", payload)
        assert refused.value.status == 403
        assert operator.cancel_job(theirs["id"])["state"] == "cancelled"
    with Client(server.url, keys["dev-default"]) as developer:
        mine = developer.enqueue_job("call", payload, delay_s=3600)
        assert [j["id"] for j in developer.list_jobs()] == [mine["id"]]  # not fraud's
        with pytest.raises(ApiError) as hidden:
            developer.job(theirs["id"])
        assert hidden.value.status == 403
        with pytest.raises(ApiError) as elsewhere:
            developer.enqueue_job("call", payload, project="fraud")
        assert elsewhere.value.status == 403
    with Client(server.url, keys["viewer"]) as viewer:
        assert len(viewer.list_jobs()) == 2
        with pytest.raises(ApiError) as refused:
            viewer.cancel_job(mine["id"])
        assert refused.value.status == 403


def test_schedules_over_the_api(client: Client) -> None:
    made = client.set_schedule("nightly", "0 3 * * *", "call",
                               {"function": "pkg.mod:fn", "trusted": True})
    assert made["next_run_at"].endswith("03:00:00+00:00")
    assert [s["name"] for s in client.list_schedules()] == ["nightly"]
    with pytest.raises(ApiError) as bad:
        client.set_schedule("nightly", "61 * * * *", "call",
                            {"function": "pkg.mod:fn", "trusted": True})
    assert bad.value.problem["field"] == "cron"
    client.delete_schedule("nightly")
    assert client.list_schedules() == []


def test_cli_through_the_server(server: BackgroundServer, admin_key: str, code: str) -> None:
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> str:
        result = runner.invoke(app, ["--url", server.url, "--key", admin_key, *args])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    payload = json.dumps({"function": code, "args": {"rows": 7}, "trusted": True})
    out = run("jobs", "run", "call", "--payload", payload, "--wait", "--timeout-s", "30")
    assert "succeeded" in out and '"rows": 7' in out
    job_id = json.loads(run("--json", "jobs", "list"))[0]["id"]
    assert "reporting on 7 rows" in run("jobs", "logs", str(job_id))
    assert "succeeded" in run("jobs", "show", str(job_id))
    assert "Jobs" in run("jobs", "list", "--state", "succeeded")
    failing = json.dumps({"function": code, "args": {"rows": 1, "fail": True},
                          "trusted": True})
    run("jobs", "run", "call", "-p", failing, "--max-attempts", "1", "--wait", ok=False)
    queued = json.loads(run("--json", "jobs", "run", "call", "-p", payload, "--delay-s",
                            "3600"))
    assert "cancelled" in run("jobs", "cancel", str(queued["id"]))
    assert "job_finished" in run("jobs", "cancel", str(queued["id"]), ok=False)
    assert "next at" in run("jobs", "schedule", "set", "hourly", "--cron", "0 * * * *",
                            "--kind", "call", "-p", payload)
    assert "hourly" in run("jobs", "schedule", "list")
    run("jobs", "schedule", "delete", "hourly")
