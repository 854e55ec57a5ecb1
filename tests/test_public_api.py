"""The public surface is small and deliberate: adding to it is a decision, made here."""

from __future__ import annotations

import modelyard


def test_exported_members() -> None:
    assert sorted(modelyard.__all__) == sorted(
        ["Client", "Graph", "ModelyardError", "Signature", "TensorSpec", "Yard", "__version__"])
    for name in modelyard.__all__:
        assert getattr(modelyard, name) is not None


def test_client_and_yard_offer_the_same_verbs() -> None:
    verbs = {"register", "models", "model", "versions", "version", "search", "set_alias",
             "remove_alias", "archive", "delete_model", "create_endpoint", "update_endpoint",
             "endpoint", "list_endpoints", "delete_endpoint", "predict", "create_key",
             "list_keys", "rotate_key", "revoke_key", "card", "update_card",
             "audit_verify", "audit_records", "sign", "signatures", "create_project",
             "list_projects", "project", "update_project", "list_approvals", "approval",
             "approve", "reject", "cancel_approval", "validate_graph",
             "set_traffic", "start_rollout", "rollouts_of", "rollout", "pause_rollout",
             "resume_rollout", "promote_rollout", "abort_rollout", "enqueue_job",
             "list_jobs", "job", "job_logs", "cancel_job", "wait_job", "set_schedule",
             "list_schedules", "delete_schedule", "inference_log", "inference_log_summary",
             "set_monitor", "monitor", "delete_monitor", "run_monitor", "drift", "quality",
             "alerts", "alert_events", "set_profile", "profile",
             "set_retrain_policy", "retrain_policy", "list_retrain_policies",
             "delete_retrain_policy", "retrain", "retrain_cycles", "retrain_cycle",
             "readiness", "record_loadtest", "loadtests"}
    for cls in (modelyard.Client, modelyard.Yard):
        missing = {v for v in verbs if not callable(getattr(cls, v, None))}
        assert not missing, (cls.__name__, missing)
