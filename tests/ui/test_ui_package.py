"""The dashboard ships inside the Python package: every template and static file is named by
pyproject's package-data, and the vendored uPlot is the version package-lock.json pins."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "src" / "modelyard" / "ui"


def test_every_template_and_asset_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["modelyard"]
    shipped = [p.relative_to(UI.parent).as_posix()
               for folder in ("templates", "static") for p in (UI / folder).rglob("*")
               if p.is_file()]
    assert shipped
    missing = [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"not in package-data (the wheel would lack them): {missing}"


def test_the_vendored_chart_library_is_the_locked_version() -> None:
    lock = json.loads((UI / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/uplot"]["version"]
    assert json.loads((UI / "package.json").read_text())["dependencies"]["uplot"] == version
    header = (UI / "static" / "vendor" / "uPlot.iife.min.js").read_text()[:100]
    assert f"(v{version})" in header
