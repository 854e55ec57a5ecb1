"""Inference graphs: models wired together, declared as data and validated before they run.

A graph has typed inputs, nodes and named outputs. A node reads values by reference:
``inputs.NAME`` (a graph input) or ``NODE.OUTPUT``. Kinds:

- ``model``: a model version (``name@alias`` or ``name:3``) with its own deployment.
- ``transform``: a trusted project function ``module:function`` (arrays in, arrays out) that
  declares its outputs.
- ``ensemble``: combines one output of several member nodes (``mean``, ``weighted_mean``,
  ``vote``) or feeds them, side by side, to a stacking model (``stack``).
- ``router``: sends each row to the first branch whose rule holds (``inputs.amount > 1000``,
  ``max(clf.probabilities) < 0.6``), else to ``default``.
- ``cascade``: runs its first step on every row; rows whose confidence (the max of an output)
  is under the threshold go to the next step.
- ``fallback``: runs its first branch; if it fails or runs out of time, the next.

Nodes named as branches (router targets, cascade steps, fallback alternatives) run only when
chosen, on the rows chosen; every other node runs once per request, as soon as what it reads
is ready, concurrently with independent nodes. Validation reports every problem at once,
each with its path (``nodes.classify.inputs.input``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.domain.errors import ModelyardError, ValidationFailed
from modelyard.domain.names import ModelRef
from modelyard.domain.signature import Signature, TensorSpec

KINDS = ("model", "transform", "ensemble", "router", "cascade", "fallback")
CHOOSERS = ("router", "cascade", "fallback")
ENSEMBLE_METHODS = ("mean", "weighted_mean", "vote", "stack")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_REF = re.compile(r"(?P<node>[A-Za-z_][A-Za-z0-9_-]{0,63})\.(?P<output>[A-Za-z0-9_.:/-]{1,128})")
_RULE = re.compile(r"\s*(?:(?P<fn>max|min|argmax)\((?P<fref>[^)]+)\)|(?P<ref>[^\s<>=!]+))\s*"
                   r"(?P<op><=|>=|==|!=|<|>)\s*(?P<value>.+?)\s*")
MAX_RETRIES = 5


class GraphInvalid(ModelyardError):
    """Every problem found in a graph, each with its path."""

    code, status, title = "graph_invalid", 422, "Invalid graph"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Rule:
    """``[fn(]ref[)] op value``, evaluated per row."""

    ref: str
    op: str
    value: float | str
    fn: str | None = None

    @classmethod
    def parse(cls, text: str) -> Rule:
        match = _RULE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError("a rule looks like 'inputs.amount > 1000' or "
                             "'max(node.probabilities) < 0.6'")
        raw = match["value"].strip()
        value: float | str
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            value = raw[1:-1]
        else:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{raw!r} is neither a number nor a quoted string") from None
        return cls((match["fref"] or match["ref"]).strip(), match["op"], value, match["fn"])


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    model: str | None = None  # model, ensemble(stack)
    function: str | None = None  # transform
    inputs: Mapping[str, str] = field(default_factory=dict)  # model/transform input -> ref
    outputs: tuple[TensorSpec, ...] = ()  # transform
    members: tuple[str, ...] = ()  # ensemble
    method: str = "mean"
    output: str | None = None  # the member output an ensemble combines
    weights: tuple[float, ...] = ()
    branches: tuple[str, ...] = ()  # cascade steps, fallback alternatives, router targets
    rules: tuple[tuple[Rule, str], ...] = ()  # router: (rule, branch)
    default: str | None = None  # router
    confidence: str | None = None  # cascade: the output whose max is the confidence
    threshold: float = 0.5
    timeout_ms: int | None = None
    retries: int = 0
    breaker_failures: int = 5
    breaker_reset_s: float = 10.0
    deployment: Mapping[str, Any] = field(default_factory=dict)
    trusted: bool = False

    def reads(self) -> list[str]:
        """References this node reads (inputs.X or NODE.OUTPUT)."""
        refs = list(self.inputs.values())
        refs += [rule.ref for rule, _ in self.rules]
        return refs

    def chooses(self) -> tuple[str, ...]:
        """Branch nodes this node runs on demand."""
        if self.kind == "router":
            targets = [t for _, t in self.rules] + ([self.default] if self.default else [])
            return tuple(dict.fromkeys(targets))
        return self.branches if self.kind in CHOOSERS else ()

    def needs(self) -> tuple[str, ...]:
        """Nodes that must finish before this one starts."""
        deps = [ref_node(r) for r in self.reads()]
        deps += list(self.members)
        return tuple(dict.fromkeys(d for d in deps if d and d != "inputs"))


def ref_node(ref: str) -> str | None:
    match = _REF.fullmatch(ref) if isinstance(ref, str) else None
    return match["node"] if match else None


def split_ref(ref: str) -> tuple[str, str]:
    match = _REF.fullmatch(ref)
    if match is None:
        raise ValueError(f"{ref!r} is not a reference like inputs.NAME or NODE.OUTPUT")
    return match["node"], match["output"]


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    nodes: Mapping[str, Node]
    outputs: Mapping[str, str]  # graph output -> ref
    description: str = ""

    def branch_nodes(self) -> set[str]:
        return {b for n in self.nodes.values() for b in n.chooses()}

    def waits_for(self, name: str) -> set[str]:
        """Nodes that must finish before ``name`` starts: what it reads, and what the
        branches it may choose (at any depth) read."""
        out: set[str] = set()
        pending, seen = [name], set()
        while pending:
            current = pending.pop()
            if current in seen or current not in self.nodes:
                continue
            seen.add(current)
            node = self.nodes[current]
            out.update(node.needs())
            pending.extend(node.chooses())
        return out - {name}

    def eager_order(self) -> list[str]:
        """Non-branch nodes in an order where each comes after what it needs."""
        branches, order, seen = self.branch_nodes(), [], set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for dep in sorted(self.waits_for(name)):
                if dep in self.nodes:
                    visit(dep)
            if name not in branches:
                order.append(name)

        for name in self.nodes:
            visit(name)
        return order

    def model_refs(self) -> dict[str, str]:
        """node -> model reference, for every node backed by a model."""
        return {n.name: n.model for n in self.nodes.values() if n.model}

    def to_dict(self) -> dict[str, Any]:
        return {"graph": self.name, "description": self.description,
                "inputs": [s.to_dict() for s in self.inputs],
                "outputs": dict(self.outputs),
                "nodes": {n.name: _node_dict(n) for n in self.nodes.values()}}


def _node_dict(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": node.kind}
    if node.model:
        out["model"] = node.model
    if node.function:
        out["function"] = node.function
        out["trusted"] = node.trusted
    if node.inputs:
        out["inputs"] = dict(node.inputs)
    if node.outputs:
        out["outputs"] = [s.to_dict() for s in node.outputs]
    if node.kind == "ensemble":
        out.update(members=list(node.members), method=node.method, output=node.output)
        if node.weights:
            out["weights"] = list(node.weights)
    if node.kind == "cascade":
        out.update(steps=list(node.branches), confidence=node.confidence,
                   threshold=node.threshold)
    if node.kind == "fallback":
        out["try"] = list(node.branches)
    if node.kind == "router":
        out["routes"] = [{"when": _rule_text(r), "to": t} for r, t in node.rules]
        out["default"] = node.default
    if node.timeout_ms is not None:
        out["timeout_ms"] = node.timeout_ms
    if node.retries:
        out["retries"] = node.retries
    if (node.breaker_failures, node.breaker_reset_s) != (5, 10.0):
        out["breaker"] = {"failures": node.breaker_failures, "reset_s": node.breaker_reset_s}
    if node.deployment:
        out["deployment"] = dict(node.deployment)
    return out


def _rule_text(rule: Rule) -> str:
    ref = f"{rule.fn}({rule.ref})" if rule.fn else rule.ref
    value = f"'{rule.value}'" if isinstance(rule.value, str) else f"{rule.value:g}"
    return f"{ref} {rule.op} {value}"


# -- parsing ----------------------------------------------------------------------------------

_NODE_KEYS = {
    "model": {"model", "inputs", "timeout_ms", "retries", "breaker", "deployment"},
    "transform": {"function", "inputs", "outputs", "trusted", "timeout_ms"},
    "ensemble": {"members", "method", "output", "weights", "model", "timeout_ms", "retries",
                 "breaker", "deployment"},
    "router": {"routes", "default"},
    "cascade": {"steps", "confidence", "threshold"},
    "fallback": {"try"},
}


def parse(doc: Any, problems: list[Problem] | None = None) -> GraphSpec:
    """A graph from its YAML/JSON document. Raises GraphInvalid with every problem found
    (structure only; ``validate`` checks models, types and shapes)."""
    found: list[Problem] = [] if problems is None else problems
    if not isinstance(doc, Mapping):
        raise GraphInvalid("a graph must be a mapping with inputs, nodes and outputs",
                           problems=[{"path": "", "message": "not a mapping"}])
    unknown = set(doc) - {"graph", "name", "description", "inputs", "nodes", "outputs"}
    for key in sorted(unknown):
        found.append(Problem(key, "unknown field"))
    name = doc.get("graph") or doc.get("name") or ""
    if name and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        found.append(Problem("graph", "a graph name is letters, digits, _ and -"))
    inputs = _parse_inputs(doc.get("inputs"), found)
    nodes: dict[str, Node] = {}
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, Mapping) or not raw_nodes:
        found.append(Problem("nodes", "give at least one node"))
        raw_nodes = {}
    for node_name, raw in raw_nodes.items():
        node = _parse_node(str(node_name), raw, found)
        if node is not None:
            nodes[node.name] = node
    outputs = doc.get("outputs")
    if not isinstance(outputs, Mapping) or not outputs:
        found.append(Problem("outputs", "map at least one output name to a reference "
                                        "(NODE.OUTPUT)"))
        outputs = {}
    clean_outputs = {}
    for out_name, ref in outputs.items():
        if not isinstance(ref, str) or ref_node(ref) is None:
            found.append(Problem(f"outputs.{out_name}", "must be a reference NODE.OUTPUT"))
        else:
            clean_outputs[str(out_name)] = ref
    spec = GraphSpec(str(name or ""), tuple(inputs), nodes, clean_outputs,
                     str(doc.get("description") or ""))
    if found and problems is None:
        raise invalid(found)
    return spec


def invalid(problems: Iterable[Problem]) -> GraphInvalid:
    listed = list(problems)
    detail = "; ".join(str(p) for p in listed[:20])
    more = f" (and {len(listed) - 20} more)" if len(listed) > 20 else ""
    return GraphInvalid(f"{len(listed)} problem(s): {detail}{more}",
                        field=listed[0].path if listed else None,
                        problems=[{"path": p.path, "message": p.message} for p in listed])


def _parse_inputs(raw: Any, found: list[Problem]) -> list[TensorSpec]:
    if not isinstance(raw, list) or not raw:
        found.append(Problem("inputs", "list the graph's inputs: [{name, dtype, shape}]"))
        return []
    specs = []
    for i, item in enumerate(raw):
        try:
            specs.append(TensorSpec.from_dict(item))
        except ValidationFailed as exc:
            found.append(Problem(f"inputs[{i}]", exc.detail))
    return specs


def _parse_node(name: str, raw: Any, found: list[Problem]) -> Node | None:
    path = f"nodes.{name}"
    if not _NAME.fullmatch(name) or name == "inputs":
        found.append(Problem(path, "a node name is letters, digits, _ and - (not 'inputs')"))
        return None
    if not isinstance(raw, Mapping):
        found.append(Problem(path, "a node is a mapping with a kind"))
        return None
    kind = raw.get("kind")
    if kind not in KINDS:
        found.append(Problem(f"{path}.kind", f"must be one of {', '.join(KINDS)}"))
        return None
    for key in sorted(set(raw) - _NODE_KEYS[kind] - {"kind"}):
        found.append(Problem(f"{path}.{key}", f"unknown field for a {kind} node"))
    values: dict[str, Any] = {"name": name, "kind": kind}
    try:
        _common(raw, values, path, found)
        _PARSERS[kind](raw, values, path, found)
    except (TypeError, ValueError) as exc:
        found.append(Problem(path, str(exc)))
        return None
    return Node(**values)


def _common(raw: Mapping[str, Any], values: dict[str, Any], path: str,
            found: list[Problem]) -> None:
    timeout = raw.get("timeout_ms")
    if timeout is not None:
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not \
                1 <= timeout <= 600_000:
            found.append(Problem(f"{path}.timeout_ms", "must be 1-600000"))
        else:
            values["timeout_ms"] = timeout
    retries = raw.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or \
            not 0 <= retries <= MAX_RETRIES:
        found.append(Problem(f"{path}.retries", f"must be 0-{MAX_RETRIES}"))
    else:
        values["retries"] = retries
    breaker = raw.get("breaker")
    if breaker is not None:
        if not isinstance(breaker, Mapping) or set(breaker) - {"failures", "reset_s"}:
            found.append(Problem(f"{path}.breaker", "give failures and/or reset_s"))
        else:
            failures, reset = breaker.get("failures", 5), breaker.get("reset_s", 10.0)
            if not isinstance(failures, int) or not 1 <= failures <= 1000:
                found.append(Problem(f"{path}.breaker.failures", "must be 1-1000"))
            elif not isinstance(reset, int | float) or not 0.01 <= reset <= 3600:
                found.append(Problem(f"{path}.breaker.reset_s", "must be 0.01-3600"))
            else:
                values["breaker_failures"], values["breaker_reset_s"] = failures, float(reset)
    deployment = raw.get("deployment")
    if deployment is not None:
        if not isinstance(deployment, Mapping):
            found.append(Problem(f"{path}.deployment", "must be a mapping of batching "
                                                       "settings"))
        else:
            values["deployment"] = dict(deployment)


def _wiring(raw: Any, path: str, found: list[Problem]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        found.append(Problem(f"{path}.inputs", "map each input to a reference"))
        return {}
    out = {}
    for key, ref in raw.items():
        if not isinstance(ref, str) or ref_node(ref) is None:
            found.append(Problem(f"{path}.inputs.{key}", "must be a reference like "
                                                         "inputs.NAME or NODE.OUTPUT"))
        else:
            out[str(key)] = ref
    return out


def _names(raw: Any, path: str, found: list[Problem], least: int) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) < least or \
            not all(isinstance(x, str) for x in raw):
        found.append(Problem(path, f"list at least {least} node names"))
        return ()
    if len(set(raw)) != len(raw):
        found.append(Problem(path, "names a node twice"))
    return tuple(raw)


def _model_node(raw: Mapping[str, Any], values: dict[str, Any], path: str,
                found: list[Problem]) -> None:
    model = raw.get("model")
    if not isinstance(model, str):
        found.append(Problem(f"{path}.model", "give a model reference (name@alias or "
                                              "name:VERSION)"))
    else:
        try:
            values["model"] = str(ModelRef.parse(model, "model"))
        except ModelyardError as exc:
            found.append(Problem(f"{path}.model", exc.detail))
    values["inputs"] = _wiring(raw.get("inputs"), path, found)


def _transform_node(raw: Mapping[str, Any], values: dict[str, Any], path: str,
                    found: list[Problem]) -> None:
    function = raw.get("function")
    if not isinstance(function, str) or not re.fullmatch(r"[\w.]+:\w+", function):
        found.append(Problem(f"{path}.function", "give module.path:function"))
    else:
        values["function"] = function
    values["trusted"] = raw.get("trusted") is True
    values["inputs"] = _wiring(raw.get("inputs"), path, found)
    outputs = raw.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        found.append(Problem(f"{path}.outputs", "declare the outputs: [{name, dtype, shape}]"))
        return
    specs = []
    for i, item in enumerate(outputs):
        try:
            specs.append(TensorSpec.from_dict(item))
        except ValidationFailed as exc:
            found.append(Problem(f"{path}.outputs[{i}]", exc.detail))
    values["outputs"] = tuple(specs)


def _ensemble_node(raw: Mapping[str, Any], values: dict[str, Any], path: str,
                   found: list[Problem]) -> None:
    values["members"] = _names(raw.get("members"), f"{path}.members", found, 2)
    method = raw.get("method", "mean")
    if method not in ENSEMBLE_METHODS:
        found.append(Problem(f"{path}.method", f"must be one of {', '.join(ENSEMBLE_METHODS)}"))
    values["method"] = method
    output = raw.get("output")
    if not isinstance(output, str):
        found.append(Problem(f"{path}.output", "name the members' output to combine"))
    values["output"] = output if isinstance(output, str) else None
    weights = raw.get("weights")
    if method == "weighted_mean":
        if not isinstance(weights, list) or not all(
                isinstance(w, int | float) and not isinstance(w, bool) and w >= 0
                for w in weights) or len(weights) != len(values["members"]) or not sum(weights):
            found.append(Problem(f"{path}.weights", "give one non-negative weight per "
                                                    "member, not all zero"))
        else:
            values["weights"] = tuple(float(w) for w in weights)
    if method == "stack":
        _model_node({"model": raw.get("model")}, values, path, found)
        values["inputs"] = {}


def _router_node(raw: Mapping[str, Any], values: dict[str, Any], path: str,
                 found: list[Problem]) -> None:
    routes = raw.get("routes")
    if not isinstance(routes, list) or not routes:
        found.append(Problem(f"{path}.routes", "list routes: [{when: RULE, to: NODE}]"))
        routes = []
    rules = []
    for i, route in enumerate(routes):
        where = f"{path}.routes[{i}]"
        if not isinstance(route, Mapping) or set(route) != {"when", "to"} or \
                not isinstance(route.get("to"), str):
            found.append(Problem(where, "a route is {when: RULE, to: NODE}"))
            continue
        try:
            rules.append((Rule.parse(route["when"]), route["to"]))
        except ValueError as exc:
            found.append(Problem(f"{where}.when", str(exc)))
    values["rules"] = tuple(rules)
    default = raw.get("default")
    if not isinstance(default, str):
        found.append(Problem(f"{path}.default", "name the node for rows no rule matches"))
    else:
        values["default"] = default


def _cascade_node(raw: Mapping[str, Any], values: dict[str, Any], path: str,
                  found: list[Problem]) -> None:
    values["branches"] = _names(raw.get("steps"), f"{path}.steps", found, 2)
    confidence = raw.get("confidence")
    if not isinstance(confidence, str):
        found.append(Problem(f"{path}.confidence", "name the output whose max is the "
                                                   "confidence (e.g. probabilities)"))
    values["confidence"] = confidence if isinstance(confidence, str) else None
    threshold = raw.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        found.append(Problem(f"{path}.threshold", "must be a number"))
    else:
        values["threshold"] = float(threshold)


def _fallback_node(raw: Mapping[str, Any], values: dict[str, Any], path: str,
                   found: list[Problem]) -> None:
    values["branches"] = _names(raw.get("try"), f"{path}.try", found, 2)


_PARSERS: dict[str, Callable[[Mapping[str, Any], dict[str, Any], str, list[Problem]], None]] = {
    "model": _model_node, "transform": _transform_node, "ensemble": _ensemble_node,
    "router": _router_node, "cascade": _cascade_node, "fallback": _fallback_node,
}


# -- validation -------------------------------------------------------------------------------

SignatureOf = Callable[[str], Signature]  # model reference -> its signature (or raises)


def validate(spec: GraphSpec, signature_of: SignatureOf) -> tuple[
        dict[str, tuple[TensorSpec, ...]], list[Problem]]:
    """Every node's output specs, and every problem: unknown nodes and models, cycles,
    unwired or unknown inputs, type and shape mismatches along edges, misused branches."""
    problems: list[Problem] = []
    nodes = spec.nodes
    # Branches: each chosen by exactly one chooser, never read directly.
    chooser_of: dict[str, str] = {}
    for node in nodes.values():
        for target in node.chooses():
            where = f"nodes.{node.name}"
            if target not in nodes:
                problems.append(Problem(where, f"unknown node {target!r}"))
            elif target in chooser_of:
                problems.append(Problem(where, f"{target!r} is already a branch of "
                                               f"{chooser_of[target]!r}"))
            else:
                chooser_of[target] = node.name
    for node in nodes.values():
        for member in node.members:
            if member not in nodes:
                problems.append(Problem(f"nodes.{node.name}.members", f"unknown node "
                                                                      f"{member!r}"))
            elif member in chooser_of:
                problems.append(Problem(f"nodes.{node.name}.members",
                                        f"{member!r} is a branch of {chooser_of[member]!r}"))
    problems += _cycles(spec)
    if any(p.message.startswith("cycle") for p in problems):
        return {}, problems
    graph_inputs = {s.name: s for s in spec.inputs}
    produced: dict[str, tuple[TensorSpec, ...]] = {}
    signatures: dict[str, Signature] = {}
    for name, ref in spec.model_refs().items():
        try:
            signatures[name] = signature_of(ref)
        except ModelyardError as exc:
            problems.append(Problem(f"nodes.{name}.model", exc.detail))

    def spec_of(ref: str, where: str) -> TensorSpec | None:
        node_name, output = split_ref(ref)
        if node_name == "inputs":
            if output not in graph_inputs:
                problems.append(Problem(where, f"the graph has no input {output!r}"))
            return graph_inputs.get(output)
        if node_name not in nodes:
            problems.append(Problem(where, f"unknown node {node_name!r}"))
            return None
        if node_name in chooser_of:
            problems.append(Problem(where, f"{node_name!r} is a branch of "
                                           f"{chooser_of[node_name]!r}: read the chooser's "
                                           "output instead"))
            return None
        outs = produced.get(node_name)
        if outs is None:
            return None  # that node already has a problem of its own
        for s in outs:
            if s.name == output:
                return s
        problems.append(Problem(where, f"{node_name!r} has no output {output!r} (it has "
                                       f"{', '.join(s.name for s in outs) or 'none'})"))
        return None

    order = _all_in_order(spec)
    for name in order:
        node = nodes[name]
        where = f"nodes.{name}"
        if name in chooser_of:
            # A branch reads graph inputs or eager nodes only (it runs on chosen rows).
            for key, ref in node.inputs.items():
                source = ref_node(ref)
                if source in chooser_of:
                    problems.append(Problem(f"{where}.inputs.{key}",
                                            "a branch cannot read another branch"))
        outs = _node_outputs(node, signatures, produced, spec_of, problems)
        if outs is not None:
            produced[name] = outs
    for out_name, ref in spec.outputs.items():
        spec_of(ref, f"outputs.{out_name}")
    return produced, problems


def _all_in_order(spec: GraphSpec) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in spec.nodes:
            return
        seen.add(name)
        node = spec.nodes[name]
        for dep in (*node.needs(), *node.chooses()):
            visit(dep)
        order.append(name)

    for name in spec.nodes:
        visit(name)
    return order


def _cycles(spec: GraphSpec) -> list[Problem]:
    state: dict[str, int] = {}
    found: list[Problem] = []

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2 or name not in spec.nodes:
            return
        if state.get(name) == 1:
            loop = [*trail[trail.index(name):], name]
            found.append(Problem(f"nodes.{name}", "cycle: " + " -> ".join(loop)))
            return
        state[name] = 1
        node = spec.nodes[name]
        for dep in (*node.needs(), *node.chooses()):
            visit(dep, [*trail, name])
        state[name] = 2

    for name in spec.nodes:
        visit(name, [])
    return found


def _node_outputs(node: Node, signatures: Mapping[str, Signature],
                  produced: Mapping[str, tuple[TensorSpec, ...]],
                  spec_of: Callable[[str, str], TensorSpec | None],
                  problems: list[Problem]) -> tuple[TensorSpec, ...] | None:
    where = f"nodes.{node.name}"
    if node.kind in ("model", "transform"):
        wanted: tuple[TensorSpec, ...] = ()
        if node.kind == "model":
            signature = signatures.get(node.name)
            if signature is None:
                return None
            wanted = signature.inputs
        for key, ref in node.inputs.items():
            source = spec_of(ref, f"{where}.inputs.{key}")
            if node.kind == "model":
                target = next((s for s in wanted if s.name == key), None)
                if target is None:
                    problems.append(Problem(f"{where}.inputs.{key}", f"{node.model} has no "
                                            f"input {key!r} (it has "
                                            f"{', '.join(s.name for s in wanted)})"))
                elif source is not None:
                    _check_edge(source, target, f"{where}.inputs.{key}", problems)
        for spec in wanted:
            if spec.name not in node.inputs:
                problems.append(Problem(f"{where}.inputs.{spec.name}",
                                        f"{node.model}'s input {spec.name!r} is not wired"))
        if node.kind == "transform":
            if not node.trusted:
                problems.append(Problem(f"{where}.trusted", "a transform runs project code: "
                                        "mark it trusted: true once reviewed"))
            return node.outputs
        return signatures[node.name].outputs
    if node.kind == "ensemble":
        return _ensemble_outputs(node, signatures, produced, problems)
    # router, cascade, fallback: every branch must answer the same outputs.
    branch_outputs = [(b, produced.get(b)) for b in node.chooses()]
    known = [(b, outs) for b, outs in branch_outputs if outs is not None]
    if not known:
        return None
    first_name, first = known[0]
    for other, outs in known[1:]:
        if _shape_of(outs) != _shape_of(first):
            problems.append(Problem(where, f"branches {first_name!r} and {other!r} answer "
                                           "different outputs"))
    for rule, _ in node.rules:
        source = spec_of(rule.ref, f"{where}.routes")
        if source is not None and isinstance(rule.value, str) != (source.dtype == "string"):
            problems.append(Problem(f"{where}.routes", f"rule on {rule.ref} compares a "
                                    f"{source.dtype} with {rule.value!r}"))
    if node.kind == "cascade":
        confidence = node.confidence
        for step, outs in known:
            if confidence and confidence not in {s.name for s in outs}:
                problems.append(Problem(f"{where}.confidence", f"step {step!r} has no output "
                                                               f"{confidence!r}"))
    return first


def _ensemble_outputs(node: Node, signatures: Mapping[str, Signature],
                      produced: Mapping[str, tuple[TensorSpec, ...]],
                      problems: list[Problem]) -> tuple[TensorSpec, ...] | None:
    where = f"nodes.{node.name}"
    member_specs = []
    for member in node.members:
        outs = produced.get(member)
        if outs is None:
            continue
        spec = next((s for s in outs if s.name == node.output), None)
        if spec is None:
            problems.append(Problem(f"{where}.output", f"member {member!r} has no output "
                                                       f"{node.output!r}"))
        else:
            member_specs.append(spec)
    if not member_specs or node.output is None:
        return None
    first = member_specs[0]
    for other in member_specs[1:]:
        if other.dtype != first.dtype or not _shapes_fit(other.shape, first.shape):
            problems.append(Problem(f"{where}.members", f"members answer {node.output!r} "
                                    "with different types or shapes"))
    if node.method in ("mean", "weighted_mean"):
        if first.dtype not in ("float16", "float32", "float64"):
            problems.append(Problem(f"{where}.method", f"{node.method} needs a float output, "
                                                       f"{node.output!r} is {first.dtype}"))
        return (TensorSpec(node.output, "float32" if first.dtype != "float64" else "float64",
                           first.shape),)
    if node.method == "vote":
        return (TensorSpec(node.output, first.dtype, first.shape),)
    signature = signatures.get(node.name)  # stack
    if signature is None:
        return None
    if len(signature.inputs) != 1:
        problems.append(Problem(f"{where}.model", "a stacking model takes one input (the "
                                                  "members' outputs side by side)"))
    return signature.outputs


def _shape_of(outs: tuple[TensorSpec, ...]) -> list[tuple[str, str, int]]:
    return sorted((s.name, s.dtype, len(s.shape)) for s in outs)


def _shapes_fit(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _check_edge(source: TensorSpec, target: TensorSpec, where: str,
                problems: list[Problem]) -> None:
    if source.dtype != target.dtype and not (
            source.dtype.startswith("float") and target.dtype.startswith("float")):
        problems.append(Problem(where, f"{source.dtype} flows into an input of type "
                                       f"{target.dtype}"))
    if not _shapes_fit(source.shape, target.shape):
        problems.append(Problem(where, f"shape {list(source.shape)} does not fit "
                                       f"{list(target.shape)}"))


def signature(spec: GraphSpec, produced: Mapping[str, tuple[TensorSpec, ...]]) -> Signature:
    """The graph's own signature: its inputs, and its outputs as the nodes produce them."""
    outs = []
    for out_name, ref in spec.outputs.items():
        node_name, output = split_ref(ref)
        source = next((s for s in produced.get(node_name, ()) if s.name == output), None)
        if source is not None:
            outs.append(TensorSpec(out_name, source.dtype, source.shape, source.allow_nan))
    return Signature(spec.inputs, tuple(outs))
