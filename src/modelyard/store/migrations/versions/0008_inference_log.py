"""The inference log (sampled, redacted requests and answers, with the version that answered),
ground-truth labels that arrive later, and each endpoint's sampling rate.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelyard.store.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# 64-bit ids where the database has them; SQLite's rowid is 64-bit already.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inference_log",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("version", sa.String(300), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("prediction", sa.Float(), nullable=True),
    )
    op.create_index("ix_inference_log_endpoint_at", "inference_log", ["endpoint", "at"])
    op.create_index("ix_inference_log_endpoint_version_at", "inference_log",
                    ["endpoint", "version", "at"])
    op.create_index("ix_inference_log_endpoint_request", "inference_log",
                    ["endpoint", "request_id"])
    op.create_index("ix_inference_log_at", "inference_log", ["at"])
    # Pages of the newest records of an endpoint (keyset by id) without a sort.
    op.create_index("ix_inference_log_endpoint_id", "inference_log", ["endpoint", "id"])
    op.create_table(
        "labels",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("endpoint", "request_id", name="uq_labels_endpoint_request"),
    )
    op.create_index("ix_labels_at", "labels", ["at"])
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("log_sample", sa.Float(), nullable=False,
                                   server_default=sa.text("1.0")))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("log_sample")
    op.drop_table("labels")
    op.drop_table("inference_log")
