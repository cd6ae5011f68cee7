"""volume names: which user holds each named volume's name, cluster-wide

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

A plain ``create_table``: the same operation on SQLite and PostgreSQL. Existing
volumes are claimed by their owner label when a gate starts (seed_volume_claims).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "volume_names",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_volume_names")),
    )


def downgrade() -> None:
    op.drop_table("volume_names")
