"""Per-key rate limits and daily quotas, with usage kept per day.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rate_per_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("daily_quota", sa.BigInteger(), nullable=True))
    op.create_table(
        "key_usage",
        sa.Column("prefix", sa.String(32), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_usage")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("daily_quota")
        batch.drop_column("rate_per_s")
