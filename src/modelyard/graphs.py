"""The Python builder for inference graphs: the same document as the YAML form.

    triage = (Graph("triage")
              .input("text", "string")
              .model("embed", "minilm@champion", inputs={"text": "inputs.text"})
              .model("small", "clf-small@champion", inputs={"input": "embed.embedding"})
              .model("large", "clf-large@champion", inputs={"input": "embed.embedding"},
                     timeout_ms=300)
              .cascade("answer", ["small", "large"], confidence="probabilities",
                       threshold=0.8)
              .output("label", "answer.label"))
    yard.create_endpoint("triage", graph=triage)

See ``modelyard.domain.graph`` for what each node kind does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from modelyard.domain import graph as _graph


class Graph:
    def __init__(self, name: str = "", description: str = "") -> None:
        self._doc: dict[str, Any] = {"graph": name, "description": description, "inputs": [],
                                     "nodes": {}, "outputs": {}}

    # -- building ---------------------------------------------------------------------------
    def input(self, name: str, dtype: str = "float32", shape: Sequence[int] = (-1,)
              ) -> Graph:
        self._doc["inputs"].append({"name": name, "dtype": dtype, "shape": list(shape)})
        return self

    def output(self, name: str, ref: str) -> Graph:
        self._doc["outputs"][name] = ref
        return self

    def model(self, name: str, model: str, *, inputs: Mapping[str, str],
              timeout_ms: int | None = None, retries: int = 0,
              breaker: Mapping[str, float] | None = None,
              deployment: Mapping[str, Any] | None = None) -> Graph:
        return self._node(name, kind="model", model=model, inputs=dict(inputs),
                          timeout_ms=timeout_ms, retries=retries or None,
                          breaker=dict(breaker) if breaker else None,
                          deployment=dict(deployment) if deployment else None)

    def transform(self, name: str, function: str, *, inputs: Mapping[str, str],
                  outputs: Sequence[Mapping[str, Any]], trusted: bool = False,
                  timeout_ms: int | None = None) -> Graph:
        return self._node(name, kind="transform", function=function, inputs=dict(inputs),
                          outputs=[dict(o) for o in outputs], trusted=trusted,
                          timeout_ms=timeout_ms)

    def ensemble(self, name: str, members: Sequence[str], *, output: str,
                 method: str = "mean", weights: Sequence[float] | None = None,
                 model: str | None = None) -> Graph:
        return self._node(name, kind="ensemble", members=list(members), output=output,
                          method=method, weights=list(weights) if weights else None,
                          model=model)

    def router(self, name: str, routes: Sequence[tuple[str, str]], default: str) -> Graph:
        """``routes``: (rule, node) pairs, first match wins, e.g.
        ``("inputs.amount > 1000", "review")``."""
        return self._node(name, kind="router",
                          routes=[{"when": rule, "to": to} for rule, to in routes],
                          default=default)

    def cascade(self, name: str, steps: Sequence[str], *, confidence: str,
                threshold: float) -> Graph:
        return self._node(name, kind="cascade", steps=list(steps), confidence=confidence,
                          threshold=threshold)

    def fallback(self, name: str, branches: Sequence[str]) -> Graph:
        return self._node(name, kind="fallback", **{"try": list(branches)})

    def _node(self, name: str, **fields: Any) -> Graph:
        self._doc["nodes"][name] = {k: v for k, v in fields.items() if v is not None}
        return self

    # -- documents --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self._doc.items() if v or k in ("inputs", "nodes",
                                                                 "outputs")}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def spec(self) -> _graph.GraphSpec:
        """The parsed graph (raises GraphInvalid listing every structural problem)."""
        return _graph.parse(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Graph:
        built = cls()
        built._doc = {"graph": "", "description": "", "inputs": [], "nodes": {},
                      "outputs": {}, **dict(doc)}
        return built

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        """A graph from a YAML (or JSON) file; never runs code (``yaml.safe_load``)."""
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            raise _graph.invalid([_graph.Problem("", f"cannot read {path}: {exc}")]) from None
        if not isinstance(doc, Mapping):
            raise _graph.invalid([_graph.Problem("", f"{path} does not hold a mapping")])
        return cls.from_dict(doc)


def graph_document(value: Graph | Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A graph given as a builder, a mapping, or a YAML file path."""
    if isinstance(value, Graph):
        return value.to_dict()
    if isinstance(value, str | Path):
        return Graph.load(value).to_dict()
    return dict(value)


__all__ = ["Graph", "graph_document"]
