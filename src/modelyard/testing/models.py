"""Tiny ``python``-flavor models with known behaviour, for tests and benchmarks."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from modelyard.flavors.base import ChatChunk, Embeddings


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


class WordHashEmbedder:
    """A text embedder with known behaviour: each word adds +1 to one of ``dims`` slots picked
    by its hash, and the vector is normalised. Speaks ``Embedder`` (the OpenAI embeddings
    route) besides ``predict`` (``text`` strings -> ``embedding`` float32 [n, dims])."""

    dims = 8

    def load(self, path: str) -> None:
        self.path = path

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        (texts,) = inputs.values()
        return {"embedding": self.embed([str(t) for t in np.asarray(texts).reshape(-1)]).vectors}

    def embed(self, texts: Sequence[str]) -> Embeddings:
        vectors = np.zeros((len(texts), self.dims), dtype=np.float32)
        words = [text.split() for text in texts]
        for row, found in enumerate(words):
            for word in found:
                slot = hashlib.sha256(word.encode()).digest()[0] % self.dims
                vectors[row, slot] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return Embeddings(vectors / np.where(norms == 0, 1, norms),
                          tokens=sum(len(w) for w in words))


class SlowChatter:
    """A ``ChatModel`` with a known pace: says ``tick `` every ``interval`` seconds until
    max_tokens. Each chat stopped before its end (closed: the client went away, the deadline
    passed) records how many ticks it had said in ``stopped``."""

    interval = 0.01
    stopped: ClassVar[list[int]] = []

    def load(self, path: str) -> None:
        self.path = path

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"output": next(iter(inputs.values()))}

    def chat(self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
             ) -> Iterator[ChatChunk]:
        limit = int(options.get("max_tokens") or 16)
        said = 0
        try:
            while said < limit:
                time.sleep(self.interval)
                said += 1
                yield ChatChunk("tick ")
        except GeneratorExit:
            SlowChatter.stopped.append(said)
            raise
        yield ChatChunk("", finish_reason="length", prompt_tokens=len(messages),
                        completion_tokens=said)
