"""Plain Python models: a class with ``load(path)`` and ``predict(inputs)``.

This is code, so it is always trusted code: the class must be importable where the model is
served (it lives in the project, not in the artifact), and registration must say ``trusted``.
The artifact holds the class's import path plus any files the class loads.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.domain.errors import InvalidArtifact, UntrustedArtifact, ValidationFailed
from modelyard.domain.signature import Signature
from modelyard.flavors.base import Arrays, Predictor

SPEC_FILE = "modelyard_python.json"


def import_path(model: Any) -> str:
    if isinstance(model, str):
        if ":" not in model:
            raise ValidationFailed("a python model is given as 'module:Class'", field="model")
        return model
    cls = model if isinstance(model, type) else type(model)
    if not (callable(getattr(cls, "load", None)) and callable(getattr(cls, "predict", None))):
        raise ValidationFailed(
            f"{cls.__name__} needs load(path) and predict(inputs) methods", field="model"
        )
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ValidationFailed(
            f"{cls.__qualname__} must be importable (defined at module level in an importable "
            "module, not in __main__ or a function)",
            field="model",
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidArtifact(f"cannot import python model class {path!r}: {exc}") from exc
    if not isinstance(obj, type):
        raise InvalidArtifact(f"{path!r} is not a class")
    return obj


class PythonPredictor:
    def __init__(self, instance: Any) -> None:
        self.instance = instance

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        result = self.instance.predict(dict(inputs))
        if not isinstance(result, Mapping):
            result = {"output": result}
        return {str(k): np.asarray(v) for k, v in result.items()}


class PythonFlavor:
    name = "python"

    def matches_object(self, model: Any) -> bool:
        cls = model if isinstance(model, type) else type(model)
        return callable(getattr(cls, "load", None)) and callable(getattr(cls, "predict", None))

    def matches_files(self, folder: Path) -> bool:
        return (folder / SPEC_FILE).is_file()

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        path = import_path(model)
        (folder / SPEC_FILE).write_text(json.dumps({"class": path}))
        return {"class": path}

    def inspect(
        self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        try:
            spec = json.loads((folder / SPEC_FILE).read_text())
            path = str(spec["class"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidArtifact(f"a python artifact needs {SPEC_FILE} with a 'class'") from exc
        if not trusted:
            raise UntrustedArtifact(
                f"python models run project code ({path}); pass trusted=True (--trusted)",
                field="trusted",
            )
        return {"class": import_path(path)}

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        if not trusted:
            raise UntrustedArtifact("refusing to run python model code not marked trusted")
        instance = resolve(str(options["class"]))()
        instance.load(str(folder))
        return PythonPredictor(instance)

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        return None
