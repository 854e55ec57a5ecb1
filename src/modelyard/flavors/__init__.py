"""Model formats. The table below is the whole registry: no registration by import.

Each flavor's module is imported the first time it is needed, so a server that serves ONNX
models never pays for importing torch or transformers, and a flavor whose optional extra is
not installed is reported as unavailable instead of breaking the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from modelyard.domain.errors import FlavorUnavailable, ValidationFailed
from modelyard.flavors.base import Flavor, Predictor

# name -> "module:Class", in detection order (the first flavor that matches wins).
# Narrow matchers come first: a SentenceTransformer is also a torch module, and its exported
# folder also holds a .onnx file; a causal LM is a torch module too.
REGISTRY: dict[str, str] = {
    "sentence_transformers":
        "modelyard.flavors.sentence_transformers:SentenceTransformersFlavor",
    "causal_lm": "modelyard.flavors.causal_lm:CausalLMFlavor",
    "onnx": "modelyard.flavors.onnx:OnnxFlavor",
    "sklearn": "modelyard.flavors.sklearn:SklearnFlavor",
    "torch": "modelyard.flavors.torch:TorchFlavor",
    "remote": "modelyard.flavors.remote:RemoteFlavor",
    "python": "modelyard.flavors.python:PythonFlavor",
}
# The extra that brings each flavor's libraries, for the error message.
EXTRAS = {"torch": "torch", "sentence_transformers": "text", "causal_lm": "text"}

_loaded: dict[str, Flavor] = {}

__all__ = ["REGISTRY", "Flavor", "Predictor", "available", "detect_for_files",
           "detect_for_object", "get"]


def get(name: str) -> Flavor:
    if name not in REGISTRY:
        raise ValidationFailed(
            f"unknown flavor {name!r}; choose one of {', '.join(REGISTRY)}", field="flavor"
        )
    if name not in _loaded:
        module_name, _, class_name = REGISTRY[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = EXTRAS.get(name)
            hint = f" (pip install 'modelyard[{extra}]')" if extra else ""
            raise FlavorUnavailable(f"the {name} flavor is not available here{hint}: {exc}",
                                    field="flavor") from exc
        _loaded[name] = getattr(module, class_name)()
    return _loaded[name]


def available() -> list[Flavor]:
    """Every flavor that can be loaded here, in detection order."""
    found = []
    for name in REGISTRY:
        try:
            found.append(get(name))
        except FlavorUnavailable:
            continue
    return found


def detect_for_object(model: Any) -> Flavor:
    for flavor in available():
        if flavor.matches_object(model):
            return flavor
    raise FlavorUnavailable(
        f"cannot tell the flavor of a {type(model).__name__}; pass flavor= explicitly",
        field="flavor",
    )


def detect_for_files(folder: Any) -> Flavor:
    for flavor in available():
        if flavor.matches_files(folder):
            return flavor
    raise FlavorUnavailable(
        "cannot tell the flavor of these files (expected a .onnx, .skops, .pt/.pt2, a saved "
        "sentence-transformers or transformers model, or a modelyard python model); pass "
        "--flavor",
        field="flavor",
    )
