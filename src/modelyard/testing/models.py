"""Tiny ``python``-flavor models with known behaviour, for tests and benchmarks."""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
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


class Weighted:
    """``output`` = each row's sum times a scale, with weights held in memory: a model of a
    known size. Reads ``weights.npy`` from its folder when there is one (its first value is
    the scale; the whole array stays loaded), else scale 1 and no weights. With
    ``Weighted.record`` on, the first value of every row it computes is counted in
    ``computed`` (tests check that each request ran exactly once)."""

    record: ClassVar[bool] = False
    computed: ClassVar[collections.Counter[float]] = collections.Counter()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def load(self, path: str) -> None:
        self.path = path
        weights = Path(path) / "weights.npy"
        self.weights = np.load(weights) if weights.is_file() else np.ones(1)
        self.scale = float(self.weights[0])

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        if Weighted.record:
            with Weighted._lock:
                Weighted.computed.update(float(v) for v in x.reshape(len(x), -1)[:, 0])
        return {"output": x.reshape(len(x), -1).sum(axis=1) * self.scale}

    @staticmethod
    def save(folder: str | Path, scale: float, size_bytes: int = 8) -> Path:
        """Write a registrable folder: the class reference and ``size_bytes`` of weights."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "modelyard_python.json").write_text(
            '{"class": "modelyard.testing.models:Weighted"}')
        weights = np.full(max(1, size_bytes // 8), scale, dtype=np.float64)
        np.save(folder / "weights.npy", weights)
        return folder


class Faulty(Weighted):
    """A ``Weighted`` model whose replicas can be killed: every loaded instance is appended
    to ``instances``; ``Faulty.kill(i)`` makes instance ``i`` raise on every call from then
    on (a replica that died), until a fresh instance replaces it."""

    instances: ClassVar[list[Faulty]] = []

    def load(self, path: str) -> None:
        super().load(path)
        self.dead = False
        self.calls = 0  # batches it answered
        Faulty.instances.append(self)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.dead:
            raise RuntimeError("this replica was killed")
        self.calls += 1
        return super().predict(inputs)

    @staticmethod
    def kill(index: int) -> Faulty:
        victim = Faulty.instances[index]
        victim.dead = True
        return victim
