"""Architecture checks over hand-built evidence."""

from __future__ import annotations

from evidence_support import endpoint, evidence, version

from modelyard.domain.signature import Signature, TensorSpec
from modelyard.readiness.checks import architecture as arch

GRAPH = {
    "graph": "triage", "inputs": [{"name": "text", "dtype": "string", "shape": [-1]}],
    "nodes": {
        "remote": {"kind": "model", "model": "gpt@prod", "inputs": {"prompt": "inputs.text"},
                   "timeout_ms": 300},
        "local": {"kind": "model", "model": "small@prod", "inputs": {"text": "inputs.text"}},
        "answer": {"kind": "fallback", "try": ["remote", "local"]},
    },
    "outputs": {"label": "answer.label"},
}


def test_signatures_pass_and_fail() -> None:
    ev = evidence()
    assert arch.signatures(ev, endpoint()).status == "pass"
    no_outputs = version(signature=Signature(inputs=(TensorSpec("x", "float32", (-1, 2)),)))
    found = arch.signatures(ev, endpoint(versions=(no_outputs,)))
    assert found.status == "fail" and "churn:2 (no outputs)" in found.evidence
    missing = arch.signatures(ev, endpoint(unresolved=("churn@gone",)))
    assert missing.status == "fail" and "churn@gone" in missing.evidence
    assert arch.signatures(ev, endpoint(versions=())).status == "na"


def test_graph_valid() -> None:
    ev = evidence()
    assert arch.graph_valid(ev, endpoint()).status == "na"
    assert arch.graph_valid(ev, endpoint(graph=GRAPH)).status == "pass"
    broken = arch.graph_valid(ev, endpoint(graph=GRAPH, graph_problems=(
        "nodes.local.inputs.text: float32 does not fit string",)))
    assert broken.status == "fail" and "nodes.local.inputs.text" in broken.evidence


def test_remote_models_need_a_fallback() -> None:
    ev = evidence()
    remote = version("gpt:1", flavor="remote", node="remote")
    local = version("small:1", node="local")
    assert arch.remote_fallbacks(ev, endpoint()).status == "na"
    covered = arch.remote_fallbacks(ev, endpoint(graph=GRAPH, versions=(remote, local)))
    assert covered.status == "pass"
    # The same remote model as the last alternative has nothing behind it.
    last = {**GRAPH, "nodes": {**GRAPH["nodes"],
                               "answer": {"kind": "fallback", "try": ["local", "remote"]}}}
    bare = arch.remote_fallbacks(ev, endpoint(graph=last, versions=(remote, local)))
    assert bare.status == "fail" and "remote (gpt:1)" in bare.evidence
    single = arch.remote_fallbacks(ev, endpoint(versions=(version("gpt:1", flavor="remote"),)))
    assert single.status == "fail"


def test_fallback_primaries_need_a_shorter_deadline() -> None:
    ev = evidence()
    assert arch.graph_breakers(ev, endpoint()).status == "na"
    assert arch.graph_breakers(ev, endpoint(graph=GRAPH, timeout_ms=1000)).status == "pass"
    slow = arch.graph_breakers(ev, endpoint(graph=GRAPH, timeout_ms=200))
    assert slow.status == "warn" and "remote (300 ms)" in slow.evidence
    nodes = dict(GRAPH["nodes"])
    nodes["remote"] = {k: v for k, v in nodes["remote"].items() if k != "timeout_ms"}
    unset = arch.graph_breakers(ev, endpoint(graph={**GRAPH, "nodes": nodes}))
    assert unset.status == "warn" and "no deadline" in unset.evidence
