"""Signature rules: what an inference input must look like, and how it is converted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelyard.domain.errors import InvalidInput, ValidationFailed
from modelyard.domain.signature import (
    Signature,
    TensorSpec,
    as_input_dict,
    coerce,
    dtype_name,
)


def spec(dtype: str, shape: tuple[int, ...] = (-1,), *, allow_nan: bool = False) -> TensorSpec:
    return TensorSpec("x", dtype, shape, allow_nan=allow_nan)


def refused(s: TensorSpec, value: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        coerce(s, value)
    assert info.value.field == f"inputs.{s.name}"
    assert info.value.status == 422
    assert info.value.code == "invalid_input"
    return info.value


# -- dtypes -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_target_accepts_ints_and_converts(dtype: str) -> None:
    out = coerce(spec(dtype), [1, 2, 3])
    assert out.dtype == np.dtype(dtype)
    assert out.tolist() == [1.0, 2.0, 3.0]


def test_float_target_accepts_floats_of_other_widths() -> None:
    out = coerce(spec("float32"), np.array([0.5, 1.5], dtype=np.float64))
    assert out.dtype == np.float32
    assert out.tolist() == [0.5, 1.5]


def test_matching_array_is_passed_through() -> None:
    arr = np.array([[1.0, 2.0]], dtype=np.float32)
    out = coerce(spec("float32", (-1, 2)), arr)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint32"])
def test_int_target_accepts_ints(dtype: str) -> None:
    out = coerce(spec(dtype), [0, 1, 100])
    assert out.dtype == np.dtype(dtype)
    assert out.tolist() == [0, 1, 100]


@pytest.mark.parametrize("value", [[1.0, 2.0], [1.5], [1, 2.0], np.array([3.0], np.float32)])
def test_int_target_refuses_floats_even_integral_ones(value: Any) -> None:
    err = refused(spec("int64"), value)
    assert "floating-point" in err.detail


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        ("int8", [127, 128]),
        ("int8", [-129]),
        ("uint8", [256]),
        ("uint8", [-1]),
        ("int16", [40000]),
        ("int32", [2**31]),
        ("uint32", [-5, 3]),
        ("int64", [2**63]),  # numpy reads this as uint64
    ],
)
def test_int_target_refuses_out_of_range_values(dtype: str, value: list[int]) -> None:
    err = refused(spec(dtype), value)
    assert "outside the range" in err.detail


def test_int_target_range_edges_are_accepted() -> None:
    assert coerce(spec("int8"), [-128, 127]).tolist() == [-128, 127]
    assert coerce(spec("uint8"), [0, 255]).tolist() == [0, 255]
    out = coerce(spec("int64"), np.array([2**62], dtype=np.uint64))
    assert out.dtype == np.int64 and out.tolist() == [2**62]


def test_uint64_target_accepts_large_values() -> None:
    out = coerce(spec("uint64"), [2**63, 2**64 - 1])
    assert out.dtype == np.uint64 and out.tolist() == [2**63, 2**64 - 1]


def test_uint64_target_accepts_small_and_large_values_together() -> None:
    assert coerce(spec("uint64"), [0, 2**63]).tolist() == [0, 2**63]


def test_int_beyond_uint64_is_refused() -> None:
    refused(spec("int64"), [2**64])


def test_bool_target_accepts_bools_only() -> None:
    assert coerce(spec("bool"), [True, False]).tolist() == [True, False]
    refused(spec("bool"), [0, 1])
    refused(spec("bool"), [1.0])
    refused(spec("bool"), ["true"])


@pytest.mark.parametrize("dtype", ["int64", "uint8", "float32", "float64"])
def test_numeric_target_refuses_bools(dtype: str) -> None:
    err = refused(spec(dtype), [True, False])
    assert "bool" in err.detail


@pytest.mark.parametrize("dtype", ["int64", "float32", "bool"])
@pytest.mark.parametrize("value", [["1"], ["1.5", "2"], ["nan"], np.array([b"1"])])
def test_strings_are_never_parsed_into_numbers(dtype: str, value: Any) -> None:
    err = refused(spec(dtype), value)
    assert "string" in err.detail


def test_string_target_accepts_str_and_bytes() -> None:
    out = coerce(spec("string"), ["a", "bc"])
    assert out.dtype == object and out.tolist() == ["a", "bc"]
    out = coerce(spec("string"), np.array([b"a", "b"], dtype=object))
    assert out.tolist() == [b"a", "b"]
    assert coerce(spec("string"), np.array([b"x"])).dtype == object


@pytest.mark.parametrize("value", [[1, 2], [1.5], [True], ["a", None], [None]])
def test_string_target_refuses_non_strings(value: Any) -> None:
    refused(spec("string"), value)


@pytest.mark.parametrize("value", [["a", 1], ["a", True], ["a", 2.5]])
def test_string_target_refuses_numbers_mixed_with_strings(value: Any) -> None:
    refused(spec("string"), value)


@pytest.mark.parametrize(
    "value",
    [[1.0, None], [None], [[1.0, 2.0], [3.0]], [[1.0], 2.0], [{"a": 1}]],
)
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_null_nested_and_ragged_values_are_refused(dtype: str, value: Any) -> None:
    refused(spec(dtype, (-1, -1) if isinstance(value[0], list) else (-1,)), value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nan_and_inf_refused_unless_allowed(dtype: str, bad: float) -> None:
    err = refused(spec(dtype), [1.0, bad])
    assert "NaN or Inf" in err.detail
    out = coerce(spec(dtype, allow_nan=True), [1.0, bad])
    assert out.dtype == np.dtype(dtype)
    assert not np.isfinite(out[1]) and out[0] == 1.0


def test_nan_refused_in_ndarray_too() -> None:
    refused(spec("float32", (-1, 2)), np.array([[0.0, np.nan]], dtype=np.float32))


def test_empty_batch_is_accepted_for_int_inputs_like_float_inputs() -> None:
    assert coerce(spec("float32"), []).shape == (0,)
    assert coerce(spec("int64"), []).shape == (0,)


# -- shapes -------------------------------------------------------------------------------


def test_rank_mismatch_is_refused() -> None:
    err = refused(spec("float32", (-1, 3)), [1.0, 2.0, 3.0])
    assert "2 dimensions" in err.detail
    refused(spec("float32", (-1,)), [[1.0]])
    refused(spec("float32", (-1,)), 1.0)


def test_fixed_dimension_mismatch_is_refused() -> None:
    s = spec("float32", (-1, 3))
    assert coerce(s, [[1, 2, 3], [4, 5, 6]]).shape == (2, 3)
    err = refused(s, [[1, 2], [3, 4]])
    assert "axis 1" in err.detail
    refused(spec("float32", (2, -1)), [[1.0], [2.0], [3.0]])


def test_free_dimensions_accept_any_size() -> None:
    s = spec("float64", (-1, -1))
    assert coerce(s, np.zeros((5, 7))).shape == (5, 7)
    assert coerce(s, np.zeros((0, 2))).shape == (0, 2)


def test_scalar_spec() -> None:
    s = spec("int32", ())
    out = coerce(s, 4)
    assert out.shape == () and out.dtype == np.int32
    refused(s, [4])


# -- Signature.validate ------------------------------------------------------------------


def two_inputs() -> Signature:
    return Signature(
        inputs=(TensorSpec("age", "int64", (-1,)), TensorSpec("features", "float32", (-1, 2))),
        outputs=(TensorSpec("score", "float32", (-1,)),),
    )


def test_validate_converts_every_input() -> None:
    out = two_inputs().validate({"age": [30, 40], "features": [[1, 2], [3, 4]]})
    assert set(out) == {"age", "features"}
    assert out["age"].dtype == np.int64 and out["features"].dtype == np.float32


def test_validate_refuses_unknown_input() -> None:
    with pytest.raises(InvalidInput) as info:
        two_inputs().validate({"age": [1], "features": [[1, 2]], "extra": [1]})
    assert info.value.field == "inputs.extra"
    assert "unknown input" in info.value.detail


def test_validate_refuses_missing_input() -> None:
    with pytest.raises(InvalidInput) as info:
        two_inputs().validate({"age": [1]})
    assert info.value.field == "inputs.features"
    assert "missing" in info.value.detail


def test_validate_refuses_row_count_mismatch() -> None:
    with pytest.raises(InvalidInput) as info:
        two_inputs().validate({"age": [1, 2, 3], "features": [[1, 2], [3, 4]]})
    assert info.value.field == "inputs.features"
    assert "rows" in info.value.detail


def test_validate_names_the_failing_input() -> None:
    with pytest.raises(InvalidInput) as info:
        two_inputs().validate({"age": [1.5], "features": [[1, 2]]})
    assert info.value.field == "inputs.age"
    with pytest.raises(InvalidInput) as info:
        two_inputs().validate({"age": [1], "features": [[1, float("nan")]]})
    assert info.value.field == "inputs.features"


def test_fixed_first_dimension_does_not_count_as_batch() -> None:
    sig = Signature(inputs=(TensorSpec("a", "float32", (-1,)), TensorSpec("b", "float32", (3,))))
    out = sig.validate({"a": [1.0], "b": [1.0, 2.0, 3.0]})
    assert out["a"].shape == (1,) and out["b"].shape == (3,)


def test_as_input_dict() -> None:
    assert as_input_dict([1, 2], ["x"]) == {"x": [1, 2]}
    assert as_input_dict({"a": 1}, ["a", "b"]) == {"a": 1}
    with pytest.raises(InvalidInput):
        as_input_dict([1, 2], ["a", "b"])


# -- construction, infer, example, round trip ---------------------------------------------


def test_tensor_spec_refuses_bad_definitions() -> None:
    with pytest.raises(ValidationFailed):
        TensorSpec("", "float32", (-1,))
    with pytest.raises(ValidationFailed) as info:
        TensorSpec("x", "float128", (-1,))
    assert info.value.field == "x"
    with pytest.raises(ValidationFailed):
        TensorSpec("x", "float32", (-2,))
    with pytest.raises(ValidationFailed):
        Signature(inputs=(spec("float32"), spec("int64")))


def test_infer_from_sample_and_outputs() -> None:
    sig = Signature.infer(
        {"x": np.zeros((3, 4), np.float32), "name": np.array(["a", "b", "c"])},
        {"label": np.zeros(3, np.int64), "p": np.zeros((3, 2), np.float64)},
    )
    assert sig.inputs == (
        TensorSpec("x", "float32", (-1, 4)),
        TensorSpec("name", "string", (-1,)),
    )
    assert sig.outputs == (
        TensorSpec("label", "int64", (-1,)),
        TensorSpec("p", "float64", (-1, 2)),
    )
    assert Signature.infer({"s": np.float32(1.0)}).inputs == (TensorSpec("s", "float32", ()),)


def test_dtype_name() -> None:
    assert dtype_name(np.float32) == "float32"
    assert dtype_name("<U3") == "string"
    assert dtype_name(object) == "string"
    with pytest.raises(ValidationFailed):
        dtype_name(np.complex64)


def test_example_satisfies_the_signature() -> None:
    sig = Signature(
        inputs=(
            TensorSpec("x", "float32", (-1, 4)),
            TensorSpec("ids", "int64", (-1,)),
            TensorSpec("text", "string", (-1,)),
            TensorSpec("mask", "bool", (-1, -1)),
            TensorSpec("fixed", "float64", (2, 3)),
        )
    )
    ex = sig.example(rows=3)
    assert ex["x"].shape == (3, 4) and ex["x"].dtype == np.float32
    assert ex["ids"].shape == (3,) and ex["ids"].dtype == np.int64
    assert ex["text"].tolist() == ["", "", ""]
    assert ex["mask"].shape == (3, 1)
    assert ex["fixed"].shape == (2, 3)
    out = sig.validate(ex)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in ex.items()}
    assert sig.example()["x"].shape == (1, 4)


def test_to_dict_from_dict_round_trip() -> None:
    sig = Signature(
        inputs=(
            TensorSpec("x", "float32", (-1, 4), allow_nan=True),
            TensorSpec("t", "string", (-1,)),
        ),
        outputs=(TensorSpec("y", "int64", (-1,)),),
    )
    data = sig.to_dict()
    assert data == {
        "inputs": [
            {"name": "x", "dtype": "float32", "shape": [-1, 4], "allow_nan": True},
            {"name": "t", "dtype": "string", "shape": [-1]},
        ],
        "outputs": [{"name": "y", "dtype": "int64", "shape": [-1]}],
    }
    assert Signature.from_dict(data) == sig
    # No outputs and no shape: the shape defaults to a free 1-d tensor.
    assert Signature.from_dict({"inputs": [{"name": "a", "dtype": "bool"}]}) == Signature(
        inputs=(TensorSpec("a", "bool", (-1,)),)
    )


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        {"inputs": "x"},
        {"inputs": [{"name": "x"}]},
        {"inputs": [{"dtype": "float32"}]},
        {"inputs": [{"name": "x", "dtype": "float32", "shape": ["a"]}]},
        {"inputs": [{"name": "x", "dtype": "nope"}]},
        {"inputs": [{"name": "x", "dtype": "int8"}, {"name": "x", "dtype": "int8"}]},
    ],
)
def test_from_dict_refuses_malformed(data: Any) -> None:
    with pytest.raises(ValidationFailed):
        Signature.from_dict(data)


@pytest.mark.parametrize("item", ["x", None, 3])
def test_from_dict_refuses_non_object_tensor_spec(item: Any) -> None:
    with pytest.raises(ValidationFailed):
        Signature.from_dict({"inputs": [item]})


@pytest.mark.parametrize("shape", [[1.5], [True, 3], ["4"]])
def test_from_dict_refuses_non_integer_dims(shape: list[Any]) -> None:
    with pytest.raises(ValidationFailed):
        Signature.from_dict({"inputs": [{"name": "x", "dtype": "float32", "shape": shape}]})


def test_input_lookup() -> None:
    sig = two_inputs()
    assert sig.input("age").dtype == "int64"
    with pytest.raises(KeyError):
        sig.input("nope")
