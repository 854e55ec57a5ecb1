"""The one contract every model format meets: a ``Flavor`` yields a ``Predictor``.

A predictor takes a mapping of input name to numpy array and returns a mapping of output name
to numpy array, with the batch on the first axis of every array. Nothing above this layer
knows which library runs the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelyard.domain.signature import Signature

Arrays = Mapping[str, np.ndarray]


@runtime_checkable
class Predictor(Protocol):
    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]: ...


class Flavor(Protocol):
    """A model format. Instances are stateless; one lives per flavor name."""

    name: str

    def matches_object(self, model: Any) -> bool:
        """Whether ``save`` can write this in-memory object."""
        ...

    def matches_files(self, folder: Path) -> bool:
        """Whether a staged folder holds this flavor's files (used when no flavor is given)."""
        ...

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        """Write an in-memory model into an empty folder; return the flavor options to keep."""
        ...

    def inspect(
        self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Check a staged folder; return its options, or raise InvalidArtifact /
        UntrustedArtifact. Must not execute anything from the folder unless trusted.
        ``trusted_types`` narrows trust to named types (skops) instead of the whole file."""
        ...

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        ...

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        """The signature the format itself declares, if it declares one (ONNX does)."""
        ...


def only_file(folder: Path, suffixes: tuple[str, ...]) -> Path | None:
    """The single file in ``folder`` with one of ``suffixes``, if exactly one exists."""
    found = [p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes)]
    return found[0] if len(found) == 1 else None


# -- text models ------------------------------------------------------------------------------
# Predictors of text models also speak these, for the OpenAI-compatible routes. Their plain
# ``predict`` stays the batchable tensor form (BYTES in, numbers or BYTES out) that OIP v2 and
# graphs use.

@dataclass(frozen=True)
class ChatChunk:
    """A piece of a generated answer; the last one carries the finish reason and usage."""

    text: str
    finish_reason: str | None = None  # "stop" or "length", on the last chunk only
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class ChatModel(Protocol):
    def chat(self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
             ) -> Iterator[ChatChunk]:
        """Answer a conversation (OpenAI message dicts). ``options``: max_tokens,
        temperature, top_p, stop, seed. Yields pieces as they are generated."""
        ...


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, d]
    tokens: int  # input tokens counted, for usage reporting


@runtime_checkable
class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> Embeddings: ...
