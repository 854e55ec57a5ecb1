"""Control-plane routes for retraining (``/api/v1/retraining``): policies per model, manual
cycles, and the cycles with their gate verdicts and rollouts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam

from modelyard.control.api import current_principal
from modelyard.domain.errors import ValidationFailed, reject_unknown
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.serving.codecs import require_json
from modelyard.yard import Yard

Who = Annotated[Principal, Depends(current_principal)]
CycleId = Annotated[int, PathParam(ge=1, le=2**62, description="the cycle's id")]

# The fields of a policy document (domain/retraining.py checks each).
POLICY_HELP = ("endpoint (where the canary runs), entrypoint (module:function, with trusted: "
               "true), params, data {inference_log: {since, min_labels}, dataset_url, label, "
               "features}, holdout {share, url, seed}, gate {metric, min_gain (number or "
               "'2%'), slices: [{feature, max_drop, min_rows}]}, triggers {schedule (cron), "
               "on_drift, on_quality_drop}, rollout (canary steps, analysis), "
               "require_approval, max_attempts")


def add_retrain_routes(router: APIRouter, yard: Yard) -> None:
    retraining = yard.retraining
    json_body = [Depends(require_json)]

    @router.get("/retraining/policies", tags=["retraining"])
    def list_policies(who: Who) -> list[dict[str, Any]]:
        return retraining.policies(who)

    @router.get("/retraining/policies/{model}", tags=["retraining"])
    def get_policy(model: str, who: Who) -> dict[str, Any]:
        return retraining.policy(who, model)

    @router.put("/retraining/policies/{model}", tags=["retraining"], dependencies=json_body)
    def set_policy(model: str, body: dict[str, Any], who: Who) -> dict[str, Any]:
        """Create or replace the model's retraining policy (fields: see POLICY_HELP in
        control/retrain_routes.py and docs/decisions/0018)."""
        guard(yard.db, who, "retraining:write", f"retrain:{model}", anywhere=True)
        return retraining.set_policy(who, model, body)

    @router.delete("/retraining/policies/{model}", status_code=204, tags=["retraining"])
    def delete_policy(model: str, who: Who) -> Response:
        retraining.delete_policy(who, model)
        return Response(status_code=204)

    @router.post("/retraining/policies/{model}/run", status_code=202, tags=["retraining"])
    def run(model: str, who: Who, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a cycle now (``{"reason": "..."}``); 409 while one of the model runs."""
        guard(yard.db, who, "retraining:write", f"retrain:{model}", anywhere=True)
        body = reject_unknown(body, {"reason"}, "field", "body")
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise ValidationFailed("reason must be text", field="reason")
        return retraining.run(who, model, reason)

    @router.get("/retraining/cycles", tags=["retraining"])
    def list_cycles(who: Who, model: str | None = None,
                    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        """Newest first: trigger, state, champion vs challenger, gate verdict, rollout."""
        return retraining.cycles(who, model, limit=limit, before=before)

    @router.get("/retraining/cycles/{cycle_id}", tags=["retraining"])
    def get_cycle(cycle_id: CycleId, who: Who) -> dict[str, Any]:
        return retraining.cycle(who, cycle_id)
