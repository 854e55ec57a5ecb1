"""Plain Python models for the python-flavor tests. They live at module level in an importable
module, as the python flavor requires."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class Doubler:
    """Doubles its one input ``x``."""

    def load(self, path: str) -> None:
        self.factor = 2.0

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"doubled": inputs["x"] * self.factor}


class Scaler:
    """Multiplies ``x`` by the ``scale`` stored in the artifact's ``scale.json``."""

    def load(self, path: str) -> None:
        self.scale = float(json.loads((Path(path) / "scale.json").read_text())["scale"])

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"scaled": inputs["x"] * np.float32(self.scale)}


class BareArray:
    """Returns a bare array instead of a mapping: it becomes the output ``output``."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return inputs["x"].sum(axis=1)


class Broken:
    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ZeroDivisionError("the model itself is broken")
