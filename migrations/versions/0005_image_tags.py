"""image tags: who named an image they did not build, and which image it was

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

A plain ``create_table``: the same operation on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image_tags",
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("image_id", sa.String(length=80), nullable=False),
        sa.Column("tagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_image_tags")),
    )


def downgrade() -> None:
    op.drop_table("image_tags")
