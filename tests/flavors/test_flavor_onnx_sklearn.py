"""ONNX and scikit-learn flavors: conversion, native signatures, skops trust, pickles."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from skops.io.exceptions import UntrustedTypesFoundException

from modelyard import Yard
from modelyard.domain.errors import (
    FlavorUnavailable,
    InvalidArtifact,
    ModelNotFound,
    UntrustedArtifact,
    ValidationFailed,
)
from modelyard.domain.registry import ModelVersion
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.flavors import get
from modelyard.flavors.onnx import sklearn_to_onnx

Tabular = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Flavors do not depend on the database: SQLite only, to stay fast."""
    return f"sqlite:///{tmp_path / 'yard.db'}"


def predict(yard: Yard, version: ModelVersion, inputs: Any) -> dict[str, np.ndarray]:
    names = [s.name for s in version.signature.inputs]
    arrays = inputs if isinstance(inputs, dict) else {names[0]: inputs}
    return yard.registry.load_predictor(version).predict(version.signature.validate(arrays))


def assert_not_registered(yard: Yard, name: str) -> None:
    with pytest.raises(ModelNotFound):
        yard.model(name)


@pytest.fixture(scope="module")
def forest(tabular: Tabular) -> RandomForestClassifier:
    x, label, _ = tabular
    return RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, label)


# -- onnx ---------------------------------------------------------------------------------


def test_sklearn_classifier_to_onnx(yard: Yard, classifier: LogisticRegression,
                                    tabular: Tabular) -> None:
    x, _, _ = tabular
    v = yard.register("churn", classifier, sample=x[:5], to_onnx=True)
    assert v.flavor == "onnx"
    assert v.signature == Signature(
        inputs=(TensorSpec("input", "float32", (-1, 4)),),
        outputs=(TensorSpec("label", "int64", (-1,)),
                 TensorSpec("probabilities", "float32", (-1, 2))),
    )
    out = predict(yard, v, x)
    assert set(out) == {"label", "probabilities"}
    np.testing.assert_array_equal(out["label"], classifier.predict(x))
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(x), atol=1e-5)
    # The stored artifact is one .onnx file, loadable by onnx itself.
    folder = yard.artifacts.materialize(v.artifact_digest)
    assert [p.name for p in folder.iterdir()] == ["model.onnx"]
    onnx.checker.check_model(str(folder / "model.onnx"))


def test_sklearn_regressor_to_onnx_with_named_input(yard: Yard, regressor: Ridge,
                                                    tabular: Tabular) -> None:
    x, _, _ = tabular
    v = yard.register("price", regressor, sample={"features": x[:5].astype(np.float64)},
                      to_onnx=True)
    assert [s.name for s in v.signature.inputs] == ["features"]
    assert v.signature.inputs[0].dtype == "float32"
    assert [s.name for s in v.signature.outputs] == ["prediction"]
    out = predict(yard, v, {"features": x})
    np.testing.assert_allclose(out["prediction"].reshape(-1), regressor.predict(x), atol=1e-4)


def test_onnx_proto_and_file_register_with_native_signature(yard: Yard,
                                                             classifier: LogisticRegression,
                                                             tabular: Tabular,
                                                             tmp_path: Path) -> None:
    x, _, _ = tabular
    proto = sklearn_to_onnx(classifier, {"input": x[:2]})
    # No sample needed: ONNX declares its own signature.
    from_object = yard.register("a", proto)
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    from_file = yard.register("b", path=path)
    assert from_object.flavor == from_file.flavor == "onnx"
    assert from_object.signature == from_file.signature
    assert from_object.input_example is None
    assert from_file.flavor_options["file"] == "m.onnx"
    np.testing.assert_array_equal(predict(yard, from_file, x)["label"], classifier.predict(x))


def test_invalid_onnx_is_refused(yard: Yard, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(InvalidArtifact):
        yard.register("bad", path=path)
    assert_not_registered(yard, "bad")


def test_to_onnx_needs_a_sample_and_a_convertible_model(yard: Yard,
                                                        classifier: LogisticRegression) -> None:
    with pytest.raises(ValidationFailed) as info:
        yard.register("churn", classifier, to_onnx=True)
    assert info.value.field == "sample"
    with pytest.raises(ValidationFailed):
        yard.register("churn", object(), sample=np.zeros((2, 4), np.float32), to_onnx=True)
    assert_not_registered(yard, "churn")


def test_to_onnx_from_a_skops_file(yard: Yard, classifier: LogisticRegression,
                                   tabular: Tabular, tmp_path: Path) -> None:
    import skops.io as sio

    x, _, _ = tabular
    path = tmp_path / "model.skops"
    sio.dump(classifier, path)
    v = yard.register("churn", path=path, sample=x[:3], to_onnx=True)
    assert v.flavor == "onnx"
    np.testing.assert_array_equal(predict(yard, v, x)["label"], classifier.predict(x))


# -- sklearn / skops ----------------------------------------------------------------------


def test_logistic_regression_skops_round_trip(yard: Yard, classifier: LogisticRegression,
                                              tabular: Tabular) -> None:
    x, _, _ = tabular
    v = yard.register("churn", classifier, sample=x[:5])
    assert v.flavor == "sklearn"
    assert v.flavor_options["format"] == "skops"
    assert v.flavor_options["file"] == "model.skops"
    assert v.lineage.trusted is False
    assert v.signature == Signature(
        inputs=(TensorSpec("input", "float32", (-1, 4)),),
        outputs=(TensorSpec("label", "int64", (-1,)),
                 TensorSpec("probabilities", "float32", (-1, 2))),
    )
    out = predict(yard, v, x)
    np.testing.assert_array_equal(out["label"], classifier.predict(x))
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(x), rtol=1e-6)


def test_regressor_skops_round_trip(yard: Yard, regressor: Ridge, tabular: Tabular) -> None:
    x, _, _ = tabular
    v = yard.register("price", regressor, sample=x[:5])
    assert [s.name for s in v.signature.outputs] == ["prediction"]
    np.testing.assert_allclose(predict(yard, v, x)["prediction"], regressor.predict(x))


def test_forest_from_memory_is_trusted_but_its_file_is_not(
    yard: Yard, forest: RandomForestClassifier, tabular: Tabular, tmp_path: Path
) -> None:
    x, _, _ = tabular
    v = yard.register("forest", forest, sample=x[:5])
    assert v.flavor_options["trusted_types"] == ["sklearn.tree._tree.Tree"]
    out = predict(yard, v, x)
    np.testing.assert_array_equal(out["label"], forest.predict(x))
    np.testing.assert_allclose(out["probabilities"], forest.predict_proba(x), rtol=1e-6)

    # The very same .skops file, handed over as a file, is not trusted by default.
    path = tmp_path / "forest.skops"
    shutil.copyfile(yard.artifacts.materialize(v.artifact_digest) / "model.skops", path)
    with pytest.raises(UntrustedArtifact) as info:
        yard.register("forest-file", path=path, sample=x[:5])
    assert info.value.status == 400
    problem = info.value.to_problem()
    assert problem["untrusted_types"] == ["sklearn.tree._tree.Tree"]
    assert problem["field"] == "trusted_types"
    assert_not_registered(yard, "forest-file")

    with pytest.raises(UntrustedArtifact):
        yard.register("forest-file", path=path, sample=x[:5], trusted_types=["numpy.ndarray"])

    ok = yard.register("forest-file", path=path, sample=x[:5],
                       trusted_types=["sklearn.tree._tree.Tree"])
    assert ok.version == 1 and ok.flavor == "sklearn"
    assert ok.lineage.trusted is False
    np.testing.assert_array_equal(predict(yard, ok, x)["label"], forest.predict(x))


def test_skops_load_trusts_only_the_recorded_types(forest: RandomForestClassifier,
                                                   tmp_path: Path) -> None:
    flavor = get("sklearn")
    flavor.save(forest, tmp_path, sample=None)
    with pytest.raises(UntrustedTypesFoundException):
        flavor.load(tmp_path, {"file": "model.skops", "format": "skops"}, trusted=False)


def test_broken_skops_file_is_invalid(yard: Yard, tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(InvalidArtifact):
        yard.register("broken", path=path, sample=np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_pickles_need_explicit_trust(yard: Yard, classifier: LogisticRegression,
                                     tabular: Tabular, tmp_path: Path, suffix: str) -> None:
    x, _, _ = tabular
    path = tmp_path / f"model{suffix}"
    if suffix == ".joblib":
        joblib.dump(classifier, path)
    else:
        path.write_bytes(pickle.dumps(classifier))
    with pytest.raises(UntrustedArtifact) as info:
        yard.register("pickled", path=path, sample=x[:5])
    assert info.value.status == 400
    assert info.value.to_problem()["code"] == "untrusted_artifact"
    assert info.value.field == "trusted"
    assert_not_registered(yard, "pickled")
    assert list(yard.artifacts.digests()) == []  # refused before anything was stored

    v = yard.register("pickled", path=path, sample=x[:5], trusted=True)
    assert v.flavor == "sklearn"
    assert v.flavor_options["format"] == "pickle"
    assert v.lineage.trusted is True
    assert yard.version("pickled:1").lineage.trusted is True
    np.testing.assert_array_equal(predict(yard, v, x)["label"], classifier.predict(x))


def test_pickle_is_not_loaded_without_trust(classifier: LogisticRegression,
                                            tmp_path: Path) -> None:
    joblib.dump(classifier, tmp_path / "model.joblib")
    flavor = get("sklearn")
    with pytest.raises(UntrustedArtifact):
        flavor.inspect(tmp_path, trusted=False)
    options = flavor.inspect(tmp_path, trusted=True)
    with pytest.raises(UntrustedArtifact):
        flavor.load(tmp_path, options, trusted=False)


def test_ambiguous_sklearn_folder_is_refused(yard: Yard, classifier: LogisticRegression,
                                             tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    joblib.dump(classifier, folder / "a.joblib")
    joblib.dump(classifier, folder / "b.joblib")
    with pytest.raises(FlavorUnavailable):
        yard.register("m", path=folder, trusted=True, sample=np.zeros((1, 4), np.float32))
    with pytest.raises(InvalidArtifact):
        yard.register("m", path=folder, flavor="sklearn", trusted=True,
                      sample=np.zeros((1, 4), np.float32))


def test_sklearn_without_sample_or_signature_is_refused(yard: Yard,
                                                        classifier: LogisticRegression) -> None:
    with pytest.raises(ValidationFailed) as info:
        yard.register("churn", classifier)
    assert info.value.field == "sample"


def test_explicit_signature_is_checked_against_the_sample(yard: Yard,
                                                          classifier: LogisticRegression,
                                                          tabular: Tabular) -> None:
    x, _, _ = tabular
    sig = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}]}
    v = yard.register("churn", classifier, sample=x[:3], signature=sig)
    # Outputs are filled in from running the model on the sample.
    assert [s.name for s in v.signature.outputs] == ["label", "probabilities"]
    bad = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 5]}]}
    with pytest.raises(ValidationFailed) as info:
        yard.register("churn", classifier, sample=x[:3], signature=bad)
    assert info.value.field == "sample"


def test_unknown_flavor_and_undetectable_object(yard: Yard) -> None:
    with pytest.raises(ValidationFailed) as info:
        yard.register("m", object(), flavor="tensorflow", sample=np.zeros((1, 1)))
    assert info.value.field == "flavor"
    with pytest.raises(FlavorUnavailable):
        yard.register("m", object(), sample=np.zeros((1, 1)))


def test_an_estimator_skl2onnx_cannot_convert_gets_a_short_reason() -> None:
    """skl2onnx's messages can quote whole weight arrays: the error stays one bounded line."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from modelyard.domain.errors import ValidationFailed
    from modelyard.flavors.onnx import sklearn_to_onnx

    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, (x[:, 0] > 0).astype(int))
    try:
        sklearn_to_onnx(model, {"input": x[:2]})
    except ValidationFailed as exc:
        assert exc.field == "to_onnx"
        assert "\n" not in exc.detail and len(exc.detail) < 600, exc.detail
        assert "without --to-onnx" in exc.detail
    else:  # a newer skl2onnx converts it: nothing to bound
        pass
