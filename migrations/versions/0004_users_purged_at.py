"""users: purged_at, when an admin last purged the user

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

A nullable column added: the same operation on SQLite and PostgreSQL (SQLite adds a
column without rebuilding the table). Gates cut a user's requests in progress when
they see it change (``dockergate purge``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("purged_at")
