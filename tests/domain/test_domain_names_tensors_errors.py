"""Model references, OIP v2 tensor decoding, errors as problem documents."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelyard.domain import errors
from modelyard.domain.errors import InvalidInput, ModelyardError, ValidationFailed
from modelyard.domain.names import ModelRef, check_alias, check_name
from modelyard.domain.registry import Lineage, fingerprint
from modelyard.domain.tensors import decode, decode_many, encode, to_jsonable

# -- ModelRef -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("churn", ModelRef("churn")),
        ("churn:3", ModelRef("churn", version=3)),
        ("churn@champion", ModelRef("churn", alias="champion")),
        ("a.b_c-d", ModelRef("a.b_c-d")),
        ("9lives@v2-candidate", ModelRef("9lives", alias="v2-candidate")),
    ],
)
def test_model_ref_parses(text: str, expected: ModelRef) -> None:
    assert ModelRef.parse(text) == expected


@pytest.mark.parametrize("text", ["churn", "churn:3", "churn@champion"])
def test_model_ref_str_round_trips(text: str) -> None:
    assert str(ModelRef.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "churn:",
        "churn:0",
        "churn:-1",
        "churn:x",
        "churn:1.5",
        "churn:3:4",
        ":3",
        "churn@",
        "@champion",
        "churn@7",  # a number is a version, not an alias
        "churn@a@b",
        "churn@ champ",
        "has space",
        "-leading-dash",
        ".hidden",
        "a/b",
        "x" * 129,
        "émoji",
    ],
)
def test_model_ref_refuses_bad_forms(text: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        ModelRef.parse(text, field="endpoint.model")
    assert info.value.field == "endpoint.model"
    assert info.value.status == 422


def test_model_ref_refuses_non_strings() -> None:
    with pytest.raises(ValidationFailed):
        ModelRef.parse(3)  # type: ignore[arg-type]


def test_name_length_limit() -> None:
    assert check_name("x" * 128) == "x" * 128
    with pytest.raises(ValidationFailed):
        check_name("x" * 129)
    assert check_alias("champion") == "champion"
    with pytest.raises(ValidationFailed) as info:
        check_alias("123")
    assert info.value.field == "alias"


@pytest.mark.parametrize("text", ["churn\n", "churn@champion\n"])
def test_model_ref_refuses_trailing_newline(text: str) -> None:
    with pytest.raises(ValidationFailed):
        ModelRef.parse(text)


@pytest.mark.parametrize("text", ["churn:²", "churn:٣"])
def test_model_ref_refuses_non_ascii_digits(text: str) -> None:
    with pytest.raises(ValidationFailed):
        ModelRef.parse(text)


# -- tensors ------------------------------------------------------------------------------


def tensor(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [2, 2],
                            "data": [1, 2, 3, 4]}
    base.update(kw)
    return base


def decode_refused(t: Any, field: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        decode(t, "inputs[0]")
    assert info.value.field == field
    return info.value


def test_decode_flat_and_nested_data() -> None:
    name, arr = decode(tensor(), "inputs[0]")
    assert name == "x" and arr.dtype == np.float32 and arr.shape == (2, 2)
    assert arr.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    _, nested = decode(tensor(data=[[1, 2], [3, 4]]), "inputs[0]")
    np.testing.assert_array_equal(arr, nested)


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("BOOL", [True, False], np.bool_),
        ("INT8", [-128, 127], np.int8),
        ("UINT8", [0, 255], np.uint8),
        ("INT32", [1, 2], np.int32),
        ("INT64", [1, -2], np.int64),
        ("UINT64", [2**63, 2**64 - 1], np.uint64),
        ("FP16", [0.5, 1], np.float16),
        ("FP64", [0.25, 3], np.float64),
    ],
)
def test_decode_datatypes(datatype: str, data: list[Any], dtype: Any) -> None:
    _, arr = decode({"name": "t", "datatype": datatype, "shape": [2], "data": data}, "i")
    assert arr.dtype == np.dtype(dtype)
    assert arr.tolist() == data


def test_decode_uint64_mixing_small_and_large_values() -> None:
    _, arr = decode({"name": "t", "datatype": "UINT64", "shape": [2], "data": [0, 2**63]}, "i")
    assert arr.dtype == np.uint64 and arr.tolist() == [0, 2**63]


def test_decode_bytes() -> None:
    _, arr = decode({"name": "s", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "bc"]},
                    "inputs[0]")
    assert arr.dtype == object and arr.shape == (1, 2) and arr.tolist() == [["a", "bc"]]


@pytest.mark.parametrize("data", [[1, 2], ["a", None], ["a", 1], [["a"], ["b", "c"]]])
def test_decode_bytes_refuses_non_strings(data: list[Any]) -> None:
    decode_refused({"name": "s", "datatype": "BYTES", "shape": [2], "data": data},
                   "inputs.s.data")


def test_decode_scalar_shape() -> None:
    _, arr = decode({"name": "s", "datatype": "INT64", "shape": [], "data": [5]}, "i")
    assert arr.shape == () and int(arr) == 5


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("INT64", [1.5, 2]),
        ("INT32", [1.0, 2.0]),
        ("BOOL", [1, 0]),
        ("FP32", [True, False]),
        ("FP32", ["1", "2"]),
        ("FP32", [1, None]),
        ("INT8", [1, 200]),
        ("UINT8", [-1, 0]),
        ("INT64", [2**64, 0]),
    ],
)
def test_decode_refuses_data_not_matching_datatype(datatype: str, data: list[Any]) -> None:
    decode_refused({"name": "t", "datatype": datatype, "shape": [2], "data": data},
                   "inputs.t.data")


@pytest.mark.parametrize(
    ("shape", "data"),
    [([2, 2], [1, 2, 3]), ([3], [1, 2, 3, 4]), ([0], [1]), ([], [1, 2])],
)
def test_decode_refuses_count_mismatch(shape: list[int], data: list[Any]) -> None:
    err = decode_refused(tensor(shape=shape, data=data), "inputs.x.data")
    assert "values but shape" in err.detail


def test_decode_refuses_ragged_data() -> None:
    decode_refused(tensor(data=[[1, 2], [3]]), "inputs.x.data")


@pytest.mark.parametrize("shape", [None, "2,2", [2, -1], [2.0, 2], [True, 4], [[2]]])
def test_decode_refuses_bad_shape(shape: Any) -> None:
    decode_refused(tensor(shape=shape), "inputs.x.shape")


@pytest.mark.parametrize("datatype", [None, "FLOAT32", "fp32", "STRING", 3])
def test_decode_refuses_unknown_datatype(datatype: Any) -> None:
    decode_refused(tensor(datatype=datatype), "inputs.x.datatype")


def test_decode_refuses_missing_parts() -> None:
    t = tensor()
    del t["data"]
    decode_refused(t, "inputs.x.data")
    decode_refused(tensor(name=""), "inputs[0].name")
    decode_refused(tensor(name=7), "inputs[0].name")
    decode_refused([1, 2], "inputs[0]")


def test_decode_many() -> None:
    out = decode_many([tensor(), {"name": "y", "datatype": "INT64", "shape": [1], "data": [3]}])
    assert list(out) == ["x", "y"] and out["y"].tolist() == [3]
    with pytest.raises(InvalidInput) as info:
        decode_many([tensor(), tensor()])
    assert info.value.field == "inputs[1].name"
    with pytest.raises(InvalidInput) as info:
        decode_many({"x": [1]})
    assert info.value.field == "inputs"
    with pytest.raises(InvalidInput) as info:
        decode_many([tensor(), "nope"])
    assert info.value.field == "inputs[1]"


def test_encode_decode_round_trip() -> None:
    arrays = {
        "f": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i": np.array([1, -2], dtype=np.int16),
        "b": np.array([True, False]),
        "s": np.array(["a", "b"]),
    }
    encoded = to_jsonable(arrays)
    assert [t["datatype"] for t in encoded] == ["FP32", "INT16", "BOOL", "BYTES"]
    assert encoded[0]["shape"] == [2, 3] and encoded[0]["data"] == [0, 1, 2, 3, 4, 5]
    back = decode_many(encoded)
    for name, array in arrays.items():
        assert back[name].dtype == (object if name == "s" else array.dtype)
        assert back[name].tolist() == array.tolist()
    assert encode("b", np.array([b"x"]))["data"].tolist() == ["x"]


# -- errors -------------------------------------------------------------------------------


def test_to_problem() -> None:
    err = InvalidInput("bad age", field="inputs.age")
    assert err.to_problem() == {
        "type": "https://modelyard.dev/problems/invalid_input",
        "title": "Input does not match the signature",
        "status": 422,
        "detail": "bad age",
        "code": "invalid_input",
        "field": "inputs.age",
    }
    assert str(err) == "bad age"


def test_to_problem_without_field_with_extras() -> None:
    problem = errors.UntrustedArtifact("no", untrusted_types=["a.B"]).to_problem()
    assert "field" not in problem
    assert problem["untrusted_types"] == ["a.B"]
    assert problem["status"] == 400 and problem["code"] == "untrusted_artifact"


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (errors.ModelNotFound, 404, "model_not_found"),
        (errors.VersionNotFound, 404, "version_not_found"),
        (errors.AliasNotFound, 404, "alias_not_found"),
        (errors.EndpointNotFound, 404, "endpoint_not_found"),
        (errors.InUse, 409, "in_use"),
        (errors.VersionArchived, 409, "version_archived"),
        (errors.AlreadyExists, 409, "already_exists"),
        (errors.ValidationFailed, 422, "validation_failed"),
        (errors.InvalidJSON, 400, "invalid_json"),
        (errors.ArtifactCorrupted, 500, "artifact_corrupted"),
        (errors.UntrustedArtifact, 400, "untrusted_artifact"),
    ],
)
def test_error_codes_and_statuses(cls: type[ModelyardError], status: int, code: str) -> None:
    problem = cls("x").to_problem()
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"].endswith("/" + code)
    assert issubclass(cls, ModelyardError)


def test_not_found_family() -> None:
    for cls in (errors.ModelNotFound, errors.VersionNotFound, errors.AliasNotFound):
        assert issubclass(cls, errors.NotFound)
    assert issubclass(errors.InUse, errors.Conflict)


# -- lineage ------------------------------------------------------------------------------


def test_lineage_round_trip() -> None:
    lineage = Lineage(data_fingerprint="sha256:ab", params={"C": 1.0}, metrics={"auc": 0.9},
                      code_revision="abc", parent="churn:1", tags={"team": "risk"},
                      trusted=True)
    assert Lineage.from_dict(lineage.to_dict()) == lineage
    assert Lineage.from_dict(None) == Lineage()


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a.reshape(3, 2))
    assert fingerprint(a) != fingerprint(a.astype(np.float64))
    assert fingerprint(b"x") == fingerprint(b"x") != fingerprint("y")
    assert fingerprint(a).startswith("sha256:")
