"""removed objects: who owned what users removed through a gate, and when it lived

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

A plain ``create_table``: the same operation on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "removed_objects",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "object_id", name=op.f("pk_removed_objects")),
    )
    op.create_index(
        op.f("ix_removed_objects_removed"), "removed_objects", ["removed"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_removed_objects_removed"), table_name="removed_objects")
    op.drop_table("removed_objects")
