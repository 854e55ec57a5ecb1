"""ONNX models run by onnxruntime: the recommended fast path.

scikit-learn estimators convert with skl2onnx (``to_onnx``); classifiers produce a ``label``
and a ``probabilities`` tensor (no ZipMap, so outputs stay plain arrays).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.domain.errors import InvalidArtifact, ValidationFailed
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.flavors.base import Arrays, Predictor, only_file

FILE = "model.onnx"

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


class OnnxPredictor:
    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One intra-op thread by default: the server runs requests in parallel already, and
        # oversubscribing two cores costs more than it gains (override with options.threads).
        opts.intra_op_num_threads = threads or int(os.environ.get("MODELYARD_ORT_THREADS", "1"))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, dict(inputs))
        return {name: np.asarray(value) for name, value in zip(self.output_names, results,
                                                             strict=True)}


class OnnxFlavor:
    name = "onnx"

    def matches_object(self, model: Any) -> bool:
        return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")

    def matches_files(self, folder: Path) -> bool:
        return only_file(folder, (".onnx",)) is not None

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        if isinstance(model, bytes | bytearray):
            (folder / FILE).write_bytes(bytes(model))
        elif self.matches_object(model):
            (folder / FILE).write_bytes(model.SerializeToString())
        else:
            raise ValidationFailed(
                f"the onnx flavor saves an onnx.ModelProto or its bytes, not a "
                f"{type(model).__name__}; use to_onnx=True to convert a scikit-learn model",
                field="flavor",
            )
        return {"file": FILE}

    def inspect(
        self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        found = only_file(folder, (".onnx",))
        if found is None:
            raise InvalidArtifact("an onnx artifact must hold exactly one .onnx file")
        import onnx

        try:
            onnx.checker.check_model(str(found))
        except Exception as exc:  # onnx raises several unrelated types
            raise InvalidArtifact(f"{found.name} is not a valid ONNX model: {exc}") from exc
        return {"file": found.relative_to(folder).as_posix()}

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        return OnnxPredictor(folder / options.get("file", FILE), options.get("threads"))

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        predictor = OnnxPredictor(folder / options.get("file", FILE))
        session = predictor.session

        def spec(arg: Any) -> TensorSpec:
            dtype = _ORT_TYPES.get(arg.type)
            if dtype is None:
                raise InvalidArtifact(
                    f"ONNX tensor {arg.name!r} has type {arg.type}, which Modelyard cannot "
                    "serve; convert sequences and maps to tensors (e.g. zipmap=False)"
                )
            shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or []))
            return TensorSpec(arg.name, dtype, shape)

        return Signature(
            inputs=tuple(spec(a) for a in session.get_inputs()),
            outputs=tuple(spec(a) for a in session.get_outputs()),
        )


def sklearn_to_onnx(estimator: Any, sample: Arrays) -> Any:
    """Convert a fitted scikit-learn estimator to ONNX with plain tensor outputs."""
    from skl2onnx import to_onnx

    if len(sample) != 1:
        raise ValidationFailed("to_onnx needs a sample with exactly one input tensor")
    (name, array), = sample.items()
    array = np.asarray(array)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    options: dict[Any, Any] = {}
    if hasattr(estimator, "predict_proba"):
        options = {id(estimator): {"zipmap": False}}
    try:
        proto = to_onnx(estimator, array[:1], options=options, target_opset=17)
    except Exception as exc:  # skl2onnx raises many types for unsupported estimators
        # Its messages can quote whole weight arrays: the first line, bounded, is the reason.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if len(reason) > 300:
            reason = reason[:300] + "…"
        raise ValidationFailed(f"cannot convert {type(estimator).__name__} to ONNX: {reason} "
                               "(register it without --to-onnx to serve it as scikit-learn)",
                               field="to_onnx") from exc
    _rename(proto, {proto.graph.input[0].name: name})
    renames = {"output_label": "label", "output_probability": "probabilities",
               "variable": "prediction"}
    _rename(proto, {o.name: renames[o.name] for o in proto.graph.output if o.name in renames})
    return proto


def _rename(proto: Any, names: dict[str, str]) -> None:
    if not names:
        return
    graph = proto.graph
    for value in list(graph.input) + list(graph.output):
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
