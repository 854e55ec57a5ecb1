"""``modelyard graphs validate|deploy`` through Typer's runner, against a real yard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelyard import Yard
from modelyard.cli.main import app

runner = CliRunner()

GRAPH = {
    "graph": "churn-graph",
    "inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 4]}],
    "nodes": {
        "a": {"kind": "model", "model": "clf@champion", "inputs": {"input": "inputs.features"}},
        "b": {"kind": "model", "model": "clf:1", "inputs": {"input": "inputs.features"}},
        "blend": {"kind": "ensemble", "members": ["a", "b"], "output": "probabilities"},
    },
    "outputs": {"probabilities": "blend.probabilities"},
}


def cli(yard: Yard, *args: str) -> Any:
    return runner.invoke(app, ["--yard", str(yard.settings.home), *args],
                         env={"MODELYARD_DATABASE_URL": yard.settings.database_url,
                              "MODELYARD_ARTIFACTS_URL": yard.settings.artifacts_url})


def test_validate_then_deploy_then_redeploy(yard: Yard, tabular: Any, tmp_path: Path) -> None:
    x, label, _ = tabular
    yard.register("clf", LogisticRegression().fit(x, label), to_onnx=True, sample=x[:4])
    yard.set_alias("clf", "champion", 1)
    good = tmp_path / "graph.yaml"
    good.write_text(yaml.safe_dump(GRAPH))
    checked = cli(yard, "graphs", "validate", str(good))
    assert checked.exit_code == 0 and "valid" in checked.output, checked.output
    bad_doc = {**GRAPH, "nodes": {**GRAPH["nodes"],
                                  "b": {"kind": "model", "model": "nope:1",
                                        "inputs": {"input": "inputs.nothing"}}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_doc))
    refused = cli(yard, "graphs", "validate", str(bad))
    assert refused.exit_code == 1
    assert "nodes.b.model" in refused.output
    not_deployed = cli(yard, "graphs", "deploy", str(bad))
    assert not_deployed.exit_code == 1 and "graph_invalid" in not_deployed.output
    assert yard.list_endpoints() == []
    made = cli(yard, "graphs", "deploy", str(good))
    assert made.exit_code == 0 and "created" in made.output, made.output
    endpoint = yard.endpoint("churn-graph")
    assert endpoint.graph is not None and endpoint.auth == "key"
    GRAPH["nodes"]["blend"]["method"] = "vote"
    GRAPH["nodes"]["blend"]["output"] = "label"
    GRAPH["outputs"] = {"label": "blend.label"}
    good.write_text(yaml.safe_dump(GRAPH))
    again = cli(yard, "graphs", "deploy", str(good))
    assert again.exit_code == 0 and "updated" in again.output, again.output
    assert yard.endpoint("churn-graph").graph["nodes"]["blend"]["method"] == "vote"
    assert yard.endpoint("churn-graph").generation == 2
