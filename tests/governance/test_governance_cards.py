"""Model cards: lineage fills what it knows, people fill the rest, the production alias needs
a complete card, and every change is audited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app


@pytest.fixture
def churn(client: Client, classifier: object, tabular: tuple[np.ndarray, ...]) -> dict:
    x = tabular[0]
    return client.register("churn", classifier, sample=x[:3], data=x,
                           metrics={"auc": 0.91}, code_revision="abc123")


def test_lineage_fills_the_card(client: Client, churn: dict) -> None:
    result = client.card("churn:1")
    card = result["card"]
    assert card["evaluation"] == {"auc": 0.91}
    assert card["training_data"].startswith("data fingerprint sha256:")
    assert card["owners"] == [] and card["risk_level"] == ""
    assert "# Model card: churn:1" in result["markdown"]
    assert "code revision: abc123" in result["markdown"]


def test_production_needs_a_complete_card(client: Client, yard: Yard, churn: dict) -> None:
    client.set_alias("churn", "champion", 1)  # other aliases need nothing
    with pytest.raises(Exception) as refused:
        client.set_alias("churn", "production", 1)
    problem = getattr(refused.value, "problem", {})
    assert problem["code"] == "card_incomplete"
    assert set(problem["missing"]) == {"intended_use", "owners", "risk_level", "limitations"}
    client.update_card("churn", 1, intended_use="Rank customers for retention offers.",
                       owners=["growth-team"], risk_level="limited",
                       limitations="Trained on 2026 data; not for credit decisions.")
    assert client.set_alias("churn", "production", 1)["version"] == 1
    actions = [r["action"] for r in yard.audit_records()]
    assert "card.update" in actions and actions[-1] == "alias.set"
    assert yard.audit_verify()["ok"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"risk_level": "extreme"}, "card.risk_level"),
    ({"colour": "blue"}, "card.colour"),
    ({"owners": [1, 2]}, "card.owners"),
    ({"evaluation": {"auc": "high"}}, "card.evaluation"),
])
def test_bad_card_fields_are_named(client: Client, churn: dict, fields: dict,
                                   field: str) -> None:
    with pytest.raises(Exception) as bad:
        client.update_card("churn", 1, **fields)
    assert getattr(bad.value, "field", None) == field
    assert client.card("churn:1")["card"]["risk_level"] == ""  # nothing changed


def test_cli_sets_and_renders_the_card(yard: Yard, churn: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"MODELYARD_DATABASE_URL": yard.settings.database_url}
    result = runner.invoke(app, ["--yard", str(yard.settings.home), "models", "card",
                                 "churn:1", "--set", "owners=risk,growth", "--set",
                                 "risk_level=high"], env=env)
    assert result.exit_code == 0, result.output
    assert "risk, growth" in result.output and "high" in result.output
