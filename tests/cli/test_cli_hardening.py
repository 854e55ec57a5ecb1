"""Wrong files and values given to the CLI end with one line and exit code 1, never a
traceback (a binary file where YAML is expected, a time ago before year 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelyard import Yard
from modelyard.cli.main import app

runner = CliRunner()
X = np.arange(4, dtype=np.float32).reshape(1, 4)


def cli(yard: Yard, *args: str) -> str:
    result = runner.invoke(app, ["--yard", str(yard.settings.home), *args],
                           env={"MODELYARD_DATABASE_URL": yard.settings.database_url,
                                "MODELYARD_ARTIFACTS_URL": yard.settings.artifacts_url,
                                "COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\x08\x07\xcf\xff\x00onnx")
    return path


def test_a_binary_file_where_yaml_belongs(yard: Yard, binary: Path) -> None:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    yard.create_endpoint("echo", "echo:1")
    for args in (["graphs", "validate", str(binary)],
                 ["retrain", "policy", "set", "echo", "-f", str(binary)],
                 ["monitor", "set", "echo", "-f", str(binary)],
                 ["rollout", "start", "echo", "--to", "echo:1", "-f", str(binary)]):
        out = cli(yard, *args)
        assert "cannot read" in out, (args, out)


def test_a_time_ago_before_year_one(yard: Yard) -> None:
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X)
    yard.create_endpoint("echo", "echo:1")
    out = cli(yard, "monitor", "log", "echo", "--since", "99999999999999d")
    assert "validation_failed" in out and "since" in out


def test_serve_refuses_a_port_it_cannot_bind_before_loading_anything(
        yard: Yard, tmp_path: Path) -> None:
    import socket

    def serve(*args: str) -> str:
        result = runner.invoke(app, ["--yard", str(yard.settings.home), "serve", *args],
                               env={"MODELYARD_DATABASE_URL": yard.settings.database_url,
                                    "COLUMNS": "200"})
        assert result.exit_code == 2, result.output  # a usage error, before start-up
        assert "serving" not in result.output
        return result.output

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = serve("--port", str(taken.getsockname()[1]))
    assert "cannot listen on 127.0.0.1" in out
    assert "65535" in serve("--port", "99999")
    missing = tmp_path / "missing.pem"
    assert "cannot serve TLS" in serve("--ssl-certfile", str(missing),
                                       "--ssl-keyfile", str(missing), "--port", "0")


def test_init_keeps_the_database_private_in_a_folder_others_may_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELYARD_DATABASE_URL", "MODELYARD_ARTIFACTS_URL", "MODELYARD_HOME"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "yard"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    result = runner.invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "yard.db").stat().st_mode & 0o777 == 0o600
    assert (folder / "admin.key").stat().st_mode & 0o777 == 0o600


def test_text_others_wrote_is_shown_as_text(yard: Yard) -> None:
    """A stray ``[/x]`` in a description or key owner made the command crash (Rich read it
    as markup); an escape sequence in a card went to the terminal as is."""
    yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                  sample=X, description="[/bold] [red]FAKE[/red]")
    yard.create_endpoint("echo", "echo:1", description="[/oops] [link=http://x]y[/link]")
    yard.create_key("[/owner]", ["viewer"])
    yard.update_card("echo", 1, intended_use="retitle \x1b]0;owned\x07 me \x1b[31mred")
    for args, literal in ((["endpoints", "show", "echo"], "[/oops] [link=http://x]y[/link]"),
                          (["keys", "list"], "[/owner]"),
                          (["models", "show", "echo:1"], "[/bold] [red]FAKE[/red]"),
                          (["models", "card", "echo:1"], "retitle")):
        result = runner.invoke(app, ["--yard", str(yard.settings.home), *args],
                               env={"MODELYARD_DATABASE_URL": yard.settings.database_url,
                                    "MODELYARD_ARTIFACTS_URL": yard.settings.artifacts_url,
                                    "COLUMNS": "300"})
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert literal in result.output, (args, result.output)
        assert "\x1b" not in result.output and "\x07" not in result.output, args
