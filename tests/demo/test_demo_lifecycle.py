"""``modelyard demo --lifecycle --check`` end to end through the CLI: a real server, real
clients, real time (monitor windows of 10 s), about a minute."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from modelyard import Yard
from modelyard.cli.main import app
from modelyard.serving.server import free_port


def test_the_lifecycle_story_runs_to_a_promotion(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--yard", str(tmp_path / "yard"), "demo", "--lifecycle",
                                      "--check", "--port", str(free_port())],
                                env={"COLUMNS": "200"})
    out = result.output
    assert result.exit_code == 0, out
    assert "lifecycle check passed" in out
    for told in ("drift detected", "retraining started", "gate passed",
                 "promotion held", "promoted", "load test recorded", "audit chain: verifies"):
        assert told in out, told
    before, after = map(float, re.search(r"overall\s*│\s*(\d+)\s*│\s*(\d+)", out).groups())
    assert after > before

    # What the story left in its yard: the promotion went through a second person.
    home = next((tmp_path / "yard" / "lifecycle").iterdir())
    with Yard(home) as yard:
        assert yard.model("risk").aliases["production"] == 2
        approvals = yard.list_approvals()
        assert [(a.action, a.status, [v.subject for v in a.votes]) for a in approvals] == [
            ("rollout:promote", "executed", ["ana"])]
        # The drift alert's cycle promoted risk:2. Drift seen again afterwards may start
        # another cycle, which the gate must stop (its challenger is no better).
        first, *later = reversed(yard.retrain_cycles("risk"))
        assert (first["trigger"], first["state"]) == ("drift", "promoted"), first
        assert all(c["state"] != "promoted" for c in later), later
        assert yard.card("risk:2")["card"]["owners"] == ["ml-platform@example.com"]  # inherited
        assert yard.profile("risk:2")["profile"]["rows"] > 0  # drift is tested against it now
        actions = [r["action"] for r in yard.audit_records()]
        for expected in ("alert.firing", "retrain.trigger", "retrain.gate", "rollout.start",
                         "approval.approve", "rollout.promoted", "loadtest.record"):
            assert expected in actions, (expected, sorted(set(actions)))
