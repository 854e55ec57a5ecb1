"""What each job kind runs: a table of kind -> handler, filled explicitly (no registration
through import side effects).

A handler is ``handler(ctx, payload) -> result``: ``ctx`` is the ``JobContext`` (logs,
heartbeats, cancellation, durable steps, the yard acting as the job's principal), ``payload``
the job's JSON document, and the result anything JSON can hold. Each kind names the policy
action that enqueueing it needs and may check payloads before they are queued.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelyard.domain.errors import ValidationFailed, reject_unknown
from modelyard.domain.jobs import UnknownJobKind, check_kind, check_resources

if TYPE_CHECKING:
    from modelyard.jobs.worker import JobContext

Handler = Callable[["JobContext", dict[str, Any]], Any]
PayloadCheck = Callable[[dict[str, Any]], dict[str, Any]]

_REFERENCE = re.compile(r"[A-Za-z][\w]*(?:\.[A-Za-z][\w]*)*:[A-Za-z][\w]*")


@dataclass(frozen=True)
class JobKind:
    kind: str
    handler: Handler
    action: str = "jobs:write"  # what enqueueing it needs (governance/policy.py)
    check: PayloadCheck | None = None
    description: str = ""


class Handlers:
    """The kinds this process knows. Workers claim only jobs of kinds they know."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def __repr__(self) -> str:
        return f"Handlers({sorted(self._kinds)})"

    def register(self, kind: str, handler: Handler, *, action: str = "jobs:write",
                 check: PayloadCheck | None = None, description: str = "") -> JobKind:
        """Add (or replace) a kind. ``action``: the policy action that enqueueing it needs;
        ``check``: validates a payload before it is queued (raise ``ValidationFailed``) and
        returns it as stored."""
        spec = JobKind(check_kind(kind), handler, action, check, description)
        self._kinds[kind] = spec
        return spec

    def get(self, kind: str) -> JobKind:
        spec = self._kinds.get(kind)
        if spec is None:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise UnknownJobKind(f"no job kind {kind!r} here; known: {known}", field="kind")
        return spec

    def kinds(self) -> frozenset[str]:
        return frozenset(self._kinds)

    def describe(self) -> dict[str, str]:
        return {k: v.description for k, v in sorted(self._kinds.items())}


# -- call: a trusted project function ------------------------------------------------------
def check_call(payload: dict[str, Any]) -> dict[str, Any]:
    """``{"function": "module:function", "args": {...}, "trusted": true}``. Like a graph's
    ``transform`` node and the ``python`` flavor (docs/decisions/0002), this runs project code
    that must be importable where the worker runs (never code from the payload), and only
    once whoever enqueues it said ``trusted: true``."""
    payload = reject_unknown(payload, {"function", "args", "trusted", "resources"},
                             "call field", "payload")
    reference = payload.get("function")
    if not isinstance(reference, str) or not _REFERENCE.fullmatch(reference):
        raise ValidationFailed("function must be a project function 'package.module:function' "
                               "(no private names)", field="payload.function")
    if payload.get("trusted") is not True:
        raise ValidationFailed(f"a call runs project code ({reference}): mark it "
                               "trusted: true once reviewed", field="payload.trusted")
    args = payload.get("args", {})
    if not isinstance(args, Mapping) or not all(isinstance(k, str) and k.isidentifier()
                                                for k in args):
        raise ValidationFailed("args must map parameter names to values", field="payload.args")
    settled = {"function": reference, "args": dict(args), "trusted": True}
    if payload.get("resources") is not None:  # for ctx.offload (a Ray task on the ray backend)
        settled["resources"] = check_resources(payload["resources"])
    return settled


def load_function(reference: str) -> Callable[..., Any]:
    """Import ``module:function``: a plain function defined in that module (not a builtin
    or a name it merely imports)."""
    module_name, _, attr = reference.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, attr, None)
    if not inspect.isfunction(function) or function.__module__ != module.__name__:
        raise ValidationFailed(f"{reference} is not a function defined in {module_name}",
                               field="payload.function")
    return function


def run_call(ctx: JobContext, payload: dict[str, Any]) -> Any:
    settled = check_call(payload)  # checked again: the stored payload is what runs
    function = load_function(settled["function"])
    ctx.log(f"calling {settled['function']}")
    return function(ctx, **settled["args"])


def builtin_handlers() -> Handlers:
    """The kinds every Modelyard process knows."""
    handlers = Handlers()
    handlers.register("call", run_call, action="jobs:run_code", check=check_call,
                      description="run a trusted project function module:function(ctx, **args)")
    return handlers
