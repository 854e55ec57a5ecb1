"""Monitoring: reference profiles of versions, monitors of endpoints (windows, thresholds,
quality task, alert rules), their results as time series, and alerts with their events.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelyard.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reference_profiles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(),
                  sa.ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "monitors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("endpoint", sa.String(128), nullable=False, unique=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_window_end", UTCDateTime(), nullable=True),
        sa.Column("last_evaluated_at", UTCDateTime(), nullable=True),
        sa.Column("labels_seen_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "monitor_results",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("version", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # drift | quality
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("endpoint", "version", "kind", "window_end",
                            name="uq_monitor_results_window"),
    )
    op.create_index("ix_monitor_results_endpoint_kind_end", "monitor_results",
                    ["endpoint", "kind", "window_end"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),  # the rule's AlertState
        sa.Column("status", sa.String(16), nullable=False),  # ok | pending | firing
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_alerts_endpoint", "alerts", ["endpoint"])
    op.create_table(
        "alert_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer(), sa.ForeignKey("alerts.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # firing | resolved
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("delivered", sa.JSON(), nullable=False),  # sink -> ok | error text
    )
    op.create_index("ix_alert_events_at", "alert_events", ["at"])


def downgrade() -> None:
    op.drop_table("alert_events")
    op.drop_table("alerts")
    op.drop_table("monitor_results")
    op.drop_table("monitors")
    op.drop_table("reference_profiles")
