"""Text others wrote reaches the terminal as text, on every screen that shows it: inference
inputs in ``monitor log``, a rollout's reason (it names who aborted it: a key's owner, free
text), graph problems and file names, project descriptions, alert labels. Each held Rich
markup (``[/bold]``, ``[red]``) that crashed the command or restyled the output; through
Typer's runner, in-process and through a real server with ``--url``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.monitor.inference_log import InferenceLog
from modelyard.serving.server import BackgroundServer

runner = CliRunner()
X = np.arange(4, dtype=np.float32).reshape(1, 4)
ECHO = "modelyard.testing.models:Echo"
MARKUP = "[/bold] [red]not red[/red] [link=http://x]y[/link]"


def cli(yard: Yard, *args: str) -> str:
    """The command's output; exit code 1 is an answer too (``rollout status`` of an aborted
    rollout, ``graphs validate`` of a graph with problems), a traceback is not."""
    result = runner.invoke(app, ["--yard", str(yard.settings.home), *args],
                           env={"MODELYARD_DATABASE_URL": yard.settings.database_url,
                                "MODELYARD_ARTIFACTS_URL": yard.settings.artifacts_url,
                                "COLUMNS": "400"})
    assert result.exit_code in (0, 1), (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        (args, result.exception)
    return result.output


def remote(url: str, key: str, *args: str) -> str:
    result = runner.invoke(app, ["--url", url, "--key", key, *args], env={"COLUMNS": "400"})
    assert result.exit_code in (0, 1), (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        (args, result.exception)
    return result.output


def test_inference_inputs_in_the_log_are_text(yard: Yard) -> None:
    yard.register("words", ECHO, flavor="python", trusted=True,
                  sample={"text": np.array(["a"], dtype=object)})
    endpoint = yard.create_endpoint("words", "words:1")
    log = InferenceLog(yard.db)  # the writer the server uses
    log.offer(endpoint, "words:1", "req-1", 200, 0.001, 1,
              {"text": np.array(["[/bold] [red]x"], dtype=object)},
              {"output": np.array(["[/bold] [red]x"], dtype=object)}, None)
    log.flush()
    out = cli(yard, "monitor", "log", "words")
    assert "req-1" in out and "[/bold] [red]x" in out, out


def test_a_project_description_and_graph_problems_are_text(yard: Yard, tmp_path: Path) -> None:
    yard.create_project("fraud", MARKUP)
    for args in (["projects", "list"], ["projects", "show", "fraud"]):
        assert MARKUP in cli(yard, *args), args
    graph = tmp_path / "g[red].yaml"
    graph.write_text("graph: g\n'[/bold]': 1\ninputs: []\nnodes: {}\noutputs: {}\n")
    out = cli(yard, "graphs", "validate", str(graph))
    assert "g[red].yaml" in out and "[/bold]" in out and "unknown field" in out, out


def test_alert_labels_are_text(yard: Yard) -> None:
    yard.register("echo", ECHO, flavor="python", trusted=True, sample=X)
    yard.create_endpoint("echo", "echo:1")
    yard.set_monitor("echo", {"alerts": [{"name": "slow", "kind": "latency_p99",
                                          "threshold": 100, "labels": {"team": MARKUP}}]})
    yard.run_monitor("echo")  # evaluates the rule: an alert row with its labels
    assert f"team={MARKUP}" in cli(yard, "monitor", "show", "echo")
    assert "slow" in cli(yard, "monitor", "alerts")


def test_a_rollout_aborted_by_a_key_with_markup_in_its_owner(yard: Yard, admin_key: str
                                                            ) -> None:
    yard.register("echo", ECHO, flavor="python", trusted=True, sample=X)
    yard.register("echo", ECHO, flavor="python", trusted=True, sample=X)
    yard.create_endpoint("echo", "echo:1")
    eve = yard.create_key(MARKUP, ["developer"])["key"]
    with BackgroundServer(yard) as server, Client(server.url, eve) as client:
        started = client.start_rollout("echo", {"target": "echo:2", "strategy": "canary",
                                                "steps": [{"weight": 10, "duration_s": 60}]})
        aborted = client.abort_rollout(started["id"])
        assert aborted["status"] == "aborted" and MARKUP in aborted["reason"], aborted
        for args in (["rollout", "list"], ["rollout", "status", str(started["id"])]):
            assert MARKUP in remote(server.url, admin_key, *args), args
    for args in (["rollout", "list"], ["rollout", "status", "echo"], ["keys", "list"]):
        assert MARKUP in cli(yard, *args), args
