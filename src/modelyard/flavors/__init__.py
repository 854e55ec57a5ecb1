"""Model formats. The table below is the whole registry: no registration by import."""

from __future__ import annotations

from typing import Any

from modelyard.domain.errors import FlavorUnavailable, ValidationFailed
from modelyard.flavors.base import Flavor, Predictor
from modelyard.flavors.onnx import OnnxFlavor
from modelyard.flavors.python import PythonFlavor
from modelyard.flavors.sklearn import SklearnFlavor
from modelyard.flavors.torch import TorchFlavor

FLAVORS: dict[str, Flavor] = {
    f.name: f for f in (OnnxFlavor(), SklearnFlavor(), TorchFlavor(), PythonFlavor())
}

__all__ = ["FLAVORS", "Flavor", "Predictor", "detect_for_files", "detect_for_object", "get"]


def get(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise ValidationFailed(
            f"unknown flavor {name!r}; choose one of {', '.join(FLAVORS)}", field="flavor"
        ) from None


def detect_for_object(model: Any) -> Flavor:
    for flavor in FLAVORS.values():
        if flavor.matches_object(model):
            return flavor
    raise FlavorUnavailable(
        f"cannot tell the flavor of a {type(model).__name__}; pass flavor= explicitly",
        field="flavor",
    )


def detect_for_files(folder: Any) -> Flavor:
    for flavor in FLAVORS.values():
        if flavor.matches_files(folder):
            return flavor
    raise FlavorUnavailable(
        "cannot tell the flavor of these files (expected a .onnx, .skops, .pt/.pt2 or a "
        "modelyard python model); pass --flavor",
        field="flavor",
    )
