"""Tiny ``python``-flavor models with known behaviour, for tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np


class Echo:
    """Returns its inputs unchanged (as ``output`` for a single input)."""

    def load(self, path: str) -> None:
        self.path = path

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(inputs) == 1:
            return {"output": next(iter(inputs.values()))}
        return dict(inputs)


class Sleepy:
    """Sums each row after sleeping a fixed time per batch (a model with a known cost)."""

    seconds = 0.01

    def load(self, path: str) -> None:
        self.path = path

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        (x,) = inputs.values()
        return {"output": x.sum(axis=tuple(range(1, x.ndim))) if x.ndim > 1 else x}
