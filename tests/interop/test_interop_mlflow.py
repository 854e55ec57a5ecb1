"""Importing models that real MLflow logged (a SQLite tracking store in a temp folder):
scikit-learn (cloudpickle and skops) and pyfunc PythonModel models, with their signature,
input example and run lineage; refusals without trust; the CLI in-process and via a server."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.domain.errors import UntrustedArtifact
from modelyard.domain.signature import TensorSpec
from modelyard.serving.server import BackgroundServer

pytest.importorskip("mlflow", reason="mlflow is not installed: the 'modelyard[mlflow]' extra "
                    "brings it")
import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models import infer_signature

from modelyard.interop.mlflow import (
    MlflowUnavailable,
    UnsupportedMlflowModel,
    import_mlflow,
    input_specs,
    load_mlflow,
)

Tabular = tuple[np.ndarray, np.ndarray, np.ndarray]
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
runner = CliRunner()


class AddOffset(mlflow.pyfunc.PythonModel):
    """Row sums plus an offset given to the constructor (so its pickled state matters). At
    module level in an importable module: cloudpickle stores it by reference."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    # No type hints on predict: MLflow 3 would read them as an input schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        assert isinstance(model_input, pd.DataFrame), type(model_input)
        return model_input.sum(axis=1).to_numpy() + self.offset


def _local_model() -> mlflow.pyfunc.PythonModel:
    class Local(mlflow.pyfunc.PythonModel):  # cloudpickled by value: its code is in the pickle
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input

    return Local()


@pytest.fixture(autouse=True)
def _away_from_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow writes ./mlflow.db and ./mlruns when asked without a URI: never in the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The import does not depend on the database: SQLite only, to stay fast."""
    return f"sqlite:///{tmp_path / 'yard.db'}"


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, tabular: Tabular,
           classifier: LogisticRegression) -> Iterator[dict[str, Any]]:
    """One MLflow run with params, metrics and a git commit, and the models it logged."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    x, label, _ = tabular
    frame = pd.DataFrame(x.astype(np.float64), columns=["a", "b", "c", "d"])
    frame["d"] = (frame["d"] * 10).round().astype(np.int64)
    frame_model = LogisticRegression().fit(frame, label)
    before = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.chdir(folder)
    mlflow.set_tracking_uri(uri)
    reqs = ["scikit-learn"]  # skips MLflow's slow requirement inference
    try:
        experiment = mlflow.create_experiment(
            "modelyard-import", artifact_location=(folder / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_params({"C": 1.0, "solver": "lbfgs"})
            mlflow.log_metric("accuracy", 0.93)
            mlflow.set_tag("mlflow.source.git.commit", GIT_COMMIT)
            pickled = mlflow.sklearn.log_model(
                classifier, name="model", serialization_format="cloudpickle",
                input_example=x[:5], signature=infer_signature(x, classifier.predict(x)),
                pip_requirements=reqs)
            skops = mlflow.sklearn.log_model(frame_model, name="frame_model",
                                             input_example=frame.head(5), pip_requirements=reqs,
                                             registered_model_name="frame-registry")
            pyfunc = mlflow.pyfunc.log_model(name="pyfunc", python_model=AddOffset(0.5),
                                             input_example=frame.head(3), pip_requirements=reqs)
            by_value = mlflow.pyfunc.log_model(name="local", python_model=_local_model(),
                                               input_example=x[:3], pip_requirements=reqs)
        custom = folder / "custom_loader"
        mlflow.pyfunc.save_model(str(custom), loader_module="my_project.loader",
                                 data_path=str(folder / "mlflow.db"), pip_requirements=reqs)
    finally:
        # The imports below must find the store through tracking_uri alone.
        mlflow.set_tracking_uri(None)
        if before[0] is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before[0]
        os.chdir(before[1])
    yield {"tracking_uri": uri, "run_id": run.info.run_id, "x": x, "frame": frame,
           "frame_model": frame_model, "pickled": pickled, "skops": skops, "pyfunc": pyfunc,
           "by_value": by_value, "custom": str(custom),
           "runs_uri": f"runs:/{run.info.run_id}/model"}


def _predict(yard: Yard, ref: str, inputs: Any) -> dict[str, np.ndarray]:
    return yard.predict(ref, inputs)


def test_pickled_sklearn_import_is_refused_without_trust(yard: Yard, logged: dict[str, Any]
                                                         ) -> None:
    with pytest.raises(UntrustedArtifact) as refused:
        import_mlflow(yard, "churn", logged["runs_uri"], tracking_uri=logged["tracking_uri"])
    assert "model.pkl" in refused.value.detail and "--trusted" in refused.value.detail
    assert yard.models() == []


def test_trusted_sklearn_import_keeps_signature_lineage_and_predictions(
        yard: Yard, logged: dict[str, Any], classifier: LogisticRegression) -> None:
    version = import_mlflow(yard, "churn", logged["runs_uri"], trusted=True,
                            tracking_uri=logged["tracking_uri"], description="from the lab")
    assert version.flavor == "sklearn"
    assert version.flavor_options["format"] == "skops"  # re-saved: MLflow's pickle stays out
    assert version.signature.inputs == input_specs(logged["pickled"].signature.inputs) == (
        TensorSpec("input", "float32", (-1, 4)),)
    assert {s.name for s in version.signature.outputs} == {"label", "probabilities"}
    assert version.input_example is not None
    lineage = version.lineage
    assert lineage.params == {"C": "1.0", "solver": "lbfgs"}
    assert lineage.metrics == {"accuracy": 0.93}
    assert lineage.code_revision == GIT_COMMIT
    assert lineage.trusted is True
    assert lineage.tags["mlflow.run_id"] == logged["run_id"]
    assert lineage.tags["mlflow.model_uri"] == logged["runs_uri"]
    assert lineage.tags["mlflow.source"]
    assert version.description == "from the lab"
    x = logged["x"][:20]
    out = _predict(yard, "churn:1", x)
    np.testing.assert_array_equal(out["label"], classifier.predict(x))
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(x), rtol=1e-5)


def test_models_uri_imports_to_onnx_with_lineage_from_the_mlmodel(
        yard: Yard, logged: dict[str, Any], classifier: LogisticRegression) -> None:
    model_uri = logged["pickled"].model_uri  # models:/m-...: the run id comes from MLmodel
    assert model_uri.startswith("models:/")
    version = import_mlflow(yard, "churn-onnx", model_uri, trusted=True, to_onnx=True,
                            tracking_uri=logged["tracking_uri"])
    assert version.flavor == "onnx"
    assert version.lineage.tags["mlflow.run_id"] == logged["run_id"]
    assert version.lineage.params["solver"] == "lbfgs"
    x = logged["x"][:20]
    out = _predict(yard, "churn-onnx:1", x)
    np.testing.assert_array_equal(out["label"], classifier.predict(x))
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(x), rtol=1e-4,
                               atol=1e-5)


def test_skops_logged_columns_import_without_trust_as_one_matrix(
        yard: Yard, logged: dict[str, Any]) -> None:
    # Through MLflow's model registry this time.
    version = import_mlflow(yard, "frame", "models:/frame-registry/1",
                            tracking_uri=logged["tracking_uri"])
    # Four columns (three double, one long): one float64 matrix, in column order.
    assert version.signature.inputs == (TensorSpec("input", "float64", (-1, 4)),)
    assert version.lineage.trusted is False
    assert version.lineage.tags["mlflow.run_id"] == logged["run_id"]
    frame = logged["frame"].head(20)
    out = _predict(yard, "frame:1", frame.to_numpy(dtype=np.float64))
    np.testing.assert_array_equal(out["label"], logged["frame_model"].predict(frame))


def test_pyfunc_with_an_importable_class_needs_trust_and_serves(
        yard: Yard, logged: dict[str, Any]) -> None:
    uri = logged["pyfunc"].model_uri
    with pytest.raises(UntrustedArtifact) as refused:
        import_mlflow(yard, "offset", uri, tracking_uri=logged["tracking_uri"])
    assert "python_model.pkl" in refused.value.detail
    assert yard.models() == []
    version = import_mlflow(yard, "offset", uri, trusted=True,
                            tracking_uri=logged["tracking_uri"])
    assert version.flavor == "python"
    assert version.signature.inputs == (TensorSpec("input", "float64", (-1, 4)),)
    assert version.lineage.tags["mlflow.run_id"] == logged["run_id"]
    frame = logged["frame"].head(7)
    out = _predict(yard, "offset:1", frame.to_numpy(dtype=np.float64))
    np.testing.assert_allclose(out["output"], AddOffset(0.5).predict(None, frame))


def test_pyfunc_with_code_by_value_and_unknown_loaders_are_refused(
        yard: Yard, logged: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedMlflowModel, match="by value"):
        import_mlflow(yard, "local", logged["by_value"].model_uri, trusted=True,
                      tracking_uri=logged["tracking_uri"])
    with pytest.raises(UnsupportedMlflowModel, match=r"my_project\.loader"):
        import_mlflow(yard, "custom", logged["custom"], trusted=True)
    with pytest.raises(Exception, match="scikit-learn models only"):
        load_mlflow(logged["pyfunc"].model_uri, trusted=True, to_onnx=True,
                    tracking_uri=logged["tracking_uri"])
    assert yard.models() == []


def test_missing_mlflow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes 'import mlflow' fail
    with pytest.raises(MlflowUnavailable, match=r"modelyard\[mlflow\]"):
        load_mlflow("runs:/abc/model", trusted=False)


def _cli(*args: str, ok: bool = True) -> str:
    """stdout of a command that succeeded (MLflow's download progress goes to stderr), or all
    the output of one that failed."""
    result = runner.invoke(app, list(args))
    assert (result.exit_code == 0) == ok, result.output
    return result.stdout if ok else result.output


def test_cli_import_mlflow_in_a_local_yard(tmp_path: Path, logged: dict[str, Any]) -> None:
    yard = ("--yard", str(tmp_path / "yard"))
    _cli(*yard, "init")
    tracking = ("--tracking-uri", logged["tracking_uri"])
    refused = _cli(*yard, "models", "import-mlflow", "churn", logged["runs_uri"], *tracking,
                   ok=False)
    assert "untrusted_artifact" in refused and "model.pkl" in refused
    out = _cli(*yard, "models", "import-mlflow", "churn", logged["runs_uri"], *tracking,
               "--trusted", "--project", "default")
    assert "churn:1" in out
    shown = json.loads(_cli(*yard, "--json", "models", "show", "churn:1"))
    assert shown["flavor"] == "sklearn"
    assert shown["lineage"]["tags"]["mlflow.run_id"] == logged["run_id"]
    assert shown["lineage"]["metrics"] == {"accuracy": 0.93}
    onnx = json.loads(_cli(*yard, "--json", "models", "import-mlflow", "churn",
                           logged["runs_uri"], *tracking, "--trusted", "--to-onnx"))
    assert onnx["version"] == 2 and onnx["flavor"] == "onnx"


def test_cli_import_mlflow_through_a_server(server: BackgroundServer, admin_key: str,
                                            client: Client, logged: dict[str, Any]) -> None:
    remote = ("--url", server.url, "--key", admin_key)
    tracking = ("--tracking-uri", logged["tracking_uri"])
    out = json.loads(_cli(*remote, "--json", "models", "import-mlflow", "offset",
                          logged["pyfunc"].model_uri, *tracking, "--trusted"))
    assert out["flavor"] == "python" and out["lineage"]["trusted"] is True
    out = json.loads(_cli(*remote, "--json", "models", "import-mlflow", "churn",
                          logged["runs_uri"], *tracking, "--trusted"))
    assert out["lineage"]["params"] == {"C": "1.0", "solver": "lbfgs"}
    assert client.version("churn:1")["signature"]["inputs"][0]["shape"] == [-1, 4]
