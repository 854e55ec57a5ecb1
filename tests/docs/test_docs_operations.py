"""The operations pages name what exists: every metric family a server exports is in the
monitoring page's table (and nothing else is), its alert rules use only those families, and
every MODELYARD_* variable the hand-written pages mention is a setting or one the code reads."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from modelyard import Yard
from modelyard.serving.app import create_app
from modelyard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MONITORING = DOCS / "operations" / "monitoring-the-platform.md"
HAND_WRITTEN = [DOCS / "quickstart.md", DOCS / "concepts.md", DOCS / "security.md",
                DOCS / "comparison.md", *DOCS.glob("tutorials/*.md"),
                DOCS / "operations" / "upgrades.md", MONITORING]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The metric families of a real app's /metrics (names as the text format spells them)."""
    home = tmp_path_factory.mktemp("yard")
    yard, _ = Yard.init(settings=Settings.load(home, env={}))
    with yard:
        app = create_app(yard, start_reconciler=False)
        text = app.state.metrics.render().decode()
    return set(re.findall(r"^# TYPE (modelyard_\w+) ", text, re.M))


def documented() -> set[str]:
    table = re.findall(r"^\| `(modelyard_\w+)` \|", MONITORING.read_text(), re.M)
    return set(table)


def test_every_exported_family_is_documented_and_no_other(exported: set[str]) -> None:
    assert exported, "the app exported no families"
    assert exported - documented() == set(), "add these to monitoring-the-platform.md"
    assert documented() - exported == set(), "these are documented but not exported"


def test_the_alert_rules_use_only_exported_families(exported: set[str]) -> None:
    (rules,) = [b for b in re.findall(r"^```yaml\n(.*?)^```", MONITORING.read_text(),
                                      re.M | re.S) if "groups:" in b]
    names = set()
    for group in yaml.safe_load(rules)["groups"]:
        for rule in group["rules"]:
            names |= set(re.findall(r"\bmodelyard_\w+", rule["expr"]))
    assert names, "no rule names a modelyard family"
    histograms = {f"{h}_bucket" for h in exported} | {f"{h}_count" for h in exported} | {
        f"{h}_sum" for h in exported}
    assert names - exported - histograms == set()


def test_environment_variables_named_in_the_pages_exist() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "modelyard").rglob("*.py"))
    known = {f"MODELYARD_{f.name.upper()}" for f in fields(Settings)} | set(
        re.findall(r"\bMODELYARD_[A-Z0-9_]+\b", source))
    named = {(page.name, name) for page in HAND_WRITTEN if page.is_file()
             for name in re.findall(r"\bMODELYARD_[A-Z0-9_]+\b", page.read_text())}
    assert {pair for pair in named if pair[1] not in known} == set()
