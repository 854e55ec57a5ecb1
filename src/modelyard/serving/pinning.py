"""Which version answers when a client names one: one rule for every protocol (ADR 0028).

A client names a version in the ``Modelyard-Version`` header (HTTP, and the OpenAI-compatible
routes), in ``modelyard-version`` metadata (gRPC), in the OIP v2 path
``/v2/models/{name}/versions/{version}`` or in gRPC's ``model_version``; as a number (``2``)
or a reference (``churn:2``; a graph's generation, ``triage:3``). Whatever the protocol:

* naming the version an endpoint serves, when it serves exactly one, is allowed to anyone who
  may call the endpoint (OIP and KServe clients put versions in paths as a matter of course);
* choosing among the versions of a traffic split (past the canary's weights) takes
  ``traffic:override`` (developer, operator, admin) in the endpoint's project;
* a version the endpoint does not serve is 404 ``version_not_found`` naming the field that
  named it; two fields that name different versions are 404 too.

Callers only come here when a version was named: the hot path without one pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from modelyard.domain.errors import Forbidden, VersionNotFound
from modelyard.graph.executor import GraphDeployment
from modelyard.rollout.routing import TrafficDeployment
from modelyard.serving.deployment import Deployment

PIN_HEADER = "modelyard-version"  # the HTTP header, and the gRPC metadata key
PIN_RIGHT = "traffic:override"

Served = Deployment | GraphDeployment
Endpoint = Deployment | GraphDeployment | TrafficDeployment


class Named(NamedTuple):
    """A version as a client named it, and where (the field a refusal names)."""

    field: str  # "modelyard-version", "version" (the OIP path), "model_version" (gRPC)
    value: str


def served(deployment: Endpoint) -> list[Served]:
    """What an endpoint answers with: the targets of its split, or its one deployment."""
    if isinstance(deployment, TrafficDeployment):
        return list(deployment.targets)
    return [deployment]


def choose(endpoint: str, deployment: Endpoint, named: Sequence[Named],
           may_choose: Callable[[], bool]) -> Served:
    """The deployment that answers a request naming a version (``named``: one or two fields,
    the path's first), once the caller may choose it. ``may_choose`` says whether the caller
    holds the pin right; it is only asked when the endpoint splits its traffic."""
    targets = served(deployment)
    if len({t.version.ref for t in targets}) > 1 and not may_choose():
        raise Forbidden(f"endpoint {endpoint!r} splits its traffic; choosing one of its "
                        "versions needs a developer, operator or admin key",
                        field=named[0].field)
    return lookup(endpoint, targets, named)


def lookup(endpoint: str, targets: Sequence[Served], named: Sequence[Named]) -> Served:
    """The one of ``targets`` every ``named`` field names, or 404 naming the field. No right
    is checked: describing a served version (OIP metadata, readiness) answers nothing."""
    chosen: Served | None = None
    for where in named:
        wanted = where.value.strip()
        found = next((t for t in targets
                      if wanted in (str(t.version.version), t.version.ref)), None)
        if found is None:
            raise VersionNotFound(_not_served(endpoint, targets, where), field=where.field)
        if chosen is not None and found is not chosen:
            first = named[0]
            raise VersionNotFound(f"{first.field} names {first.value!r} but {where.field} "
                                  f"names {where.value!r}: name one version",
                                  field=first.field)
        chosen = found
    if chosen is None:
        raise ValueError("lookup() needs at least one named version")
    return chosen


def _not_served(endpoint: str, targets: Sequence[Served], where: Named) -> str:
    if len(targets) == 1:
        version = targets[0].version
        return (f"endpoint {endpoint!r} serves version {version.version}, not {where.value!r}"
                f" ({where.field} may name {version.version} or {version.ref})")
    refs = ", ".join(t.version.ref for t in targets)
    return f"endpoint {endpoint!r} serves {refs}, not {where.value!r} ({where.field})"
