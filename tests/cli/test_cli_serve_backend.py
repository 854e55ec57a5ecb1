"""``modelyard serve --backend/--address``: refused before anything starts when they cannot
work (no Ray needed for these)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard import Yard
from modelyard.cli.main import app
from modelyard.domain.errors import ValidationFailed
from modelyard.serving.app import create_app
from modelyard.settings import Settings

runner = CliRunner()


@pytest.fixture
def yard_dir(tmp_path: Path) -> Path:
    yard, _ = Yard.init(tmp_path / "yard")
    yard.close()
    return tmp_path / "yard"


def test_unknown_backend_is_refused(yard_dir: Path) -> None:
    result = runner.invoke(app, ["--yard", str(yard_dir), "serve", "--backend", "k8s"])
    assert result.exit_code == 2
    assert "--backend must be local or ray" in result.output


def test_ray_backend_takes_one_server_process(yard_dir: Path) -> None:
    result = runner.invoke(app, ["--yard", str(yard_dir), "serve", "--backend", "ray",
                                 "--workers", "2"])
    assert result.exit_code == 2
    assert "use --workers 1" in result.output


def test_backend_setting_is_checked_by_the_app(yard_dir: Path) -> None:
    settings = Settings.load(yard_dir, env={"MODELYARD_BACKEND": "k8s"})
    assert (settings.backend, settings.ray_address) == ("k8s", "")
    with Yard(settings=settings) as yard, pytest.raises(ValidationFailed) as info:
        create_app(yard)
    assert info.value.field == "backend"
