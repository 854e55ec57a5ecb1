"""The python flavor: trusted project code, a class with load(path) and predict(inputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flavor_pymodels import BareArray, Broken, Doubler, Scaler

from modelyard import Yard
from modelyard.domain.errors import (
    InvalidArtifact,
    ModelNotFound,
    UntrustedArtifact,
    ValidationFailed,
)
from modelyard.domain.registry import ModelVersion
from modelyard.domain.signature import TensorSpec
from modelyard.flavors import get
from modelyard.flavors.python import SPEC_FILE

Tabular = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Flavors do not depend on the database: SQLite only, to stay fast."""
    return f"sqlite:///{tmp_path / 'yard.db'}"


def predict(yard: Yard, version: ModelVersion, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return yard.registry.load_predictor(version).predict(version.signature.validate(inputs))


# -- python -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [Doubler, Doubler()], ids=["class", "instance"])
def test_python_model_needs_trust(yard: Yard, model: Any) -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    with pytest.raises(UntrustedArtifact) as info:
        yard.register("py", model, sample={"x": x})
    assert info.value.status == 400 and info.value.field == "trusted"
    with pytest.raises(ModelNotFound):
        yard.model("py")

    v = yard.register("py", model, sample={"x": x}, trusted=True)
    assert v.flavor == "python"
    assert v.flavor_options["class"] == "flavor_pymodels:Doubler"
    assert v.lineage.trusted is True
    assert v.signature.inputs == (TensorSpec("x", "float32", (-1, 2)),)
    assert v.signature.outputs == (TensorSpec("doubled", "float32", (-1, 2)),)
    out = predict(yard, v, {"x": x[:2]})
    np.testing.assert_array_equal(out["doubled"], x[:2] * 2)


def test_python_model_folder_with_its_own_files(yard: Yard, tmp_path: Path) -> None:
    folder = tmp_path / "scaler"
    folder.mkdir()
    (folder / SPEC_FILE).write_text(json.dumps({"class": "flavor_pymodels:Scaler"}))
    (folder / "scale.json").write_text(json.dumps({"scale": 3}))
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(UntrustedArtifact):
        yard.register("scaler", path=folder, sample={"x": x})
    v = yard.register("scaler", path=folder, sample={"x": x}, trusted=True)
    assert v.flavor == "python"
    stored = yard.artifacts.materialize(v.artifact_digest)
    assert sorted(p.name for p in stored.iterdir()) == sorted([SPEC_FILE, "scale.json"])
    np.testing.assert_array_equal(predict(yard, v, {"x": x})["scaled"], x * 3)
    assert Scaler.__name__ == "Scaler"


def test_python_model_bare_array_output(yard: Yard) -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    v = yard.register("bare", BareArray, sample={"x": x}, trusted=True)
    assert [s.name for s in v.signature.outputs] == ["output"]
    np.testing.assert_array_equal(predict(yard, v, {"x": x})["output"], [3.0, 12.0])


def test_python_model_failing_on_the_sample_is_refused(yard: Yard) -> None:
    with pytest.raises(ValidationFailed, match="the model itself is broken") as info:
        yard.register("broken", Broken, sample={"x": np.zeros((1, 1))}, trusted=True)
    assert info.value.field == "sample"


def test_python_model_must_be_importable(yard: Yard) -> None:
    class Local:
        def load(self, path: str) -> None:
            pass

        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(inputs)

    with pytest.raises(ValidationFailed, match="importable"):
        yard.register("local", Local, sample={"x": np.zeros((1, 1))}, trusted=True)


def test_python_model_with_unknown_class(yard: Yard, tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    (folder / SPEC_FILE).write_text(json.dumps({"class": "flavor_pymodels:Missing"}))
    with pytest.raises(InvalidArtifact):
        yard.register("gone", path=folder, sample={"x": np.zeros((1, 1))}, trusted=True)
    (folder / SPEC_FILE).write_text("{not json")
    with pytest.raises(InvalidArtifact):
        yard.register("gone", path=folder, sample={"x": np.zeros((1, 1))}, trusted=True)


def test_python_flavor_never_runs_code_without_trust(tmp_path: Path) -> None:
    flavor = get("python")
    with pytest.raises(UntrustedArtifact):
        flavor.load(tmp_path, {"class": "flavor_pymodels:Doubler"}, trusted=False)
    predictor = flavor.load(tmp_path, {"class": "flavor_pymodels:Doubler"}, trusted=True)
    assert predictor.predict({"x": np.array([1.0])})["doubled"].tolist() == [2.0]
