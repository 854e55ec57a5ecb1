"""Graph documents: parsed, validated against signatures, every problem named by its path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from modelyard.domain import graph
from modelyard.domain.errors import ModelNotFound
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.graphs import Graph

EMBED = Signature((TensorSpec("text", "string", (-1,)),),
                  (TensorSpec("embedding", "float32", (-1, 8)),))
CLF = Signature((TensorSpec("input", "float32", (-1, 8)),),
                (TensorSpec("label", "int64", (-1,)),
                 TensorSpec("probabilities", "float32", (-1, 2))))
TABULAR = Signature((TensorSpec("input", "float32", (-1, 4)),),
                    (TensorSpec("label", "int64", (-1,)),))
STACKER = Signature((TensorSpec("input", "float32", (-1, 4)),),
                    (TensorSpec("score", "float32", (-1, 1)),))
MODELS = {"embed@champion": EMBED, "small@champion": CLF, "large@champion": CLF,
          "tab@champion": TABULAR, "stack@champion": STACKER}

TRIAGE = """
graph: triage
inputs:
  - {name: text, dtype: string, shape: [-1]}
nodes:
  embed: {kind: model, model: embed@champion, inputs: {text: inputs.text}}
  small: {kind: model, model: small@champion, inputs: {input: embed.embedding}}
  large: {kind: model, model: large@champion, inputs: {input: embed.embedding},
          timeout_ms: 300, retries: 1}
  answer: {kind: cascade, steps: [small, large], confidence: probabilities, threshold: 0.8}
outputs:
  label: answer.label
  probabilities: answer.probabilities
"""


def signature_of(ref: str) -> Signature:
    if ref not in MODELS:
        raise ModelNotFound(f"model {ref.partition('@')[0]!r} does not exist")
    return MODELS[ref]


def check(doc: Any) -> list[str]:
    problems: list[graph.Problem] = []
    spec = graph.parse(doc, problems)
    if not problems:
        problems += graph.validate(spec, signature_of)[1]
    return [str(p) for p in problems]


def test_a_valid_graph_has_the_signature_its_nodes_produce() -> None:
    spec = graph.parse(yaml.safe_load(TRIAGE))
    produced, problems = graph.validate(spec, signature_of)
    assert problems == []
    sig = graph.signature(spec, produced)
    assert [s.name for s in sig.outputs] == ["label", "probabilities"]
    assert sig.outputs[1].shape == (-1, 2)
    assert spec.branch_nodes() == {"small", "large"}
    assert spec.eager_order() == ["embed", "answer"]


def test_the_builder_writes_the_same_document_as_yaml() -> None:
    built = (Graph("triage")
             .input("text", "string")
             .model("embed", "embed@champion", inputs={"text": "inputs.text"})
             .model("small", "small@champion", inputs={"input": "embed.embedding"})
             .model("large", "large@champion", inputs={"input": "embed.embedding"},
                    timeout_ms=300, retries=1)
             .cascade("answer", ["small", "large"], confidence="probabilities",
                      threshold=0.8)
             .output("label", "answer.label")
             .output("probabilities", "answer.probabilities"))
    assert built.spec().to_dict() == graph.parse(yaml.safe_load(TRIAGE)).to_dict()
    assert graph.parse(yaml.safe_load(built.to_yaml())).to_dict() == built.spec().to_dict()


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    doc = yaml.safe_load(TRIAGE)
    doc["nodes"]["small"]["inputs"] = {"input": "inputs.text"}  # string into float32
    doc["nodes"]["large"]["model"] = "missing@champion"
    doc["nodes"]["embed"]["inputs"] = {}  # dangling input
    doc["outputs"]["extra"] = "ghost.value"
    found = check(doc)
    assert any(p.startswith("nodes.small.inputs.input: string flows into") for p in found)
    assert any(p.startswith("nodes.large.model: model 'missing'") for p in found)
    assert any(p.startswith("nodes.embed.inputs.text:") and "not wired" in p for p in found)
    assert any(p.startswith("outputs.extra: unknown node 'ghost'") for p in found)
    with pytest.raises(graph.GraphInvalid) as raised:
        raise graph.invalid([graph.Problem(*p.split(": ", 1)) for p in found])
    assert len(raised.value.extra["problems"]) == len(found) >= 4


def test_cycles_are_refused_with_the_loop() -> None:
    doc = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
           "nodes": {"a": {"kind": "model", "model": "tab@champion",
                           "inputs": {"input": "b.label"}},
                     "b": {"kind": "model", "model": "tab@champion",
                           "inputs": {"input": "a.label"}}},
           "outputs": {"y": "a.label"}}
    found = check(doc)
    assert any("cycle: a -> b -> a" in p for p in found), found


@pytest.mark.parametrize("change,expected", [
    (lambda d: d["nodes"]["answer"].update(kind="teleport"), "nodes.answer.kind: must be"),
    (lambda d: d["nodes"]["answer"].update(steps=["small"]), "nodes.answer.steps: list at"),
    (lambda d: d["nodes"]["answer"].update(confidence="nope"),
     "nodes.answer.confidence: step 'small' has no output 'nope'"),
    (lambda d: d["nodes"]["embed"].update(retries=9), "nodes.embed.retries: must be 0-5"),
    (lambda d: d["nodes"]["embed"].update(surprise=1), "nodes.embed.surprise: unknown field"),
    (lambda d: d["outputs"].update(raw="small.label"), "outputs.raw: 'small' is a branch of"),
    (lambda d: d["nodes"].update(t={"kind": "transform", "function": "os:system",
                                     "inputs": {"x": "inputs.text"},
                                     "outputs": [{"name": "y", "dtype": "string"}]}),
     "nodes.t.trusted: a transform runs project code"),
    (lambda d: d["nodes"].update(r={"kind": "router", "routes": [{"when": "inputs.text >> 1",
                                                                  "to": "x"}],
                                    "default": "x"}), "nodes.r.routes[0].when:"),
])
def test_bad_specs_are_named(change: Any, expected: str) -> None:
    doc = yaml.safe_load(TRIAGE)
    change(doc)
    found = check(doc)
    assert any(p.startswith(expected) for p in found), found


def test_ensembles_router_and_fallback_type_check() -> None:
    doc = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]},
                      {"name": "amount", "dtype": "float64", "shape": [-1]}],
           "nodes": {
               "a": {"kind": "model", "model": "tab@champion", "inputs": {"input": "inputs.x"}},
               "b": {"kind": "model", "model": "tab@champion", "inputs": {"input": "inputs.x"}},
               "c": {"kind": "model", "model": "tab@champion", "inputs": {"input": "inputs.x"}},
               "vote": {"kind": "ensemble", "members": ["a", "b", "c"], "method": "vote",
                        "output": "label"},
               "p": {"kind": "model", "model": "tab@champion", "inputs": {"input": "inputs.x"}},
               "q": {"kind": "model", "model": "tab@champion", "inputs": {"input": "inputs.x"}},
               "route": {"kind": "router", "routes": [{"when": "inputs.amount > 1000",
                                                       "to": "p"}], "default": "q"},
               "r1": {"kind": "model", "model": "tab@champion", "inputs": {"input": "inputs.x"}},
               "r2": {"kind": "model", "model": "tab@champion", "inputs": {"input": "inputs.x"}},
               "safe": {"kind": "fallback", "try": ["r1", "r2"]}},
           "outputs": {"vote": "vote.label", "routed": "route.label", "safe": "safe.label"}}
    assert check(doc) == []
    doc["nodes"]["vote"]["method"] = "mean"  # mean of int64 labels
    assert any("needs a float output" in p for p in check(doc))
    doc["nodes"]["vote"]["method"] = "vote"
    doc["nodes"]["route"]["routes"][0]["when"] = "inputs.amount > 'big'"
    assert any("compares a float64" in p for p in check(doc))
