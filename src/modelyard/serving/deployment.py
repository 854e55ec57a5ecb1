"""A deployment: one model version loaded, warmed up and ready to predict.

CPU inference runs off the event loop in a bounded thread pool shared by the process; a
request whose deadline passes while it waits is answered 504 and its result discarded.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from modelyard.domain.errors import DeadlineExceeded, ModelFailed, ModelyardError
from modelyard.domain.registry import ModelVersion
from modelyard.domain.signature import Signature
from modelyard.flavors.base import Arrays, Predictor


@dataclass
class Deployment:
    version: ModelVersion
    predictor: Predictor
    warmup_ms: float = 0.0

    @property
    def signature(self) -> Signature:
        return self.version.signature

    def warm_up(self, example: Arrays | None) -> None:
        """Run the model once (on the registered example, or zeros) before reporting ready."""
        inputs = example or self.signature.example()
        start = time.perf_counter()
        self.predictor.predict(inputs)
        self.warmup_ms = (time.perf_counter() - start) * 1000

    def predict_sync(self, inputs: Arrays) -> dict[str, np.ndarray]:
        try:
            outputs = self.predictor.predict(inputs)
        except ModelyardError:
            raise
        except Exception as exc:  # the model's own failure: a server-side error
            raise ModelFailed(f"{self.version.ref} failed: {type(exc).__name__}: {exc}") from exc
        return {name: np.asarray(value) for name, value in outputs.items()}

    async def predict(self, inputs: Arrays, pool: ThreadPoolExecutor,
                      timeout_s: float) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(pool, self.predict_sync, inputs)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"{self.version.ref} did not answer within {timeout_s * 1000:.0f} ms"
            ) from None
