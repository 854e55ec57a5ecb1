"""The generated references (docs/reference/) are what the generator makes from the code now,
and the generator says so when they are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.control.api import ROUTE_ACTIONS
from modelyard.docsgen import api, cli, settings
from modelyard.docsgen.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
FIX = "run: python -m modelyard.docsgen (from the repository root)"


@pytest.fixture(scope="module")
def api_page() -> str:
    return api.render(*api.collect())


def test_the_api_reference_is_current(api_page: str) -> None:
    assert (REFERENCE / "api.md").read_text() == api_page, FIX


def test_the_cli_reference_is_current() -> None:
    assert (REFERENCE / "cli.md").read_text() == cli.render(), FIX


def test_the_settings_reference_is_current() -> None:
    assert (REFERENCE / "settings.md").read_text() == settings.render(), FIX


def test_every_setting_is_in_the_settings_reference() -> None:
    from dataclasses import fields

    from modelyard.settings import Settings

    page = settings.render()
    assert all(f"| `{f.name}` | `MODELYARD_{f.name.upper()}` |" in page for f in fields(Settings))


def test_every_guarded_route_is_documented_with_its_action(api_page: str) -> None:
    for (method, path), action in ROUTE_ACTIONS.items():
        if path.startswith("/api/"):
            assert f"### {method} `{path}`" in api_page
            section = api_page.split(f"### {method} `{path}`", 1)[1].split("\n### ", 1)[0]
            assert f"Action: `{action}`" in section, (method, path)
        else:  # /metrics and the like: the data-plane table
            assert f"| {method} | `{path}` | `{action}` |" in api_page


def test_every_command_is_documented() -> None:
    page = cli.render()
    for path, command in cli.commands():
        title = " ".join(["modelyard", *path])
        assert f"# {title}\n" in page, title
        for param in command.params:
            if not param.hidden and not type(param).__name__.endswith("Argument"):
                assert f"`{param.opts[0]}`" in page


def test_check_names_stale_pages_and_writing_fixes_them(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    (tmp_path / "cli.md").write_text("old\n")
    assert main(["cli", "--out", str(tmp_path), "--check"]) == 1
    assert "cli.md" in capsys.readouterr().err
    assert main(["cli", "--out", str(tmp_path)]) == 0
    assert main(["cli", "--out", str(tmp_path), "--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.md"]  # no temp file left


def test_an_unknown_page_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["apii"])
    assert exit_.value.code == 2
    assert "unknown page 'apii'" in capsys.readouterr().err


def test_schema_types_read_like_their_constraints() -> None:
    assert api._type({"type": "integer", "minimum": 1.0, "maximum": 600000.0}) == \
        "integer (>= 1, <= 600000)"
    assert api._type({"anyOf": [{"$ref": "#/components/schemas/Decision"},
                                {"type": "null"}]}) == "Decision or null"
    assert api._type({"type": "array", "items": {"type": "string"}}) == "array of string"
