"""What each server process observed of the versions under rollout, per second, so that the
leader's analysis counts every process's traffic (``rollout/evidence.py``).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rollout_evidence",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("process", sa.String(200), nullable=False),
        sa.Column("series", sa.String(400), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("second", sa.BigInteger(), nullable=False),
        sa.Column("bucket", sa.JSON(), nullable=False),
    )
    op.create_index("ix_rollout_evidence_series_second", "rollout_evidence",
                    ["series", "shadow", "second"])
    op.create_index("ix_rollout_evidence_second", "rollout_evidence", ["second"])


def downgrade() -> None:
    op.drop_index("ix_rollout_evidence_second", table_name="rollout_evidence")
    op.drop_index("ix_rollout_evidence_series_second", table_name="rollout_evidence")
    op.drop_table("rollout_evidence")
