"""Deployment and scale: redundancy, bounded resources, a yard that can scale out, and
whether a restart can bring the endpoint back."""

from __future__ import annotations

from modelyard.domain.deployment import DeploymentSpec
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


def _least_replicas(spec: DeploymentSpec) -> int:
    if spec.autoscaling:
        return int(spec.autoscaling.get("min_replicas", 1))
    return spec.replicas


def _deployments(ep: EndpointFacts) -> dict[str, DeploymentSpec]:
    """What runs: the endpoint's deployment, or each model node's for a graph."""
    if ep.graph is not None:
        return dict(ep.node_deployments)
    return {ep.name: ep.deployment}


def replicas(_: Evidence, ep: EndpointFacts) -> Finding:
    runs = _deployments(ep)
    if not runs:
        return not_applicable("nothing is deployed for this endpoint")
    single = sorted(name for name, spec in runs.items() if _least_replicas(spec) < 2)
    if single:
        what = "the endpoint runs" if ep.graph is None else \
            f"graph nodes {', '.join(single)} run"
        return warned(f"{what} a single replica: a replica that fails or is replaced leaves "
                      "no capacity while it reloads",
                      "set deployment.replicas (or autoscaling.min_replicas) to 2 or more")
    least = min(_least_replicas(s) for s in runs.values())
    return passed(f"at least {least} replicas for every deployment ({len(runs)})")


def resources(ev: Evidence, ep: EndpointFacts) -> Finding:
    runs = _deployments(ep)
    lazy = sorted(n for n, s in runs.items() if s.load == "lazy")
    notes = []
    if lazy and ev.yard.model_memory_budget_mb <= 0:
        return warned(f"{', '.join(lazy)} load lazily with no model memory budget: lazy "
                      "models are then never unloaded and memory is unbounded",
                      "set model_memory_budget_mb (MiB) for the server")
    if lazy:
        notes.append(f"lazy loading within a {ev.yard.model_memory_budget_mb:g} MiB budget")
    if ev.yard.backend == "ray":
        fixed = sorted(n for n, s in runs.items() if not s.autoscaling)
        if fixed:
            return warned(f"on the ray backend {', '.join(fixed)} run a fixed number of "
                          "replicas (no autoscaling)",
                          "set deployment.autoscaling {min_replicas, max_replicas, "
                          "target_ongoing_requests}")
        notes.append("ray replicas autoscale on ongoing requests")
    if not notes:
        return not_applicable("eager loading on the local backend: memory is what the "
                              "loaded models take, fixed at start")
    return passed("; ".join(notes))


def scale_out(ev: Evidence) -> Finding:
    shared_db = ev.yard.database == "postgresql"
    shared_artifacts = "://" in ev.yard.artifacts_url and \
        not ev.yard.artifacts_url.startswith("file://")
    facts = (f"metadata in {ev.yard.database}, artifacts at {ev.yard.artifacts_url}, "
             f"backend {ev.yard.backend}")
    if shared_db and shared_artifacts:
        return passed(f"{facts}: several servers can share this yard")
    missing = [what for what, ok in (("PostgreSQL for metadata", shared_db),
                                     ("an object store (s3://...) for artifacts",
                                      shared_artifacts)) if not ok]
    return warned(f"{facts}: the yard lives on one machine",
                  f"to run more than one server, use {' and '.join(missing)} "
                  "(docs/scaling.md)")


def restart_safety(ev: Evidence, ep: EndpointFacts) -> Finding:
    if not ep.versions:
        return not_applicable("no version is served yet")
    if ev.yard.artifacts_url.startswith("memory://"):
        return failed(f"artifacts are kept in memory ({ev.yard.artifacts_url}): a restart "
                      "loses every model", "set artifacts_url to a folder or an object store")
    missing = [v.ref for v in ep.versions if not v.artifact_present]
    if missing:
        return failed(f"artifacts missing from the store for {', '.join(missing)}: a restart "
                      "cannot load them",
                      "restore the artifacts (they are content-addressed: the same sha256) "
                      "or register and serve another version")
    return passed(f"{plural(len(ep.versions), 'served artifact')} present in the store "
                  "(content-addressed, sha256-verified at load); the desired state is in the "
                  "metadata store, so a restart reconciles to it")


CHECKS = (
    Check("deploy.replicas", "deployment", "Redundant replicas", 2, ref.SRE_PRR,
          "run 2 or more replicas", "deployment.replicas / autoscaling.min_replicas of the "
          "endpoint or each graph model node", endpoint=replicas),
    Check("deploy.resources", "deployment", "Resources bounded", 1, ref.SRE_PRR,
          "bound memory (model_memory_budget_mb) and let ray replicas autoscale",
          "deployment.load, the model memory budget, autoscaling on the ray backend",
          endpoint=resources),
    Check("deploy.scale_out", "deployment", "Yard can scale out", 1, ref.SRE_PRR,
          "use PostgreSQL and an object store (docs/scaling.md)",
          "the metadata store's dialect, the artifact store's URL, the backend",
          yard=scale_out),
    Check("deploy.restart_safety", "deployment", "Restart-safe", 3, ref.SRE_INTEGRITY,
          "restore missing artifacts", "served versions' artifacts present in the artifact "
          "store", endpoint=restart_safety),
)
