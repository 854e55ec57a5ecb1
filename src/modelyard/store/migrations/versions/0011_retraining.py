"""Retraining: one policy per model, and the cycles it runs (trigger, training job,
challenger, gate verdict, rollout).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelyard.store.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "retrain_policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False, unique=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("principal", sa.JSON(), nullable=False),  # who set it: alerts act as them
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "retrain_cycles",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),  # schedule drift quality manual
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("job_id", _ID, nullable=True),
        sa.Column("champion", sa.String(300), nullable=True),
        sa.Column("challenger", sa.String(300), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),  # rows, fingerprint, sources
        sa.Column("gate", sa.JSON(), nullable=True),  # the GateResult and both Scores
        sa.Column("rollout_id", _ID, nullable=True),
        sa.Column("approval_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_retrain_cycles_model_state", "retrain_cycles", ["model", "state"])


def downgrade() -> None:
    op.drop_table("retrain_cycles")
    op.drop_table("retrain_policies")
