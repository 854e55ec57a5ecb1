"""Running a validated graph: each model node through its own deployment (its own batching),
independent nodes concurrently, branches on the rows chosen for them.

``GraphDeployment`` answers like a model ``Deployment`` (a signature, an async ``predict``), so
the data plane serves graphs through the same routes and protocols. Each node call has a
deadline (the node's timeout within what is left of the request's), retries inside a retry
budget, and a circuit breaker; a fallback node turns a failure or a timeout into its next
branch and records why. ``predict_traced`` also returns what ran: nodes, rows, timings,
versions, fallbacks.

Telemetry: with an observer (the server gives each graph one), every node call is counted and
timed per node (``modelyard_node_requests``, ``modelyard_node_seconds``) and, when tracing is
on, is a span (children of the request's span; a router's or cascade's branches nest under it).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry.trace import Status, StatusCode, get_current_span

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import DeadlineExceeded, InvalidInput, ModelyardError
from modelyard.domain.graph import GraphSpec, Node, Rule, split_ref
from modelyard.domain.registry import ModelVersion
from modelyard.domain.signature import Signature
from modelyard.serving.batcher import BatchObserver
from modelyard.serving.deployment import Deployment
from modelyard.serving.resilience import CircuitBreaker, RetryBudget, backoff_s

Arrays = dict[str, np.ndarray]
log = logging.getLogger("modelyard.graph")


class NodeFailed(ModelyardError):
    """A node of the graph failed and no fallback covered it."""

    code, status, title = "node_failed", 502, "Graph node failed"


class NodeTimeout(ModelyardError):
    code, status, title = "node_timeout", 504, "Graph node timed out"


@dataclass
class NodeRuntime:
    """What a node needs to run: its deployment or function, and its resilience state."""

    node: Node
    deployment: Deployment | None = None
    function: Callable[[Arrays], Mapping[str, Any]] | None = None
    breaker: CircuitBreaker | None = None
    budget: RetryBudget = field(default_factory=RetryBudget)

    def __post_init__(self) -> None:
        if self.breaker is None:
            self.breaker = CircuitBreaker(self.node.name, self.node.breaker_failures,
                                          self.node.breaker_reset_s)


def load_function(reference: str) -> Callable[[Arrays], Mapping[str, Any]]:
    """Import a trusted transform ``module:function`` (validation refused untrusted ones)."""
    module_name, _, attr = reference.partition(":")
    function = getattr(importlib.import_module(module_name), attr)
    if not callable(function):
        raise TypeError(f"{reference} is not callable")
    return function


class Trace:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.steps: list[dict[str, Any]] = []

    def add(self, node: Node, rows: int, began: float, status: str, **extra: Any) -> None:
        self.steps.append({"node": node.name, "kind": node.kind, "rows": rows,
                           "start_ms": round((began - self.started) * 1000, 3),
                           "ms": round((time.perf_counter() - began) * 1000, 3),
                           "status": status, **extra})


class GraphDeployment:
    def __init__(self, name: str, generation: int, spec: GraphSpec, graph_signature: Signature,
                 runtimes: Mapping[str, NodeRuntime], digest: str) -> None:
        self.spec = spec
        self.runtimes = dict(runtimes)
        self.graph_signature = graph_signature
        self.deployment_spec = DeploymentSpec()
        # Looks like a model version to the data plane (headers, metadata, OIP v2).
        first = next(iter(r.deployment.version for r in self.runtimes.values()
                           if r.deployment is not None), None)
        self.version = ModelVersion(
            model=name, version=generation, flavor="graph", artifact_digest=digest,
            artifact_size=0, signature=graph_signature,
            lineage=first.lineage if first else _empty_lineage(), flavor_options={},
            description=spec.description, status="active",
            created_at=first.created_at if first else _now(), created_by="graph",
            project=first.project if first else "default")
        self.observer: BatchObserver | None = None  # set by the backend: metrics, tracer
        self.warmup_ms = sum(r.deployment.warmup_ms for r in self.runtimes.values()
                             if r.deployment is not None)

    @property
    def signature(self) -> Signature:
        return self.graph_signature

    @property
    def spec_key(self) -> tuple[tuple[str, str, str], ...]:
        """What was loaded, to tell whether a reconcile must rebuild the graph."""
        return tuple(sorted((n, r.deployment.version.ref, r.deployment.version.artifact_digest)
                            for n, r in self.runtimes.items() if r.deployment is not None))

    def deployments(self) -> list[Deployment]:
        return [r.deployment for r in self.runtimes.values() if r.deployment is not None]

    def retire(self) -> None:
        for deployment in self.deployments():
            deployment.retire()

    async def predict(self, inputs: Mapping[str, np.ndarray], timeout_s: float,
                      priority: int = 1) -> dict[str, np.ndarray]:
        outputs, _ = await self.predict_traced(inputs, timeout_s, priority)
        return outputs

    async def predict_traced(self, inputs: Mapping[str, np.ndarray], timeout_s: float,
                             priority: int = 1) -> tuple[dict[str, np.ndarray],
                                                         list[dict[str, Any]]]:
        run = _Run(self, dict(inputs), time.monotonic() + timeout_s, priority)
        observer = self.observer
        if observer is None:
            await run.all()
        else:
            observer.in_flight(1)
            try:
                await run.all()
            finally:
                observer.in_flight(-1)
        outputs = {name: run.value(ref, None) for name, ref in self.spec.outputs.items()}
        return outputs, run.trace.steps


class _Run:
    """One request through the graph."""

    def __init__(self, graph: GraphDeployment, inputs: Arrays, deadline: float,
                 priority: int) -> None:
        self.graph, self.inputs, self.deadline, self.priority = graph, inputs, deadline, \
            priority
        self.results: dict[str, Arrays] = {}
        self.trace = Trace()
        self.observer = graph.observer
        self.tracer = graph.observer.tracer if graph.observer is not None else None
        self.rows = len(next(iter(inputs.values()))) if inputs else 0

    async def all(self) -> None:
        nodes = self.graph.spec.nodes
        order = self.graph.spec.eager_order()
        done: dict[str, asyncio.Future[None]] = {
            n: asyncio.get_running_loop().create_future() for n in order}

        spec = self.graph.spec

        async def start(name: str) -> None:
            try:
                for dep in spec.waits_for(name):
                    if dep in done:
                        await done[dep]
                self.results[name] = await self.call(nodes[name], None)
                done[name].set_result(None)
            except asyncio.CancelledError:
                done[name].cancel()
                raise
            except BaseException as exc:
                done[name].set_exception(exc)
                raise

        tasks = [asyncio.create_task(start(n)) for n in order]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for future in done.values():  # read, so no "never retrieved" warnings
                if future.done() and not future.cancelled():
                    future.exception()

    def value(self, ref: str, rows: np.ndarray | None) -> np.ndarray:
        node, output = split_ref(ref)
        array = self.inputs[output] if node == "inputs" else self.results[node][output]
        return array if rows is None else array[rows]

    def gather(self, node: Node, rows: np.ndarray | None) -> Arrays:
        return {key: self.value(ref, rows) for key, ref in node.inputs.items()}

    def remaining(self, node: Node) -> float:
        left = self.deadline - time.monotonic()
        if node.timeout_ms is not None:
            left = min(left, node.timeout_ms / 1000)
        return left

    # -- nodes -----------------------------------------------------------------------------
    async def call(self, node: Node, rows: np.ndarray | None) -> Arrays:
        """Run one node (with its metrics and span, when the graph has an observer)."""
        observer = self.observer
        if observer is None:
            return await self._dispatch(node, rows)
        began = time.perf_counter()
        code = "ok"
        try:
            if self.tracer is None or not get_current_span().is_recording():
                return await self._dispatch(node, rows)  # (a request not traced)
            return await self._traced(node, rows)
        except ModelyardError as exc:
            code = exc.code
            raise
        except asyncio.CancelledError:
            code = "cancelled"
            raise
        except Exception:
            code = "error"
            raise
        finally:
            observer.node(node.name, code, time.perf_counter() - began)

    async def _traced(self, node: Node, rows: np.ndarray | None) -> Arrays:
        assert self.tracer is not None
        runtime = self.graph.runtimes.get(node.name)
        attributes: dict[str, Any] = {
            "modelyard.node": node.name, "modelyard.node.kind": node.kind,
            "modelyard.rows": self.rows if rows is None else len(rows)}
        if runtime is not None and runtime.deployment is not None:
            attributes["modelyard.model.version"] = runtime.deployment.version.ref
        # Errors are recorded by code only: a model's message may quote the payload.
        with self.tracer.start_as_current_span(f"node {node.name}", attributes=attributes,
                                               record_exception=False,
                                               set_status_on_exception=False) as span:
            try:
                return await self._dispatch(node, rows)
            except ModelyardError as exc:
                span.set_attribute("error.type", exc.code)
                span.set_status(Status(StatusCode.ERROR, exc.code))
                raise

    async def _dispatch(self, node: Node, rows: np.ndarray | None) -> Arrays:
        kind = node.kind
        if kind in ("model", "transform"):
            return await self.leaf(node, self.gather(node, rows), rows)
        if kind == "ensemble":
            return await self.ensemble(node, rows)
        if kind == "router":
            return await self.router(node, rows)
        if kind == "cascade":
            return await self.cascade(node, rows)
        return await self.fallback(node, rows)

    async def leaf(self, node: Node, arrays: Arrays, rows: np.ndarray | None) -> Arrays:
        runtime = self.graph.runtimes[node.name]
        count = len(next(iter(arrays.values()))) if arrays else self.rows
        began = time.perf_counter()
        attempt = 0
        runtime.budget.record_attempt()
        breaker = runtime.breaker
        assert breaker is not None
        while True:
            attempt += 1
            try:
                breaker.before()
                outputs = await self._once(node, runtime, arrays)
            except (InvalidInput, DeadlineExceeded, NodeTimeout) as exc:
                # No retry: bad data stays bad, and a timeout has used the time up.
                if not isinstance(exc, InvalidInput):
                    breaker.failure()
                self.trace.add(node, count, began, "failed", error=exc.detail,
                               attempts=attempt)
                raise _node_error(node, exc) from exc
            except ModelyardError as exc:
                if exc.code != "circuit_open":
                    breaker.failure()
                retry = exc.code != "circuit_open" and attempt <= node.retries and \
                    runtime.budget.try_retry()
                pause = backoff_s(attempt)
                if retry and self.remaining(node) > pause:
                    await asyncio.sleep(pause)
                    continue
                self.trace.add(node, count, began, "failed", error=exc.detail,
                               attempts=attempt)
                raise _node_error(node, exc) from exc
            breaker.success()
            extra: dict[str, Any] = {"attempts": attempt} if attempt > 1 else {}
            if runtime.deployment is not None:
                extra["version"] = runtime.deployment.version.ref
            self.trace.add(node, count, began, "ok", **extra)
            return outputs

    async def _once(self, node: Node, runtime: NodeRuntime, arrays: Arrays) -> Arrays:
        left = self.remaining(node)
        if left <= 0:
            raise NodeTimeout(f"no time left for node {node.name!r}", field=f"nodes.{node.name}")
        if runtime.deployment is not None:
            deployment = runtime.deployment
            checked = deployment.signature.validate(arrays)
            try:
                return await asyncio.wait_for(
                    deployment.predict(checked, left, self.priority), timeout=left)
            except (TimeoutError, DeadlineExceeded) as exc:
                raise NodeTimeout(f"node {node.name!r} ({deployment.version.ref}) took longer "
                                  f"than {left * 1000:.0f} ms", field=f"nodes.{node.name}") \
                    from exc
        assert runtime.function is not None
        function = runtime.function
        try:
            raw = await asyncio.wait_for(asyncio.to_thread(function, arrays), timeout=left)
        except TimeoutError as exc:
            raise NodeTimeout(f"transform {node.name!r} took longer than "
                              f"{left * 1000:.0f} ms", field=f"nodes.{node.name}") from exc
        except Exception as exc:  # the project function's own failure
            raise NodeFailed(f"transform {node.name!r} failed: {type(exc).__name__}: {exc}",
                             field=f"nodes.{node.name}") from exc
        return _check_outputs(node, raw)

    async def ensemble(self, node: Node, rows: np.ndarray | None) -> Arrays:
        began = time.perf_counter()
        assert node.output is not None
        values = [self.results[m][node.output] if rows is None
                  else self.results[m][node.output][rows] for m in node.members]
        if node.method == "stack":
            stacked = np.concatenate([v.reshape(len(v), -1).astype(np.float32)
                                      for v in values], axis=1)
            runtime = self.graph.runtimes[node.name]
            assert runtime.deployment is not None
            name = runtime.deployment.signature.inputs[0].name
            return await self.leaf(node, {name: stacked}, rows)
        if node.method == "vote":
            out = _vote(values)
        else:
            weights = node.weights or (1.0,) * len(values)
            total = sum(weights)
            mixed = np.zeros(values[0].shape, dtype=np.float64)
            for weight, value in zip(weights, values, strict=True):
                mixed += weight * value.astype(np.float64)
            out = (mixed / total).astype(np.float64 if values[0].dtype == np.float64
                                         else np.float32)
        self.trace.add(node, len(values[0]), began, "ok", method=node.method)
        return {node.output: out}

    async def router(self, node: Node, rows: np.ndarray | None) -> Arrays:
        began = time.perf_counter()
        indices = np.arange(self.rows) if rows is None else rows
        left = np.ones(len(indices), dtype=bool)
        plan: list[tuple[str, np.ndarray]] = []
        for rule, target in node.rules:
            hit = _evaluate(rule, self.value(rule.ref, indices)) & left
            if hit.any():
                plan.append((target, indices[hit]))
            left &= ~hit
        if left.any():
            assert node.default is not None
            plan.append((node.default, indices[left]))
        self.trace.add(node, len(indices), began, "ok",
                       routes={t: len(r) for t, r in plan})
        parts = await asyncio.gather(*(self.call(self.graph.spec.nodes[t], r)
                                       for t, r in plan))
        return _merge(indices, [(r, p) for (_, r), p in zip(plan, parts, strict=True)])

    async def cascade(self, node: Node, rows: np.ndarray | None) -> Arrays:
        indices = np.arange(self.rows) if rows is None else rows
        pieces: list[tuple[np.ndarray, Arrays]] = []
        pending = indices
        steps = node.branches
        for i, step in enumerate(steps):
            began = time.perf_counter()
            outputs = await self.call(self.graph.spec.nodes[step], pending)
            if i == len(steps) - 1:
                pieces.append((pending, outputs))
                break
            assert node.confidence is not None
            confidence = np.asarray(outputs[node.confidence], dtype=np.float64)
            confidence = confidence.reshape(len(pending), -1).max(axis=1)
            sure = confidence >= node.threshold
            pieces.append((pending[sure], {k: v[sure] for k, v in outputs.items()}))
            self.trace.add(node, len(pending), began, "ok", step=step,
                           escalated=int((~sure).sum()))
            pending = pending[~sure]
            if not len(pending):
                break
        return _merge(indices, pieces)

    async def fallback(self, node: Node, rows: np.ndarray | None) -> Arrays:
        reasons: list[str] = []
        for branch in node.branches:
            began = time.perf_counter()
            try:
                outputs = await self.call(self.graph.spec.nodes[branch], rows)
            except (NodeFailed, NodeTimeout) as exc:
                if self.deadline - time.monotonic() <= 0:
                    raise
                reasons.append(f"{branch}: {exc.code}")
                log.info("graph %s: node %s fell back from %s: %s", self.graph.version.model,
                         node.name, branch, exc.detail)
                self.trace.add(node, 0, began, "fell_back", skipped=branch, reason=exc.detail)
                continue
            if reasons:
                self.trace.add(node, len(next(iter(outputs.values()), [])), began, "ok",
                               used=branch, fallbacks=reasons)
            return outputs
        raise NodeFailed(f"every branch of {node.name!r} failed: {'; '.join(reasons)}",
                         field=f"nodes.{node.name}", fallbacks=reasons)


def _node_error(node: Node, exc: ModelyardError) -> ModelyardError:
    if isinstance(exc, NodeFailed | NodeTimeout):
        return exc
    if isinstance(exc, DeadlineExceeded):
        return NodeTimeout(f"node {node.name!r}: {exc.detail}", field=f"nodes.{node.name}")
    if exc.status < 500 and not isinstance(exc, InvalidInput):
        return exc  # the client's own mistake (e.g. overload is 503 and passes below)
    return NodeFailed(f"node {node.name!r} failed: {exc.detail}", field=f"nodes.{node.name}",
                      node=node.name, cause=exc.code)


def _check_outputs(node: Node, raw: Mapping[str, Any]) -> Arrays:
    out = {}
    for spec in node.outputs:
        if spec.name not in raw:
            raise NodeFailed(f"transform {node.name!r} did not return {spec.name!r}",
                             field=f"nodes.{node.name}")
        out[spec.name] = np.asarray(raw[spec.name], dtype=spec.numpy_dtype)
    return out


def _evaluate(rule: Rule, values: np.ndarray) -> np.ndarray:
    data = values.reshape(len(values), -1) if values.ndim != 1 else values[:, None]
    if rule.fn == "max":
        column = data.astype(np.float64).max(axis=1)
    elif rule.fn == "min":
        column = data.astype(np.float64).min(axis=1)
    elif rule.fn == "argmax":
        column = data.astype(np.float64).argmax(axis=1).astype(np.float64)
    elif isinstance(rule.value, str):
        column = np.array([v.decode() if isinstance(v, bytes) else str(v)
                           for v in data[:, 0]], dtype=object)
    else:
        column = data[:, 0].astype(np.float64)
    ops: dict[str, Callable[[Any, Any], Any]] = {
        "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
        "==": np.equal, "!=": np.not_equal}
    return np.asarray(ops[rule.op](column, rule.value), dtype=bool)


def _merge(indices: np.ndarray, pieces: list[tuple[np.ndarray, Arrays]]) -> Arrays:
    """Put each branch's rows back in request order."""
    position = {int(i): p for p, i in enumerate(indices)}
    filled = [(rows, part) for rows, part in pieces if len(rows)]
    if not filled:
        return {}
    out: Arrays = {}
    for name, sample in filled[0][1].items():
        array = np.empty((len(indices), *sample.shape[1:]), dtype=sample.dtype)
        for rows, part in filled:
            array[[position[int(i)] for i in rows]] = part[name]
        out[name] = array
    return out


def _vote(values: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack([v.reshape(len(v)) for v in values], axis=1)
    out = np.empty(len(stacked), dtype=values[0].dtype)
    for i, row in enumerate(stacked):
        labels, counts = np.unique(row, return_counts=True)
        out[i] = labels[np.argmax(counts)]  # ties: the smallest label, deterministic
    return out.reshape(values[0].shape)


def _empty_lineage() -> Any:
    from modelyard.domain.registry import Lineage

    return Lineage()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
