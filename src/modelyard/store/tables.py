"""SQLAlchemy tables. Schema changes go through an Alembic migration in ``migrations/``;
``tests/store/test_migrations.py`` fails when this file and the migrations disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


DEFAULT_PROJECT = "default"


class ProjectRow(Base):
    """A project groups models and endpoints; roles can be granted per project, and its
    policy (approvals, signatures, model cards) applies to what it holds."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256))


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    project: Mapped[str] = mapped_column(String(128), default=DEFAULT_PROJECT,
                                         server_default=text("'default'"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256))


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
        Index("ix_model_versions_digest", "artifact_digest"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    flavor: Mapped[str] = mapped_column(String(32))
    artifact_digest: Mapped[str] = mapped_column(String(64))
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    flavor_options: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_example: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    card: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256))


class VersionSignatureRow(Base):
    """An Ed25519 signature over a version's artifact digest and model name."""

    __tablename__ = "version_signatures"
    __table_args__ = (UniqueConstraint("version_id", "key_id",
                                       name="uq_version_signatures_version_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"),
                                            index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    algorithm: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(256))
    added_by: Mapped[str] = mapped_column(String(256))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VersionTagRow(Base):
    __tablename__ = "version_tags"
    __table_args__ = (Index("ix_version_tags_key_value", "key", "value"),)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_aliases_model_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    updated_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AliasEventRow(Base):
    """History of alias moves: who pointed which alias where, and when."""

    __tablename__ = "alias_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(128))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EndpointRow(Base):
    __tablename__ = "endpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    model_ref: Mapped[str] = mapped_column(String(300))
    project: Mapped[str] = mapped_column(String(128), default=DEFAULT_PROJECT,
                                         server_default=text("'default'"), index=True)
    timeout_ms: Mapped[int] = mapped_column(Integer)
    deployment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict,
                                                       server_default=text("'{}'"))
    auth: Mapped[str] = mapped_column(String(16), default="key",
                                      server_default=text("'public'"))
    # An inference graph (its validated document) served instead of a single model.
    graph: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # A traffic policy (split, sticky key, shadows) across versions, set by rollouts or users.
    traffic: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Field rules (drop, hash, mask) for whatever is stored or logged from its payloads.
    redaction: Mapped[dict[str, str]] = mapped_column(JSON, default=dict,
                                                      server_default=text("'{}'"))
    # Share of requests written to the inference log (0 = none, 1 = all).
    log_sample: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1.0"))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    generation: Mapped[int] = mapped_column(Integer, default=1)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(256))
    roles: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rate_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    daily_quota: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class KeyUsageRow(Base):
    """Data-plane calls per key and UTC day, so quotas survive a restart."""

    __tablename__ = "key_usage"
    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditRow(Base):
    """One record of the audit chain (see governance/audit.py)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512))
    outcome: Mapped[str] = mapped_column(String(16))
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The chain's last sequence number and hash: locked to serialise appends, compared on
    verify to detect a truncated tail."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class ApprovalRow(Base):
    """A change waiting for four-eyes approval; executed once when enough approvers agree."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_status", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(256))
    requester_subject: Mapped[str] = mapped_column(String(256))
    requester_roles: Mapped[list[str]] = mapped_column(JSON)
    required: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending executed rejected expired failed
    reason: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApprovalVoteRow(Base):
    """One approver's decision; one per subject (person), whatever key they use."""

    __tablename__ = "approval_votes"
    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id", ondelete="CASCADE"),
                                             primary_key=True)
    subject: Mapped[str] = mapped_column(String(256), primary_key=True)
    actor: Mapped[str] = mapped_column(String(256))
    decision: Mapped[str] = mapped_column(String(16))  # approve or reject
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RolloutRow(Base):
    """A progressive rollout of a new version on one endpoint; its state survives restarts."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_endpoint_status", "endpoint", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(128))
    project: Mapped[str] = mapped_column(String(128))
    strategy: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    baseline: Mapped[str] = mapped_column(String(300))  # model:version before the rollout
    target: Mapped[str] = mapped_column(String(300))  # model:version being rolled out
    status: Mapped[str] = mapped_column(String(24))
    step: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text, default="")
    approval_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeedbackRow(Base):
    """An outcome a client reports for an answer (a conversion, a label's correctness...):
    the metric A/B tests decide on."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_endpoint_version_at", "endpoint", "version", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(300))  # model:version that answered
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# 64-bit ids where the database has them; SQLite's rowid is 64-bit already.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class LoadTestRow(Base):
    """A load test's result against an endpoint (``modelyard loadtest``): what the readiness
    scorecard checks a recent test met the endpoint's SLO with."""

    __tablename__ = "load_tests"
    __table_args__ = (Index("ix_load_tests_endpoint_at", "endpoint", "at"),)
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(128))
    generation: Mapped[int] = mapped_column(Integer)  # the endpoint's, when it ran
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    duration_s: Mapped[float] = mapped_column(Float)
    concurrency: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    p50_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    p99_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    throughput: Mapped[float] = mapped_column(Float)  # requests answered per second
    target: Mapped[str] = mapped_column(String(512))  # the URL the load was sent to
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # status counts...
    created_by: Mapped[str] = mapped_column(String(256))


class RolloutEvidenceRow(Base):
    """One second of what one server process observed of a version (its own traffic, or its
    shadow traffic): counts and reservoir samples, shared so the leader's rollout analysis
    counts every process (``rollout/evidence.py``)."""

    __tablename__ = "rollout_evidence"
    __table_args__ = (Index("ix_rollout_evidence_series_second", "series", "shadow", "second"),
                      Index("ix_rollout_evidence_second", "second"))
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    process: Mapped[str] = mapped_column(String(200))
    series: Mapped[str] = mapped_column(String(400))  # "endpoint/model:version"
    shadow: Mapped[bool] = mapped_column(Boolean)
    second: Mapped[int] = mapped_column(BigInteger)  # Unix time, whole seconds
    bucket: Mapped[dict[str, Any]] = mapped_column(JSON)


class InferenceRecordRow(Base):
    """One sampled request and its answer, redacted before it was written."""

    __tablename__ = "inference_log"
    __table_args__ = (
        Index("ix_inference_log_endpoint_at", "endpoint", "at"),
        Index("ix_inference_log_endpoint_version_at", "endpoint", "version", "at"),
        Index("ix_inference_log_endpoint_request", "endpoint", "request_id"),
        Index("ix_inference_log_at", "at"),
        Index("ix_inference_log_endpoint_id", "endpoint", "id"),
    )
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    endpoint: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(300))  # model:version (or graph:generation)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[int] = mapped_column(SmallInteger)
    latency_ms: Mapped[float] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[Any] = mapped_column(JSON, nullable=True)
    outputs: Mapped[Any] = mapped_column(JSON, nullable=True)
    prediction: Mapped[float | None] = mapped_column(Float, nullable=True)


class LabelRow(Base):
    """Ground truth for an answer, joined to the inference log by request id; the latest
    label sent for a request wins."""

    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("endpoint", "request_id",
                                       name="uq_labels_endpoint_request"),
                      Index("ix_labels_at", "at"))
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[Any] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobRow(Base):
    """Background work (training, evaluation, drift...): queued, leased by one worker at a
    time (``lease_owner`` until ``lease_expires_at``, extended by heartbeats), retried with
    backoff; a lease that runs out is taken over by the next worker (jobs/queue.py)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_run_after", "state", "run_after"),
                      Index("ix_jobs_project_state", "project", "state"))
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # queued running succeeded failed cancelled
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    backoff_s: Mapped[float] = mapped_column(Float)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Enqueueing twice with one key yields one job (schedules: ``schedule:NAME:SLOT``).
    dedupe_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    # Who the job acts as: name, grants and subject of the principal that enqueued it.
    principal: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class JobLogRow(Base):
    """A line a job logged (redacted before it was written), per attempt."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job_id_id", "job_id", "id"),)
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(16))
    line: Mapped[str] = mapped_column(Text)


class JobStepRow(Base):
    """A step a job finished and its result: a later attempt returns it instead of running
    the step again (exactly once in effect)."""

    __tablename__ = "job_steps"
    __table_args__ = (UniqueConstraint("job_id", "key", name="uq_job_steps_job_key"),)
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobScheduleRow(Base):
    """A cron schedule: each due slot enqueues one job, however many schedulers run."""

    __tablename__ = "job_schedules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    cron: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_job_id: Mapped[int | None] = mapped_column(_BIG_ID, nullable=True)
    principal: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReferenceProfileRow(Base):
    """What a version's training data looked like (``domain.profiles.Profile``)."""

    __tablename__ = "reference_profiles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), unique=True)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256))


class MonitorRow(Base):
    """How an endpoint is watched: windows, thresholds, quality task, alert rules."""

    __tablename__ = "monitors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_window_end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Labels that arrived up to here are in the quality results.
    labels_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonitorResultRow(Base):
    """One window's drift or quality result for one version: the time series."""

    __tablename__ = "monitor_results"
    __table_args__ = (UniqueConstraint("endpoint", "version", "kind", "window_end",
                                       name="uq_monitor_results_window"),
                      Index("ix_monitor_results_endpoint_kind_end", "endpoint", "kind",
                            "window_end"))
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    n: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertRow(Base):
    """One alert (a rule on an endpoint), de-duplicated by fingerprint."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_endpoint", "endpoint"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint: Mapped[str] = mapped_column(String(128))
    rule: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertEventRow(Base):
    """An alert firing or resolving: the event stream sinks and the dashboard read."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_at", "at"),)
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    delivered: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RetrainPolicyRow(Base):
    """One model's retraining policy (``domain.retraining.RetrainPolicy``) and who set it:
    cycles started by alerts and schedules act as that principal."""

    __tablename__ = "retrain_policies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), unique=True)
    project: Mapped[str] = mapped_column(String(128))
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    principal: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RetrainCycleRow(Base):
    """One retraining cycle: trigger -> training job -> challenger -> gate -> rollout."""

    __tablename__ = "retrain_cycles"
    __table_args__ = (Index("ix_retrain_cycles_model_state", "model", "state"),)
    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    project: Mapped[str] = mapped_column(String(128))
    trigger: Mapped[str] = mapped_column(String(16))  # schedule drift quality manual
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(_BIG_ID, nullable=True)
    champion: Mapped[str | None] = mapped_column(String(300), nullable=True)
    challenger: Mapped[str | None] = mapped_column(String(300), nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rollout_id: Mapped[int | None] = mapped_column(_BIG_ID, nullable=True)
    approval_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LeaderLeaseRow(Base):
    """Who leads the control plane for ``name`` until ``expires_at`` (SQLite; PostgreSQL
    uses advisory locks). ``term`` grows with every change of holder."""

    __tablename__ = "leader_lease"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    term: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UiSessionRow(Base):
    """A dashboard login (``ui/sessions.py``): only the sha256 of the cookie's random token
    is kept. A key session names its key (``key_prefix``) and is re-checked against it on
    every request, so revoking the key ends it; an OIDC session keeps the token's roles."""

    __tablename__ = "ui_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # key or oidc
    key_prefix: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    subject: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256))  # the principal's name in the audit log
    roles: Mapped[list[str]] = mapped_column(JSON)  # oidc: the grants of the ID token
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
