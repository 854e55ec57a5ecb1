"""Projects (with the default one), project of models and endpoints, four-eyes approvals,
Ed25519 signatures of versions, per-endpoint redaction rules, graph endpoints and traffic policies.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from modelyard.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.bulk_insert(projects, [{"name": "default", "description": "the yard's first project",
                               "policy": {}, "created_at": datetime.now(UTC),
                               "created_by": "modelyard"}])
    for table in ("models", "endpoints"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("project", sa.String(128), nullable=False,
                                       server_default=sa.text("'default'")))
            batch.create_index(f"ix_{table}_project", ["project"])
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("redaction", sa.JSON(), nullable=False,
                                   server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("graph", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("traffic", sa.JSON(), nullable=True))
    op.create_table(
        "version_signatures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(),
                  sa.ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(256), nullable=False),
        sa.Column("added_by", sa.String(256), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("version_id", "key_id", name="uq_version_signatures_version_key"),
    )
    op.create_index("ix_version_signatures_version_id", "version_signatures", ["version_id"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("requester_subject", sa.String(256), nullable=False),
        sa.Column("requester_roles", sa.JSON(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_approvals_status", "approvals", ["status"])
    op.create_index("ix_approvals_project", "approvals", ["project"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("baseline", sa.String(300), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", UTCDateTime(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_rollouts_endpoint_status", "rollouts", ["endpoint", "status"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("version", sa.String(300), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_feedback_endpoint_version_at", "feedback",
                    ["endpoint", "version", "at"])
    op.create_table(
        "approval_votes",
        sa.Column("approval_id", sa.Integer(),
                  sa.ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subject", sa.String(256), primary_key=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("approval_votes")
    op.drop_table("feedback")
    op.drop_table("rollouts")
    op.drop_table("approvals")
    op.drop_table("version_signatures")
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("traffic")
        batch.drop_column("graph")
        batch.drop_column("redaction")
    for table in ("endpoints", "models"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_project")
            batch.drop_column("project")
    op.drop_table("projects")
