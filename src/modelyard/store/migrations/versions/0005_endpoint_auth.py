"""Endpoints carry an auth mode for the data plane (public, key, jwt).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("auth", sa.String(16), nullable=False,
                                   server_default=sa.text("'public'")))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("auth")
