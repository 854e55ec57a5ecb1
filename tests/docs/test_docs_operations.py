"""The operations pages name what exists: every metric family a server exports is in the
monitoring page's table (and nothing else is), its alert rules use only those families, and
every MODELYARD_* variable the hand-written pages mention is a setting or one the code reads."""

from __future__ import annotations

import ast
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
MIGRATIONS = ROOT / "src" / "modelyard" / "store" / "migrations" / "versions"
# What docs/operations/upgrades.md promises every upgrade() does: only add.
ADDING = {"create_table", "create_index", "add_column", "batch_alter_table",
          "create_unique_constraint", "create_foreign_key", "bulk_insert",
          "f"}  # op.f(): a constraint's name, nothing done
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


def not_additive(path: Path) -> list[str]:
    """What the migration's upgrade() does besides adding tables, indexes and columns that
    are nullable or have a server default."""
    tree = ast.parse(path.read_text())
    (upgrade,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"]
    found = []
    for call in (n for n in ast.walk(upgrade) if isinstance(n, ast.Call)):
        if not (isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
                and call.func.value.id in ("op", "batch")):
            continue
        name = call.func.attr
        if name not in ADDING:
            found.append(f"{path.name}:{call.lineno} {name}")
        elif name == "add_column":
            column = call.args[-1]
            keywords = {k.arg: k.value for k in getattr(column, "keywords", [])}
            nullable = keywords.get("nullable")
            if "server_default" not in keywords and isinstance(nullable, ast.Constant) \
                    and nullable.value is False:
                found.append(f"{path.name}:{call.lineno} a NOT NULL column without default")
    return found


def test_every_migration_only_adds_as_the_upgrades_page_says() -> None:
    files = sorted(MIGRATIONS.glob("[0-9]*.py"))
    assert len(files) >= 14
    problems = [p for f in files for p in not_additive(f)]
    assert not problems, ("docs/operations/upgrades.md says every migration only adds; "
                          f"update its rolling order for: {problems}")


def test_the_additive_check_sees_a_drop_and_a_bare_not_null(tmp_path: Path) -> None:
    bad = tmp_path / "0099_bad.py"
    bad.write_text("def upgrade():\n    op.drop_table('x')\n"
                   "    with op.batch_alter_table('t') as batch:\n"
                   "        batch.add_column(sa.Column('c', sa.Integer(), nullable=False))\n"
                   "        batch.add_column(sa.Column('d', sa.Integer(), nullable=False,\n"
                   "                                   server_default='0'))\n")
    assert not_additive(bad) == ["0099_bad.py:2 drop_table",
                                 "0099_bad.py:4 a NOT NULL column without default"]
