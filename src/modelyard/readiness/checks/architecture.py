"""Architecture: typed edges, a graph that still validates, fallbacks for remote calls."""

from __future__ import annotations

from modelyard.domain import graph
from modelyard.readiness.checks import references as ref
from modelyard.readiness.checks.base import (
    Check,
    Finding,
    failed,
    not_applicable,
    passed,
    plural,
    warned,
)
from modelyard.readiness.evidence import EndpointFacts, Evidence


def signatures(_: Evidence, ep: EndpointFacts) -> Finding:
    if ep.unresolved:
        return failed(f"references that resolve to no version: {', '.join(ep.unresolved)}",
                      "point the endpoint (or graph node) at a registered, active version")
    if not ep.versions:
        return not_applicable("no version is served yet")
    lacking = [f"{v.ref} ({'no inputs' if not v.signature.inputs else 'no outputs'})"
               for v in ep.versions if not v.signature.inputs or not v.signature.outputs]
    if lacking:
        return failed(f"versions with an incomplete signature: {', '.join(lacking)}; "
                      "callers and graph edges cannot be checked against them",
                      "register a new version with a signature (sample= or signature=)")
    where = "every edge of the graph is typed" if ep.graph is not None else \
        "inputs and outputs are named, typed and shaped"
    return passed(f"{plural(len(ep.versions), 'version')} with full signatures; {where}")


def graph_valid(_: Evidence, ep: EndpointFacts) -> Finding:
    if ep.graph is None:
        return not_applicable("a single-model endpoint: no graph to validate")
    if ep.graph_problems:
        shown = "; ".join(ep.graph_problems[:3])
        more = f" (+{len(ep.graph_problems) - 3} more)" if len(ep.graph_problems) > 3 else ""
        return failed(f"the graph no longer validates against the versions its references "
                      f"point at now: {shown}{more}")
    return passed(f"the graph validates against the current versions of its "
                  f"{plural(len(ep.versions), 'model')}")


def _fallback_covered(doc: object) -> set[str]:
    """Nodes that another alternative of a fallback node stands behind."""
    try:
        spec = graph.parse(doc)
    except graph.GraphInvalid:
        return set()
    covered: set[str] = set()
    for node in spec.nodes.values():
        if node.kind == "fallback":
            covered.update(node.branches[:-1])
    return covered


def remote_fallbacks(_: Evidence, ep: EndpointFacts) -> Finding:
    remote = [v for v in ep.versions if v.flavor == "remote"]
    if not remote:
        return not_applicable("no remote model is called")
    if ep.graph is None:
        return failed(f"{remote[0].ref} calls an upstream service with nothing behind it: "
                      "when the upstream is down every request fails",
                      "serve it through a graph whose fallback node puts a local model (or "
                      "a cached answer) behind it")
    covered = _fallback_covered(ep.graph)
    bare = [f"{v.node} ({v.ref})" for v in remote if v.node not in covered]
    if bare:
        return failed(f"remote nodes without a fallback alternative: {', '.join(bare)}",
                      "wrap each remote node in a fallback node with a local alternative "
                      "after it")
    return passed(f"{plural(len(remote), 'remote node')} each with a fallback alternative")


def graph_breakers(_: Evidence, ep: EndpointFacts) -> Finding:
    """Fallback primaries need their own deadline shorter than the endpoint's, else the
    alternative never gets time to answer."""
    if ep.graph is None:
        return not_applicable("a single-model endpoint: no graph nodes")
    try:
        spec = graph.parse(ep.graph)
    except graph.GraphInvalid:
        return not_applicable("the graph does not parse (see the graph check)")
    fallbacks = [n for n in spec.nodes.values() if n.kind == "fallback"]
    if not fallbacks:
        return not_applicable("the graph has no fallback node")
    slow = []
    for node in fallbacks:
        for branch in node.branches[:-1]:
            target = spec.nodes.get(branch)
            limit = target.timeout_ms if target is not None else None
            if limit is None or limit >= ep.timeout_ms:
                slow.append(f"{branch} ({'no deadline' if limit is None else f'{limit} ms'})")
    if slow:
        return warned(f"fallback primaries whose deadline is not below the endpoint's "
                      f"{ep.timeout_ms} ms: {', '.join(slow)}",
                      "give each fallback primary a timeout_ms well below the endpoint's "
                      "timeout_ms, so the alternative has time to answer")
    return passed(f"{plural(len(fallbacks), 'fallback node')}: every primary has a deadline "
                  f"below the endpoint's {ep.timeout_ms} ms (breakers open after "
                  "breaker_failures consecutive failures)")


CHECKS = (
    Check("arch.signatures", "architecture", "Signatures on every edge", 3, ref.DATA_1,
          "register versions with a signature (inputs and outputs with dtype and shape)",
          "each served version's signature; unresolved references",
          endpoint=signatures),
    Check("arch.graph_valid", "architecture", "Graph validates against current versions", 3,
          ref.INFRA_3, "fix the graph (modelyard graphs validate FILE) or pin the versions "
          "whose signatures changed", "the stored graph re-validated now (aliases may have "
          "moved to versions with other signatures)", endpoint=graph_valid),
    Check("arch.remote_fallbacks", "architecture", "Fallbacks for remote models", 2,
          ref.SRE_CASCADING, "put a fallback node with a local alternative behind every "
          "remote model", "remote-flavor versions and the graph's fallback nodes",
          endpoint=remote_fallbacks),
    Check("arch.fallback_deadlines", "architecture", "Fallback primaries have deadlines", 1,
          ref.SRE_CASCADING, "set timeout_ms on each fallback primary below the endpoint's",
          "timeout_ms of fallback primaries vs the endpoint's timeout_ms",
          endpoint=graph_breakers),
)
